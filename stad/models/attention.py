"""STADO's mask-guided attention: a per-frame spatial mask that re-weights the features before MOC's branches.

STADO ("Spatio-Temporal Action Detection with Occlusion") puts a small mask head between the per-frame
backbone features and the center/movement/box branches, so that the branches look at the visible parts of
the actors. Written from the issue's description (no published code was used)::

    features (B, K, C, h, w) ──view──▶ (B*K, C, h, w)
        ──conv3x3 (C -> hidden) -> ReLU -> conv1x1 (hidden -> 1)──▶ mask logits (B, K, h, w)
        ──[temporal: replicate-padded conv over the K logits of each location, identity at init]──▶ (B, K, h, w)
        ──sigmoid──▶ M in (0, 1)
    modulated = F * M            ("multiplicative")
              = F * (1 + M)      ("residual": the features are never switched off)

The module works on clips of ``K`` frames of features, so a detector that caches per-frame features (streaming
inference, ``stad.engine.families.tubelet``) applies it per window with no change; without the temporal mixing every
frame's mask depends on that frame only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FORMS = ("multiplicative", "residual")


@dataclass
class AttentionOutputs:
    """Output of :class:`MaskGuidedAttention` for ``B`` clips of ``K`` frames on an ``h x w`` grid.

    Attributes:
        features: ``(B, K, C, h, w)`` modulated features.
        mask_logits: ``(B, K, h, w)`` mask logits (after the temporal mixing when enabled); ``sigmoid`` gives the mask.
    """

    features: torch.Tensor
    mask_logits: torch.Tensor


class MaskGuidedAttention(nn.Module):
    """Predict a spatial mask per frame and modulate the features with it.

    Args:
        in_channels: channels ``C`` of the per-frame features.
        hidden_channels: channels of the mask head's 3x3 conv (default 64).
        form: ``"multiplicative"`` (``F * M``) or ``"residual"`` (``F * (1 + M)``) (default ``"residual"``).
        temporal: mix the mask logits over the ``K`` frames of a clip with a ``temporal_kernel`` conv along time
            (replicate padding; initialised to the identity, so training starts from the per-frame masks).
        temporal_kernel: odd kernel size of that conv in frames (default 3).
        mask_bias_init: initial bias of the last conv, i.e. the initial mask logit everywhere (default 0: M = 0.5).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        hidden_channels: int = 64,
        form: str = "residual",
        temporal: bool = False,
        temporal_kernel: int = 3,
        mask_bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"attention form must be one of {FORMS}, got {form!r}")
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be a positive odd number of frames, got {temporal_kernel}")
        self.form = form
        self.mask_head = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, 1, 1, bias=True),
        )
        nn.init.zeros_(self.mask_head[0].bias)
        nn.init.constant_(self.mask_head[2].bias, float(mask_bias_init))
        self.temporal: nn.Conv1d | None = None
        if temporal:
            self.temporal = nn.Conv1d(1, 1, temporal_kernel, bias=True)
            with torch.no_grad():  # identity: the centre tap 1, the others 0
                self.temporal.weight.zero_()
                self.temporal.weight[0, 0, temporal_kernel // 2] = 1.0
                self.temporal.bias.zero_()

    def mask_logits(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` ``(B, K, C, h, w)`` -> mask logits ``(B, K, h, w)``."""
        if features.dim() != 5:
            raise ValueError(f"features must have shape (B, K, C, h, w), got {tuple(features.shape)}")
        B, K, C, h, w = features.shape  # noqa: N806
        logits = self.mask_head(features.reshape(B * K, C, h, w)).view(B, K, h, w)  # [B, K, h, w]
        if self.temporal is not None:
            pad = self.temporal.kernel_size[0] // 2
            series = logits.permute(0, 2, 3, 1).reshape(B * h * w, 1, K)  # [B*h*w, 1, K]: one series per location
            series = F.pad(series, (pad, pad), mode="replicate") if pad else series
            mixed = self.temporal(series)  # [B*h*w, 1, K]
            logits = mixed.view(B, h, w, K).permute(0, 3, 1, 2)  # [B, K, h, w]
        return logits

    def forward(self, features: torch.Tensor) -> AttentionOutputs:
        """``features`` ``(B, K, C, h, w)`` -> :class:`AttentionOutputs` (modulated features and mask logits)."""
        logits = self.mask_logits(features)  # [B, K, h, w]
        mask = torch.sigmoid(logits).unsqueeze(2).to(features.dtype)  # [B, K, 1, h, w]
        modulated = features * mask if self.form == "multiplicative" else features * (1.0 + mask)
        return AttentionOutputs(features=modulated, mask_logits=logits)
