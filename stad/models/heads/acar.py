"""ACAR-Net's HR2O head (Pan et al., "Actor-Context-Actor Relation Network for Spatio-Temporal Action
Localization", CVPR 2021), the reference FBIL replaced; written anew from ``shared/methods/FBIL.md`` §4
"ACAR-Net reference" (no code was copied). Same interface as :class:`stad.models.heads.fbil.FBILHead`.

Sizes at ACAR's setting (``D = reduce_dim`` 1024, ``H = hidden_dim`` 512), ``R`` actors, ``n`` of one clip::

    pathways [B, C_p, T_p, h, w] ─mean over T, concat─▶ conv_reduce 1x1 (no bias) ─▶ F [B, D, h, w]
      └─ RoIAlign 7x7 + max-pool ─▶ actor vectors A [R, D]
    per actor: cat(F of its clip, A tiled over h x w)                 [R, 2D, h, w]
        ↓ conv1 1x1 -> ReLU -> conv2 3x3 (no padding) -> ReLU          [R, H, h-2, w-2]
        ↓ max-pool 3 / stride 2 / pad 1                                 [R, H, h', w']
        ↓ depth x HR2O_NL (attention between the actors of one clip at each cell)
        ↓ mean over cells                                               ctx [R, H]
    logits = fc2(cat(ReLU(fc1(A)), ctx))                                [R, num_classes]

The context is the whole (batch-padded) map of the clip, as in ACAR (no effective-size crop); ``valid_sizes``,
``mask_seeds`` and ``generator`` are accepted for the shared interface and unused. Biases: ``conv1``, ``conv2``,
``fc1``, ``fc2`` have them, the HR2O convolutions do not (our choice; FBIL.md does not state them, and no ACAR
checkpoint layout is claimed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stad.models.heads.fbil import check_rois, check_valid_sizes, pool_pathways, roi_actor_vectors


class HR2ONonLocal(nn.Module):
    """One HR2O_NL block: attention among the actors of a clip at every spatial cell, then a residual update.

    ``q, k, v`` are 3x3 convolutions; at cell ``(y, x)`` actor ``i`` attends to actor ``j`` of the same clip
    with weight ``softmax_j(q_i · k_j / sqrt(dim))``; the aggregated values go through
    GroupNorm(1) -> ReLU -> conv (1x1 if ``mlp_1x1`` else 3x3) -> Dropout and are added to the input.

    Args:
        dim: channels (512).
        mlp_1x1: 1x1 output conv (default True; ACAR's R101 setting).
        dropout: (default 0.2).

    Shapes: ``x [R, dim, h, w]``, ``same_clip [R, R]`` bool -> ``[R, dim, h, w]``.
    """

    def __init__(self, dim: int, *, mlp_1x1: bool = True, dropout: float = 0.2) -> None:
        super().__init__()
        self.dim = dim
        self.conv_q = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.conv_k = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.conv_v = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.conv = nn.Conv2d(dim, dim, 1, bias=False) if mlp_1x1 else nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(1, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, same_clip: torch.Tensor) -> torch.Tensor:
        q, k, v = self.conv_q(x), self.conv_k(x), self.conv_v(x)  # [R, dim, h, w] each
        logits = torch.einsum("icyx,jcyx->ijyx", q, k) / math.sqrt(self.dim)  # [R, R, h, w]  query i, key j
        logits = logits.masked_fill(~same_clip[:, :, None, None], float("-inf"))
        attn = logits.softmax(dim=1)  # over the actors j of i's clip (i itself is always there)
        out = torch.einsum("ijyx,jcyx->icyx", attn, v)  # [R, dim, h, w]
        return x + self.dropout(self.conv(F.relu(self.norm(out))))


class ACARHead(nn.Module):
    """ACAR-Net's actor-context-actor relation head (HR2O).

    Args:
        in_channels: channels of the concatenated pathways (2304 for SlowFast-R101 α4 β1/8).
        num_classes: action classes (no background).
        # sizes (defaults: ACAR's R101 setting)
        reduce_dim: width after ``conv_reduce`` (1024).
        hidden_dim: relation width (512).
        depth: HR2O_NL blocks (1; ACAR R50 uses 2).
        mlp_1x1: 1x1 output conv in HR2O_NL (True).
        dropout: HR2O_NL dropout (0.2).
        roi_size: RoIAlign cells per side before the max-pool (7).

    The feature map must be at least 3x3 (``conv2`` has no padding).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        # sizes
        reduce_dim: int = 1024,
        hidden_dim: int = 512,
        depth: int = 1,
        mlp_1x1: bool = True,
        dropout: float = 0.2,
        roi_size: int = 7,
    ) -> None:
        super().__init__()
        self.roi_size = roi_size
        self.conv_reduce = nn.Conv2d(in_channels, reduce_dim, 1, bias=False)
        self.conv1 = nn.Conv2d(2 * reduce_dim, hidden_dim, 1)
        self.conv2 = nn.Conv2d(hidden_dim, hidden_dim, 3)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.hr2o = nn.ModuleList(HR2ONonLocal(hidden_dim, mlp_1x1=mlp_1x1, dropout=dropout) for _ in range(depth))
        self.fc1 = nn.Linear(reduce_dim, hidden_dim)
        self.fc2 = nn.Linear(2 * hidden_dim, num_classes)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        rois: torch.Tensor,
        valid_sizes: torch.Tensor | None = None,
        *,
        mask_seeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``features`` ``[B, C_p, T_p, h, w]`` list, ``rois`` ``(R, 5)`` ``[clip_index, x1, y1, x2, y2]``
        normalised to the padded frame -> logits ``(R, num_classes)``."""
        fmap = self.conv_reduce(pool_pathways(features))  # [B, D, h, w]
        num_clips, dim, h, w = fmap.shape
        if h < 3 or w < 3:
            raise ValueError(f"ACARHead needs a feature map of at least 3x3, got {h}x{w}.")
        clip_index = check_rois(rois, num_clips)  # [R]
        check_valid_sizes(valid_sizes, num_clips, fmap.device)
        actors = roi_actor_vectors(fmap, rois, self.roi_size)  # [R, D]
        actor_feats = F.relu(self.fc1(actors))  # [R, H]
        if rois.shape[0] == 0:
            return self.fc2(torch.cat((actor_feats, actor_feats.new_zeros(actor_feats.shape)), dim=1))  # [0, K]

        x = torch.cat((fmap[clip_index], actors[:, :, None, None].expand(-1, -1, h, w)), dim=1)  # [R, 2D, h, w]
        x = F.relu(self.conv2(F.relu(self.conv1(x))))  # [R, H, h-2, w-2]
        x = self.pool(x)  # [R, H, h', w']
        same_clip = clip_index[:, None] == clip_index[None, :]  # [R, R]
        for block in self.hr2o:
            x = block(x, same_clip)
        context = x.mean(dim=(2, 3))  # [R, H]
        return self.fc2(torch.cat((actor_feats, context), dim=1))  # [R, K]


__all__ = ["ACARHead", "HR2ONonLocal"]
