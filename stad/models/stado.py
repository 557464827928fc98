"""STADO: MOC with a mask-guided attention module between the per-frame features and the branches.

STADO ("Spatio-Temporal Action Detection with Occlusion") takes MOC ("Actions as Moving Points", Li et al.,
ECCV 2020) as its baseline; :class:`STADODetector` subclasses :class:`stad.models.moc.MOCDetector` and only adds
the attention (``stad.models.attention``) and its mask loss::

    clip (B, K, 3, H, W) ──MOC backbone + neck (per frame)──▶ (B, K, C, h, w)
        ──MaskGuidedAttention──▶ modulated (B, K, C, h, w) + mask logits (B, K, h, w)
        ──MOCHead──▶ center / movement / wh                     (MOC's losses and decoding, unchanged)
    training: loss = MOC's loss + mask_weight * BCE(mask logits, batch["visible_mask"])

``batch["visible_mask"]`` ``(B, K, h, w)`` float in [0, 1] is the visible region of the actors on the stride grid
(``TubeletClipDataset(mask_stride=...)``); with ``mask_weight = 0`` the module is trained by the detection
losses alone. Streaming inference reuses per-frame features as for MOC: the attention runs in
:meth:`STADODetector.detect_from_features` on each ``(B, K, C, h, w)`` window.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from stad.data.safe_pickle import safe_torch_load
from stad.errors import StadError
from stad.models.attention import FORMS, MaskGuidedAttention
from stad.models.checkpoints import load_moc_weights, load_state_dict_strict
from stad.models.heads.moc import MOCHead, MOCOutputs
from stad.models.losses import mask_bce_loss
from stad.models.moc import _OPTIONS as MOC_OPTIONS
from stad.models.moc import ClipMeta, MOCDetector, build_moc
from stad.structures import Tubelets

logger = logging.getLogger(__name__)

MASK_TARGET_KEY = "visible_mask"


class STADODetector(MOCDetector):
    """MOC + mask-guided attention.

    Args:
        backbone, neck, head, num_classes, K: as :class:`MOCDetector`.
        attention: :class:`MaskGuidedAttention` on the neck's ``C`` channels.
        # losses
        hm_weight, mov_weight, wh_weight: MOC's loss weights (1, 1, 0.1).
        mask_weight: weight of the mask BCE loss (default 1; 0 trains the attention without supervision).
        # inference
        top_n: tubelets kept per clip (default 100).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        neck: nn.Module,
        head: MOCHead,
        attention: MaskGuidedAttention,
        num_classes: int,
        K: int = 7,  # noqa: N803
        hm_weight: float = 1.0,
        mov_weight: float = 1.0,
        wh_weight: float = 0.1,
        mask_weight: float = 1.0,
        top_n: int = 100,
    ) -> None:
        super().__init__(
            backbone=backbone, neck=neck, head=head, num_classes=num_classes, K=K,
            hm_weight=hm_weight, mov_weight=mov_weight, wh_weight=wh_weight, top_n=top_n,
        )
        if mask_weight < 0:
            raise ValueError(f"mask_weight must be >= 0, got {mask_weight}")
        self.attention = attention
        self.mask_weight = float(mask_weight)

    @property
    def mask_target_stride(self) -> int:
        """Stride of the ``visible_mask`` training targets (the runner adds them to the batches): with
        ``mask_weight > 0`` they supervise the mask, with 0 ``loss_mask`` is only logged, not added."""
        return self.stride

    # -- shared path ---------------------------------------------------------------------------------
    def _attended_outputs(self, clip: torch.Tensor) -> tuple[MOCOutputs, torch.Tensor]:
        """``clip`` ``(B, K, 3, H, W)`` -> (:class:`MOCOutputs`, mask logits ``(B, K, h, w)``)."""
        attended = self.attention(self.clip_features(clip))
        return self.head(attended.features), attended.mask_logits

    def _head_outputs(self, clip: torch.Tensor) -> MOCOutputs:
        return self._attended_outputs(clip)[0]

    # -- training ------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses: ``{"loss", "loss_hm", "loss_mov", "loss_wh", "loss_mask"}``.

        ``loss_mask`` is the BCE against ``batch["visible_mask"]`` ``(B, K, h, w)`` when the batch has it (added
        to ``loss`` with ``mask_weight``), and 0 when it has none (allowed only with ``mask_weight = 0``).
        """
        outputs, mask_logits = self._attended_outputs(batch["clip"])
        losses = self.losses_from_outputs(batch, outputs)
        target = batch.get(MASK_TARGET_KEY)
        if target is None:
            if self.mask_weight > 0:
                raise StadError(
                    f"STADO with mask_weight={self.mask_weight} needs {MASK_TARGET_KEY!r} targets in the batch "
                    f"(TubeletClipDataset(mask_stride={self.stride})); set model.options.mask_weight=0 to train without"
                )
            loss_mask = mask_logits.new_zeros((), dtype=torch.float32)
        else:
            if tuple(target.shape) != tuple(mask_logits.shape):
                raise StadError(
                    f"batch {MASK_TARGET_KEY!r} has shape {tuple(target.shape)}, the mask logits {tuple(mask_logits.shape)} "
                    f"(mask targets must use the model's stride {self.stride})"
                )
            loss_mask = mask_bce_loss(mask_logits, target)
        losses["loss"] = losses["loss"] + self.mask_weight * loss_mask
        losses["loss_mask"] = loss_mask
        return losses

    # -- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def detect_from_features(
        self, features: torch.Tensor, metas: Sequence[ClipMeta] | None = None, flip_features: torch.Tensor | None = None
    ) -> list[Tubelets]:
        """As :meth:`MOCDetector.detect_from_features`, with the attention applied to each ``(B, K, C, h, w)`` window."""
        flipped = None if flip_features is None else self.attention(flip_features).features
        return super().detect_from_features(self.attention(features).features, metas, flip_features=flipped)

    def outputs_from_features(self, features: torch.Tensor) -> MOCOutputs:
        """Head outputs of per-frame features ``(B, K, C, h, w)`` after the attention (used by late fusion,
        :mod:`stad.models.fusion`)."""
        return self.head(self.attention(features).features)

    @torch.no_grad()
    def masks_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted attention masks ``(B, K, h, w)`` in [0, 1] of per-frame features ``(B, K, C, h, w)``."""
        return torch.sigmoid(self.attention.mask_logits(features).float())

    @torch.no_grad()
    def predict_masks(self, clip: torch.Tensor) -> torch.Tensor:
        """Predicted attention masks ``(B, K, h, w)`` in [0, 1] of a clip ``(B, K, 3, H, W)`` (stride-grid cells)."""
        return self.masks_from_features(self.clip_features(clip))


