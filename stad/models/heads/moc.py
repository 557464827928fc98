"""MOC's three branches on K frames of stride-4 features ("Actions as Moving Points", Li et al., ECCV 2020).

Branch layout read from MOC-Detector's published ``src/network/branch.py`` (written anew here):

* center: ``concat_K(features) -> conv3x3 (K*C -> head_conv) -> ReLU -> conv1x1 -> num_classes`` logits of
  the middle frame's box centres (bias init -2.19, i.e. prior 0.1);
* movement: ``concat_K -> conv3x3 -> ReLU -> conv1x1 -> 2K``: for frame ``i`` channels ``2i, 2i+1`` are the
  ``(dx, dy)`` from the centre location to frame ``i``'s box centre (feature-map units);
* box: per frame with shared weights ``conv3x3 (C -> wh_head_conv) -> ReLU -> conv1x1 -> 2`` = ``(w, h)``;
  stacked over frames as ``2K`` channels ``w_0, h_0, w_1, h_1, ...``.

The center and movement branches read the same input, so their 3x3 convs run as one fused convolution;
the box branch runs once on all ``B*K`` frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HEATMAP_BIAS_INIT = -2.19  # CenterNet/MOC: sigmoid(-2.19) ~= 0.1


@dataclass
class MOCOutputs:
    """Raw outputs of the MOC head for ``B`` clips of ``K`` frames on an ``h x w`` stride-4 grid.

    Attributes:
        heatmap: ``(B, C, h, w)`` centre logits (before sigmoid).
        movement: ``(B, 2K, h, w)`` offsets ``dx_i, dy_i`` of frame ``i``'s centre from the grid location.
        wh: ``(B, 2K, h, w)`` box sizes ``w_i, h_i`` of frame ``i`` (feature-map units), read at frame
            ``i``'s own centre location.
    """

    heatmap: torch.Tensor
    movement: torch.Tensor
    wh: torch.Tensor


def _branch(in_channels: int, mid_channels: int, out_channels: int) -> nn.Sequential:
    branch = nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=True),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, out_channels, 1, bias=True),
    )
    nn.init.zeros_(branch[0].bias)
    nn.init.zeros_(branch[2].bias)
    return branch


class MOCHead(nn.Module):
    """Center, movement and box branches over ``K`` frames of features.

    Args:
        in_channels: channels ``C`` of the per-frame stride-4 features (64 for ResNet-18 / DLA-34).
        num_classes: number of action classes (no background).
        K: frames per tubelet.
        head_conv: hidden channels of the center and movement branches (default 256).
        wh_head_conv: hidden channels of the box branch (default 64: MOC uses 64 for ResNet, 256 for DLA).
    """

    def __init__(self, *, in_channels: int, num_classes: int, K: int, head_conv: int = 256, wh_head_conv: int = 64) -> None:  # noqa: N803
        super().__init__()
        self.K = K
        self.num_classes = num_classes
        self.center = _branch(K * in_channels, head_conv, num_classes)
        nn.init.constant_(self.center[2].bias, HEATMAP_BIAS_INIT)
        self.movement = _branch(K * in_channels, head_conv, 2 * K)
        self.box = _branch(in_channels, wh_head_conv, 2)

    def forward(self, features: torch.Tensor) -> MOCOutputs:
        """``features`` ``(B, K, C, h, w)`` -> :class:`MOCOutputs`."""
        B, K, C, h, w = features.shape  # noqa: N806
        if K != self.K:
            raise ValueError(f"MOCHead built for K={self.K} frames, got features of shape {tuple(features.shape)}")
        stacked = features.reshape(B, K * C, h, w)  # [B, K*C, h, w], frame-major channels
        # Fused 3x3 conv of the center and movement branches: one call, split afterwards.
        weight = torch.cat((self.center[0].weight, self.movement[0].weight), dim=0)  # [2*head_conv, K*C, 3, 3]
        bias = torch.cat((self.center[0].bias, self.movement[0].bias), dim=0)
        hidden = F.relu(F.conv2d(stacked, weight, bias, padding=1))  # [B, 2*head_conv, h, w]
        hidden_center, hidden_movement = hidden.split([self.center[0].out_channels, self.movement[0].out_channels], dim=1)
        heatmap = self.center[2](hidden_center)  # [B, C, h, w]
        movement = self.movement[2](hidden_movement)  # [B, 2K, h, w]
        wh = self.box(features.reshape(B * K, C, h, w))  # [B*K, 2, h, w]
        wh = wh.reshape(B, K * 2, h, w)  # [B, 2K, h, w]: w_0, h_0, w_1, h_1, ...
        return MOCOutputs(heatmap=heatmap, movement=movement, wh=wh)
