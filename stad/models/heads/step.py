"""STEP's context net and two-branch tubelet head (Yang et al., "STEP: Spatio-Temporal Progressive Learning for
Video Action Detection", CVPR 2019), written anew from ``shared/methods/STEP.md`` §3 (no code was copied).

Sizes at the paper's setting (``/8`` CPU setting in brackets); ``N`` tubelets of ``K`` feature frames, ROI
``P x P`` (7)::

    ContextNet: map [B, 832 (104), T', h, w]
        ↓ max pool 1x3x3 / 1,2,2 (TF "SAME" zero padding, ceil mode)
        ↓ Mixed_5b + Mixed_5c                                   [B, 1024 (128), T', ⌈h/2⌉, ⌈w/2⌉]
        ↓ mean over space                                       [B, 1024 (128), T']

    TwoBranchHead: ROI features [N, 832, K, P, P], context [N, 1024, K]
      global branch
        ↓ i3d_conv (Mixed_5b + Mixed_5c)                        [N, 1024, K, P, P]
        ↓ downsample Conv3d 1x1x1 -> fc_dim (256 (16))          [N, 256, K, P, P]   = d
        ↓ per frame flatten (c, y, x) ++ context                 [N, 256·P² + 1024, K, 1, 1]
        ↓ Dropout -> global_cls Conv3d 1x1x1 -> mean over K       logits [N, C]
      local branch (not built with cls_only=True)
        ↓ concat(ROI features, d) per frame                     [N·K, 832 + 256, P, P]
        ↓ local_conv: BottleneckResample(-> 1024, mid 256) + 2 x Bottleneck(1024, mid 256)
        ↓ downsample2 Conv2d 1x1 -> fc_dim -> Dropout -> flatten [N, K, 256·P²]  = local_feat
        ↓ local_reg Linear -> 4                                  local_loc [N, K, 4]
        ↓ neighbor_reg1 / neighbor_reg2 on the first / last chunk (frames 3j..3j+2):
          first_loc = local_loc[first chunk] + neighbor_reg1(local_feat[first chunk])   [N, 3, 4]
          last_loc  = local_loc[last chunk]  + neighbor_reg2(local_feat[last chunk])    [N, 3, 4]

Module names follow STEP's released ``det_net{k}`` keys (``i3d_conv``, ``downsample``, ``global_cls``,
``local_conv.{0,1,2}.conv{1..4}``, ``downsample2``, ``local_reg``, ``neighbor_reg{1,2}``), so the release
weights map one to one; the flatten order (channel, y, x) then the context keeps their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stad.models.backbones.i3d import MaxPool3dSame


class ContextNet(nn.Module):
    """Whole-frame context vector per feature frame: TF-padded max pool, Mixed_5b/5c, global spatial mean.

    Args:
        mixed5: a ``stad.models.backbones.i3d.mixed5`` module (with ``out_channels``).

    Shapes: ``[B, C_in, T', h, w] -> [B, out_channels, T']``.
    """

    def __init__(self, mixed5: nn.Module) -> None:
        super().__init__()
        self.pool = MaxPool3dSame((1, 3, 3), (1, 2, 2))  # zero pad 0 before / 1 after in H, W; ceil mode
        self.i3d_conv = mixed5
        self.out_channels = int(mixed5.out_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.pool(features)  # [B, C_in, T', ⌈h/2⌉, ⌈w/2⌉]
        x = self.i3d_conv(x)  # [B, C_out, T', ⌈h/2⌉, ⌈w/2⌉]
        return x.mean(dim=(3, 4))  # [B, C_out, T']


class BottleneckResample(nn.Module):
    """2-D bottleneck with a projected residual, bias-free, no norm:
    ``relu(conv1(x) + conv4(relu(conv3(relu(conv2(x))))))`` with ``conv1``, ``conv2``, ``conv4`` 1x1 and ``conv3`` 3x3.

    Shapes: ``[N, in_channels, P, P] -> [N, out_channels, P, P]``.
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.conv3 = nn.Conv2d(mid_channels, mid_channels, 3, padding=1, bias=False)
        self.conv4 = nn.Conv2d(mid_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1(x) + self.conv4(F.relu(self.conv3(F.relu(self.conv2(x))))))


class Bottleneck(nn.Module):
    """2-D bottleneck with an identity residual, bias-free, no norm:
    ``relu(x + conv3(relu(conv2(relu(conv1(x))))))`` with ``conv1``, ``conv3`` 1x1 and ``conv2`` 3x3.

    Shapes: ``[N, channels, P, P] -> [N, channels, P, P]``.
    """

    def __init__(self, channels: int, mid_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, mid_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(mid_channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))))


@dataclass
class STEPHeadOutputs:
    """Outputs of :class:`TwoBranchHead` for ``N`` tubelets of ``K`` frames.

    Attributes:
        logits: ``[N, C]`` multi-label action logits (sigmoid -> probabilities).
        local_loc: ``[N, K, 4]`` box deltas of every frame w.r.t. the input tubelet, or None (``cls_only``).
        first_loc: ``[N, 3, 4]`` deltas of the previous second, frame ``j`` w.r.t. input frame ``j`` of the first
            chunk, or None.
        last_loc: ``[N, 3, 4]`` deltas of the next second w.r.t. the last chunk's input frames, or None.
    """

    logits: torch.Tensor
    local_loc: torch.Tensor | None = None
    first_loc: torch.Tensor | None = None
    last_loc: torch.Tensor | None = None


