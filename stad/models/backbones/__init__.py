"""Per-frame 2D backbones (timm ResNet / DLA) and CenterNet-style upsampling necks.

A backbone exposes ``forward_features(x) -> list[Tensor]`` (multi-scale maps) plus ``channels`` and
``strides`` lists; a neck turns that list into one stride-4 map ``(N, out_channels, H/4, W/4)``.
"""

from stad.models.backbones.dla import DLABackbone, dla34
from stad.models.backbones.neck import DeconvNeck, DLAUpNeck, IDAUp, ModulatedDeformConv2d
from stad.models.backbones.resnet import ResNetBackbone, resnet18

__all__ = [
    "DLABackbone",
    "DLAUpNeck",
    "DeconvNeck",
    "IDAUp",
    "ModulatedDeformConv2d",
    "ResNetBackbone",
    "dla34",
    "resnet18",
]
