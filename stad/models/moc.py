"""The MOC tubelet detector ("Actions as Moving Points", Li et al., ECCV 2020).

Flow for ``B`` clips of ``K`` frames ``(B, K, 3, H, W)``::

    frames (B*K, 3, H, W) ──backbone (timm ResNet-18 / DLA-34, shared over frames)──▶ multi-scale maps
        ──neck (deconv / DLA-Up + IDA-Up, optional DCNv2)──▶ (B*K, 64, H/4, W/4) ──view──▶ (B, K, 64, h, w)
        ──MOCHead──▶ center (B, C, h, w), movement (B, 2K, h, w), wh (B, 2K, h, w)
    training : build_moc_targets (no_grad) + moc_losses  ──▶ {"loss", "loss_hm", "loss_mov", "loss_wh"}
    inference: decode_moc (peaks, top-N) + to_tubelets    ──▶ list[Tubelets], boxes in original pixels

``forward`` and ``detect`` share :meth:`MOCDetector._head_outputs`. For streaming inference the per-frame
features are computed once with :meth:`MOCDetector.frame_features` and reused by every window containing the
frame through :meth:`MOCDetector.detect_from_features`.

Batch keys (from ``stad.data.datasets``): ``"clip"`` ``(B, K, 3, H, W)`` float (already normalised),
``"boxes"`` ``(B, N, K, 4)`` float input pixels ``x1, y1, x2, y2`` (padded), ``"mask"`` (or ``"valid"`` /
``"box_mask"``) ``(B, N)`` bool, ``"labels"`` ``(B, N)`` long; for :meth:`MOCDetector.detect` also ``"start"``
``(B,)``, ``"orig_size"`` ``(B, 2)`` = ``(H0, W0)`` and optionally ``"affine"`` ``(B, 4)``.
``"visibility"`` is not used by MOC (occluded boxes stay targets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stad.errors import StadError
from stad.models.backbones import DeconvNeck, DLAUpNeck, dla34, resnet18
from stad.models.checkpoints import load_moc_weights
from stad.models.decode import decode_moc, to_tubelets
from stad.models.heads.moc import MOCHead, MOCOutputs
from stad.models.losses import moc_losses
from stad.models.matching import build_moc_targets
from stad.structures import Tubelets

VALID_KEYS = ("mask", "valid", "box_mask")  # names of the (B, N) bool "real actor" mask, first found wins


@dataclass
class ClipMeta:
    """Where a clip comes from, to place its tubelets in the video.

    Attributes:
        start: first frame of the clip (from 1).
        orig_size: ``(H0, W0)`` of the video in pixels; ``None`` leaves boxes in network-input pixels.
        affine: optional ``[ax, bx, ay, by]`` with ``x_in = ax * x0 + bx`` (``stad.data.transforms``); when
            ``None`` the input is taken to be a plain resize of the video (MOC's rule).
    """

    start: int = 1
    orig_size: tuple[int, int] | None = None
    affine: tuple[float, float, float, float] | None = None


def metas_from_batch(batch: Mapping[str, Any]) -> list[ClipMeta]:
    """:class:`ClipMeta` per clip from a collated batch's ``"start"`` ``(B,)``, ``"orig_size"`` ``(B, 2)``
    and, if present, ``"affine"`` ``(B, 4)``."""
    for key in ("start", "orig_size"):
        if key not in batch:
            raise StadError(f"batch has no {key!r} entry, needed to place tubelets in the video (keys: {sorted(batch)})")
    starts = torch.as_tensor(batch["start"]).reshape(-1).tolist()
    sizes = torch.as_tensor(batch["orig_size"]).reshape(-1, 2).tolist()
    if len(starts) != len(sizes):
        raise StadError(f"batch 'start' has {len(starts)} entries but 'orig_size' has {len(sizes)}")
    affines = torch.as_tensor(batch["affine"]).reshape(-1, 4).tolist() if "affine" in batch else [None] * len(starts)
    if len(affines) != len(starts):
        raise StadError(f"batch 'start' has {len(starts)} entries but 'affine' has {len(affines)}")
    return [
        ClipMeta(start=int(s), orig_size=(int(hw[0]), int(hw[1])), affine=None if a is None else tuple(a))
        for s, hw, a in zip(starts, sizes, affines)
    ]


class MOCDetector(nn.Module):
    """MOC: per-frame backbone + neck, K-frame center/movement/box branches.

    Args:
        backbone: module with ``forward_features(x (N, 3, H, W)) -> list[Tensor]`` (e.g. :func:`resnet18`).
        neck: module mapping that list to ``(N, C, H/stride, W/stride)`` with ``out_channels`` and ``stride``.
        head: :class:`MOCHead` with matching ``K`` and ``num_classes``.
        num_classes: number of action classes (no background).
        K: frames per tubelet.
        # losses
        hm_weight: heat-map loss weight (default 1).
        mov_weight: movement loss weight (default 1).
        wh_weight: box-size loss weight (default 0.1).
        # inference
        top_n: tubelets kept per clip (default 100).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        neck: nn.Module,
        head: MOCHead,
        num_classes: int,
        K: int = 7,  # noqa: N803
        hm_weight: float = 1.0,
        mov_weight: float = 1.0,
        wh_weight: float = 0.1,
        top_n: int = 100,
    ) -> None:
        super().__init__()
        if head.K != K or head.num_classes != num_classes:
            raise ValueError(f"head built for K={head.K}, {head.num_classes} classes; detector has K={K}, {num_classes} classes")
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.num_classes = num_classes
        self.K = K
        self.stride = int(getattr(neck, "stride", 4))
        self.loss_weights = {"hm_weight": hm_weight, "mov_weight": mov_weight, "wh_weight": wh_weight}
        self.top_n = top_n

    # -- shared path ---------------------------------------------------------------------------------
    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame stride-4 features: ``frames`` ``(T, 3, H, W)`` -> ``(T, C, H/4, W/4)``."""
        return self.neck(self.backbone.forward_features(frames))

    def clip_features(self, clip: torch.Tensor) -> torch.Tensor:
        """``clip`` ``(B, K, 3, H, W)`` -> per-frame features ``(B, K, C, h, w)`` (backbone run once on all ``B*K`` frames)."""
        if clip.dim() != 5 or clip.shape[1] != self.K:
            raise ValueError(f"clip must have shape (B, K={self.K}, 3, H, W), got {tuple(clip.shape)}")
        B, K = clip.shape[:2]  # noqa: N806
        feats = self.frame_features(clip.flatten(0, 1))  # [B*K, C, h, w]
        return feats.view(B, K, *feats.shape[1:])  # [B, K, C, h, w]

    def _head_outputs(self, clip: torch.Tensor) -> MOCOutputs:
        """``clip`` ``(B, K, 3, H, W)`` -> :class:`MOCOutputs`."""
        return self.head(self.clip_features(clip))

    # -- training ------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses of a batch: ``{"loss": weighted total, "loss_hm", "loss_mov", "loss_wh"}``."""
        return self.losses_from_outputs(batch, self._head_outputs(batch["clip"]))

    def losses_from_outputs(self, batch: Mapping[str, torch.Tensor], outputs: MOCOutputs) -> dict[str, torch.Tensor]:
        """MOC losses of head ``outputs`` against the batch's boxes (used by :meth:`forward` and subclasses)."""
        clip = batch["clip"]
        valid = next((batch[k] for k in VALID_KEYS if k in batch), None)
        if valid is None:
            raise StadError(f"batch has none of {list(VALID_KEYS)} to mark real actors (keys: {sorted(batch)})")
        targets = build_moc_targets(
            boxes=batch["boxes"],
            labels=batch["labels"],
            valid=valid,
            num_classes=self.num_classes,
            input_size=(clip.shape[-2], clip.shape[-1]),
            output_size=(outputs.heatmap.shape[-2], outputs.heatmap.shape[-1]),
        )
        return moc_losses(outputs, targets, **self.loss_weights)

    # -- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def detect_from_features(
        self, features: torch.Tensor, metas: Sequence[ClipMeta] | None = None, flip_features: torch.Tensor | None = None
    ) -> list[Tubelets]:
        """Tubelets from precomputed per-frame features ``(B, K, C, h, w)`` (see :meth:`frame_features`).

        Args:
            features: ``(B, K, C, h, w)``.
            metas: one :class:`ClipMeta` per clip (default: start 1, boxes in input pixels).
            flip_features: optional features of the horizontally mirrored frames, same shape: flip testing as
                MOC's ``--flip_test`` (heat-map probabilities and sizes averaged with the mirrored-back
                prediction; movement from the unflipped frames only).

        Returns:
            ``B`` :class:`Tubelets` with ``top_n`` rows each, boxes ``(N, K, 4)`` in original pixels.
        """
        outputs = self.head(features)
        flipped = self.head(flip_features) if flip_features is not None else None
        return self._tubelets(outputs, metas, batch_size=features.shape[0], flipped=flipped)

    @torch.no_grad()
    def detect(self, batch: Mapping[str, Any] | torch.Tensor, metas: Sequence[ClipMeta] | None = None) -> list[Tubelets]:
        """Tubelets of a batch (a dict with ``"clip"``, or the clip tensor ``(B, K, 3, H, W)`` itself).

        ``metas`` default: read from the batch's ``"start"`` and ``"orig_size"`` when it is a dict, else
        start 1 with boxes in input pixels. Call ``model.eval()`` first (batch norm).
        """
        if isinstance(batch, torch.Tensor):
            clip = batch
        else:
            clip = batch["clip"]
            if metas is None:
                metas = metas_from_batch(batch)
        return self._tubelets(self._head_outputs(clip), metas, batch_size=clip.shape[0])

    def _tubelets(
        self, outputs: MOCOutputs, metas: Sequence[ClipMeta] | None, *, batch_size: int, flipped: MOCOutputs | None = None
    ) -> list[Tubelets]:
        metas = list(metas) if metas is not None else [ClipMeta() for _ in range(batch_size)]
        if len(metas) != batch_size:
            raise ValueError(f"got {len(metas)} clip metas for {batch_size} clips")
        heat = torch.sigmoid(outputs.heatmap.float())  # [B, C, h, w]
        wh = outputs.wh
        if flipped is not None:
            heat = (heat + torch.sigmoid(flipped.heatmap.float()).flip(-1)) / 2
            wh = (wh + flipped.wh.flip(-1)) / 2
        decoded = decode_moc(heat, outputs.movement, wh, top_n=self.top_n)
        return to_tubelets(
            decoded,
            starts=[m.start for m in metas],
            original_sizes=[m.orig_size for m in metas],
            affines=[m.affine for m in metas],
            stride=self.stride,
        )