def xavier_init_(module: nn.Module) -> None:
    """STEP's ``weights_init``: Xavier-normal weights and zero biases of every conv / linear layer in ``module``."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class TwoBranchHead(nn.Module):
    """STEP's two-branch head (``TwoBranchNet``): global classification + per-frame local regression.

    Args:
        mixed5: this head's own ``mixed5`` copy (``i3d_conv``), input ``in_channels``, with ``out_channels``.
        in_channels: channels of the ROI features (832; 104 at ``/8``).
        context_channels: channels of the context vector (1024; 128 at ``/8``).
        num_classes: action classes (no background).
        # sizes
        fc_dim: width of ``downsample`` / ``downsample2`` (default 256).
        pool_size: ROI cells per side ``P`` (default 7).
        mid_channels: bottleneck middle width (default 256).
        local_channels: bottleneck output width (default 1024).
        dropout: dropout before ``global_cls`` and after ``downsample2`` (default 0.3).
        cls_only: build the global branch only (classification pre-training, default False).

    Forward: ``roi_features [N, in_channels, K, P, P]``, ``context [N, context_channels, K]`` ->
    :class:`STEPHeadOutputs`. ``K`` must be a multiple of 3 (chunks of 3 frames) unless ``cls_only``.
    """

    def __init__(
        self,
        *,
        mixed5: nn.Module,
        in_channels: int,
        context_channels: int,
        num_classes: int,
        fc_dim: int = 256,
        pool_size: int = 7,
        mid_channels: int = 256,
        local_channels: int = 1024,
        dropout: float = 0.3,
        cls_only: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.pool_size = pool_size
        self.fc_dim = fc_dim
        self.cls_only = cls_only
        flat = fc_dim * pool_size * pool_size
        self.i3d_conv = mixed5
        self.downsample = nn.Conv3d(int(mixed5.out_channels), fc_dim, 1, bias=True)
        self.global_dropout = nn.Dropout(dropout)
        self.global_cls = nn.Conv3d(flat + context_channels, num_classes, 1, bias=True)
        init_parts: list[nn.Module] = [self.downsample, self.global_cls]
        if not cls_only:
            self.local_conv = nn.Sequential(
                BottleneckResample(in_channels + fc_dim, local_channels, mid_channels),
                Bottleneck(local_channels, mid_channels),
                Bottleneck(local_channels, mid_channels),
            )
            self.downsample2 = nn.Conv2d(local_channels, fc_dim, 1, bias=True)
            self.local_dropout = nn.Dropout(dropout)
            self.local_reg = nn.Linear(flat, 4)
            self.neighbor_reg1 = nn.Linear(flat, 4)
            self.neighbor_reg2 = nn.Linear(flat, 4)
            init_parts += [self.local_conv, self.downsample2, self.local_reg, self.neighbor_reg1, self.neighbor_reg2]
        for part in init_parts:
            xavier_init_(part)

    def reset_global_cls(self) -> None:
        """Re-initialise ``global_cls`` (Xavier-normal weight, zero bias), as STEP does after loading ``det_net0``."""
        xavier_init_(self.global_cls)

    def forward(self, roi_features: torch.Tensor, context: torch.Tensor) -> STEPHeadOutputs:
        N, _, K, P, _ = roi_features.shape  # noqa: N806
        g = self.i3d_conv(roi_features)  # [N, 1024, K, P, P]
        d = self.downsample(g)  # [N, fc, K, P, P]
        flat = d.transpose(1, 2).reshape(N, K, -1)  # [N, K, fc*P*P], (c, y, x) per frame
        global_in = torch.cat((flat, context.transpose(1, 2)), dim=2)  # [N, K, fc*P*P + ctx]
        global_in = global_in.transpose(1, 2)[..., None, None]  # [N, fc*P*P + ctx, K, 1, 1]
        logits = self.global_cls(self.global_dropout(global_in))  # [N, C, K, 1, 1]
        logits = logits.flatten(2).mean(dim=2)  # [N, C]
        if self.cls_only:
            return STEPHeadOutputs(logits=logits)
        if K % 3:
            raise ValueError(f"the local branch needs tubelets of 3*chunks frames, got K={K}")
        local_in = torch.cat((roi_features, d), dim=1)  # [N, C_in + fc, K, P, P]
        local_in = local_in.transpose(1, 2).reshape(N * K, -1, P, P)  # [N*K, C_in + fc, P, P]
        local = self.downsample2(self.local_conv(local_in))  # [N*K, fc, P, P]
        local_feat = self.local_dropout(local).reshape(N, K, -1)  # [N, K, fc*P*P]
        local_loc = self.local_reg(local_feat)  # [N, K, 4]
        first, last = slice(0, 3), slice(K - 3, K)  # the first and last chunk (centre frames 1 and K-2)
        first_loc = local_loc[:, first] + self.neighbor_reg1(local_feat[:, first])  # [N, 3, 4]
        last_loc = local_loc[:, last] + self.neighbor_reg2(local_feat[:, last])  # [N, 3, 4]
        return STEPHeadOutputs(logits=logits, local_loc=local_loc, first_loc=first_loc, last_loc=last_loc)
