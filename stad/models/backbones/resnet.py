"""ResNet per-frame backbone for MOC ("Actions as Moving Points", Li et al., ECCV 2020).

The network body is timm's ``resnet18`` (created with ``pretrained=False``; ImageNet weights load from a
user file in torchvision/timm layout). It returns the stride-32 map C5; the CenterNet deconvolution
neck (:class:`stad.models.backbones.neck.DeconvNeck`) brings it to stride 4.
"""

from __future__ import annotations

from pathlib import Path

import timm

from stad.models.backbones._weights import load_body_weights, read_state_dict_file
from stad.models.backbones.base import TimmFeatureBackbone


class ResNetBackbone(TimmFeatureBackbone):
    """A timm ResNet body returning its last stage.

    Args:
        body: a timm ``features_only`` ResNet with one output (the last stage).

    Attributes:
        channels: ``[C5]`` channels of the returned map (512 for ResNet-18).
        strides: ``[32]``.
    """

    def load_imagenet_weights(self, path: str | Path) -> None:
        """Load a torchvision/timm ImageNet ResNet checkpoint file (the ``fc`` classifier is dropped)."""
        load_body_weights(self.body, read_state_dict_file(path), ignore=("fc.",), first_conv="conv1.weight", source=str(path))


def resnet18(*, in_chans: int = 3, weights: str | Path | None = None, width: float = 1.0) -> ResNetBackbone:
    """ResNet-18 body (timm, ``pretrained=False``), optionally loading ImageNet ``weights`` from a file.

    Args:
        in_chans: input channels (3 for RGB, ``3 * flow_frames`` for stacked flow).
        weights: optional path of an ImageNet checkpoint (e.g. torchvision's ``resnet18-5c106cde.pth``).
        width: channel multiplier of every stage (1.0 = the standard ResNet-18; e.g. 0.25 gives a
            ResNet-18 topology with 16/32/64/128 channels, small enough for CPU training and a bundled checkpoint).
    """
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    kwargs = {}
    if width != 1.0:
        if weights is not None:
            raise ValueError("ImageNet weights exist only for width 1.0")
        kwargs = {"channels": tuple(max(8, int(round(c * width))) for c in (64, 128, 256, 512)),
                  "stem_width": max(8, int(round(64 * width)))}
    body = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(4,), in_chans=in_chans, **kwargs)
    backbone = ResNetBackbone(body)
    if weights is not None:
        backbone.load_imagenet_weights(weights)
    return backbone