# ---------------------------------------------------------------------------------------------------
# Weights: MOC files load into STADO with the attention left at its initialisation


class _MOCParts(nn.Module):
    """The MOC modules of a STADO model (shared, not copied): its state dict has exactly MOC's keys."""

    def __init__(self, model: STADODetector) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.neck = model.neck
        self.head = model.head


def attention_keys(model: STADODetector) -> list[str]:
    """State-dict keys of the attention module (``attention.*``)."""
    return sorted(k for k in model.state_dict() if k.startswith("attention."))


def load_moc_state_dict(model: STADODetector, state_dict: Mapping[str, torch.Tensor], *, source: str = "state dict") -> list[str]:
    """Load a MOC state dict (stad key layout) into ``model``: strict on every MOC key, attention untouched.

    Returns:
        the attention keys left at their initial values.

    Raises:
        StadError: a missing, unexpected or mis-shaped MOC key (the message names them).
    """
    load_state_dict_strict(_MOCParts(model), dict(state_dict), source=source)
    return attention_keys(model)


def load_stado_weights(model: STADODetector, path: str | Path, *, arch: str) -> tuple[str, list[str]]:
    """Load a weights file into a STADO model.

    A stad checkpoint with ``attention.*`` keys (a STADO run) is loaded strictly as a whole; any MOC file
    (stad MOC checkpoint, MOC release, CenterNet COCO, ImageNet; see :func:`load_moc_weights`) is loaded into the
    MOC modules and the attention keeps its initialisation.

    Returns:
        ``(format, keys left at init)``: format ``"stad"`` / ``"moc_release"`` / ``"centernet_coco"`` / ``"imagenet"``.
    """
    path = Path(path)
    obj = safe_torch_load(path, what="a weights file")  # weights_only=True: a file never runs code
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and any(k.startswith("attention.") for k in obj["model"]):
        load_state_dict_strict(model, obj["model"], source=str(path))
        return "stad", []
    return load_moc_weights(_MOCParts(model), path, arch=arch), attention_keys(model)


