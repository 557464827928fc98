"""DLA-34 per-frame backbone for MOC ("Actions as Moving Points", Li et al., ECCV 2020; DLA: Yu et al., CVPR 2018).

The body is timm's ``dla34`` (``pretrained=False``) returning levels 2..5 (strides 4, 8, 16, 32,
channels 64, 128, 256, 512); the DLA-Up + IDA-Up neck (:class:`stad.models.backbones.neck.DLAUpNeck`)
fuses them to stride 4 as in CenterNet/MOC.
"""

from __future__ import annotations

from pathlib import Path

import timm

from stad.models.backbones._weights import load_body_weights, read_state_dict_file
from stad.models.backbones.base import TimmFeatureBackbone

# The original DLA code (and its ImageNet file dla34-ba72cf86.pth) holds a ``project`` layer in the
# level-2 trees level3/level4 that its forward pass never uses; timm leaves it out.
UNUSED_DLA_KEYS: tuple[str, ...] = ("level3.project.", "level4.project.", "fc.")


class DLABackbone(TimmFeatureBackbone):
    """A timm DLA body returning levels 2..5.

    Args:
        body: a timm ``features_only`` DLA with ``out_indices=(2, 3, 4, 5)``.

    Attributes:
        channels: ``[64, 128, 256, 512]`` for DLA-34.
        strides: ``[4, 8, 16, 32]``.
    """

    def load_imagenet_weights(self, path: str | Path) -> None:
        """Load an ImageNet DLA checkpoint file (original ``dla34-ba72cf86.pth`` or timm layout).

        The classifier and the original code's unused ``level3/level4.project`` layers are dropped.
        """
        load_body_weights(self.body, read_state_dict_file(path), ignore=UNUSED_DLA_KEYS, first_conv="base_layer.0.weight", source=str(path))


def dla34(*, in_chans: int = 3, weights: str | Path | None = None) -> DLABackbone:
    """DLA-34 body (timm, ``pretrained=False``), optionally loading ImageNet ``weights`` from a file."""
    body = timm.create_model("dla34", pretrained=False, features_only=True, out_indices=(2, 3, 4, 5), in_chans=in_chans)
    backbone = DLABackbone(body)
    if weights is not None:
        backbone.load_imagenet_weights(weights)
    return backbone
