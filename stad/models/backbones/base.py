"""The common wrapper of timm ``features_only`` bodies used as per-frame backbones."""

from __future__ import annotations

import torch
from torch import nn


class TimmFeatureBackbone(nn.Module):
    """A timm ``features_only`` body with ``forward_features``, ``channels`` and ``strides``.

    Args:
        body: a timm model created with ``features_only=True``.

    Attributes:
        channels: channels of each returned map.
        strides: stride (input pixels per cell) of each returned map.
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.channels: list[int] = list(body.feature_info.channels())
        self.strides: list[int] = list(body.feature_info.reduction())

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` ``(N, in_chans, H, W)`` -> maps ``(N, channels[i], H/strides[i], W/strides[i])``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)