# ---------------------------------------------------------------------------------------------------
# Builder

_STADO_OPTIONS: dict[str, Any] = {
    "attention_form": "residual",  # multiplicative | residual
    "temporal": False,  # mix the mask logits over the K frames
    "temporal_kernel": 3,
    "mask_head_conv": 64,  # hidden channels of the mask head
    "mask_weight": 1.0,  # 0 = unsupervised attention
}


def build_stado(cfg: Any) -> STADODetector:
    """Build a :class:`STADODetector` from a ``ModelConfig``-like object.

    ``cfg.options`` takes MOC's options (see :func:`stad.models.moc.build_moc`) plus (defaults):
    ``attention_form`` (``residual``; or ``multiplicative``), ``temporal`` (False), ``temporal_kernel`` (3),
    ``mask_head_conv`` (64), ``mask_weight`` (1.0; 0 = no mask supervision). ``cfg.weights`` may name a STADO
    checkpoint or any MOC weights file (:func:`load_stado_weights`; the attention then stays at its init, logged).
    """
    options = dict(getattr(cfg, "options", None) or {})
    unknown = sorted(set(options) - set(MOC_OPTIONS) - set(_STADO_OPTIONS))
    if unknown:
        raise StadError(f"unknown STADO option(s) {unknown}; valid options: {sorted({*MOC_OPTIONS, *_STADO_OPTIONS})}")
    opt = {**_STADO_OPTIONS, **{k: v for k, v in options.items() if k in _STADO_OPTIONS}}
    if opt["attention_form"] not in FORMS:
        raise StadError(f"model.options.attention_form must be one of {list(FORMS)}, got {opt['attention_form']!r}")
    if float(opt["mask_weight"]) < 0:
        raise StadError(f"model.options.mask_weight must be >= 0, got {opt['mask_weight']}")
    kernel = int(opt["temporal_kernel"])
    if kernel < 1 or kernel % 2 == 0:
        raise StadError(f"model.options.temporal_kernel must be a positive odd number, got {kernel}")
    moc_options = {k: v for k, v in options.items() if k in MOC_OPTIONS}
    moc = build_moc(SimpleNamespace(backbone=cfg.backbone, num_classes=cfg.num_classes, options=moc_options, weights=None))
    attention = MaskGuidedAttention(
        in_channels=moc.neck.out_channels,
        hidden_channels=int(opt["mask_head_conv"]),
        form=str(opt["attention_form"]),
        temporal=bool(opt["temporal"]),
        temporal_kernel=kernel,
    )
    model = STADODetector(
        backbone=moc.backbone,
        neck=moc.neck,
        head=moc.head,
        attention=attention,
        num_classes=moc.num_classes,
        K=moc.K,
        mask_weight=float(opt["mask_weight"]),
        top_n=moc.top_n,
        **moc.loss_weights,
    )
    weights = getattr(cfg, "weights", None)
    if weights:
        fmt, left = load_stado_weights(model, weights, arch="resnet_18" if cfg.backbone == "resnet18" else "dla_34")
        if left:
            logger.warning("%s: loaded %s weights; the attention module keeps its initialisation (%d tensors: %s)",
                           weights, fmt, len(left), ", ".join(left))
    return model


build = build_stado