# ---------------------------------------------------------------------------------------------------
# Builders

_OPTIONS: dict[str, Any] = {
    "K": 7,
    "head_conv": 256,
    "wh_head_conv": None,  # MOC: 64 for resnet18, 256 for dla34
    "deformable": True,
    "in_chans": 3,
    "hm_weight": 1.0,
    "mov_weight": 1.0,
    "wh_weight": 0.1,
    "top_n": 100,
    "backbone_weights": None,
    "width": 1.0,
}
BACKBONES = ("resnet18", "dla34")


def build_moc(cfg: Any) -> MOCDetector:
    """Build a :class:`MOCDetector` from a ``ModelConfig``-like object.

    ``cfg`` needs ``backbone`` (``resnet18`` or ``dla34``), ``num_classes`` and ``options`` (dict); keys of
    ``options`` (defaults): ``K`` (7), ``head_conv`` (256), ``wh_head_conv`` (64 for resnet18, 256 for dla34),
    ``deformable`` (True), ``in_chans`` (3; ``3 * flow_frames`` for flow), ``hm_weight`` (1), ``mov_weight`` (1),
    ``wh_weight`` (0.1), ``top_n`` (100), ``backbone_weights`` (path of an ImageNet file, or None),
    ``width`` (1.0: channel multiplier of the ResNet-18 body and its neck; 0.25 for the bundled demo model).
    If ``cfg.weights`` is set, those weights are loaded with :func:`stad.models.checkpoints.load_moc_weights`.
    """
    options = dict(getattr(cfg, "options", None) or {})
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise StadError(f"unknown MOC option(s) {unknown}; valid options: {sorted(_OPTIONS)}")
    opt = {**_OPTIONS, **options}
    name = cfg.backbone
    if name not in BACKBONES:
        raise StadError(f"MOC backbone must be one of {list(BACKBONES)}, got {name!r}")
    K, num_classes = int(opt["K"]), int(cfg.num_classes)  # noqa: N806
    if name == "resnet18":
        width = float(opt["width"])
        backbone = resnet18(in_chans=int(opt["in_chans"]), weights=opt["backbone_weights"], width=width)
        filters = tuple(max(8, int(round(c * width))) for c in (256, 128, 64))
        neck: nn.Module = DeconvNeck(backbone.channels[-1], filters=filters, deformable=bool(opt["deformable"]))
        wh_head_conv = 64
    else:
        if float(opt["width"]) != 1.0:
            raise StadError("option 'width' applies to the resnet18 backbone only")
        backbone = dla34(in_chans=int(opt["in_chans"]), weights=opt["backbone_weights"])
        neck = DLAUpNeck(backbone.channels, backbone.strides, deformable=bool(opt["deformable"]))
        wh_head_conv = int(opt["head_conv"])
    if opt["wh_head_conv"] is not None:
        wh_head_conv = int(opt["wh_head_conv"])
    head = MOCHead(
        in_channels=neck.out_channels, num_classes=num_classes, K=K, head_conv=int(opt["head_conv"]), wh_head_conv=wh_head_conv
    )
    model = MOCDetector(
        backbone=backbone,
        neck=neck,
        head=head,
        num_classes=num_classes,
        K=K,
        hm_weight=float(opt["hm_weight"]),
        mov_weight=float(opt["mov_weight"]),
        wh_weight=float(opt["wh_weight"]),
        top_n=int(opt["top_n"]),
    )
    weights = getattr(cfg, "weights", None)
    if weights:
        load_moc_weights(model, weights, arch="resnet_18" if name == "resnet18" else "dla_34")
    return model


build = build_moc
