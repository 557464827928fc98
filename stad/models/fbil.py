"""FBIL and its parent ACAR-Net: a SlowFast backbone and an actor head that classifies given person boxes at an AVA
keyframe (``shared/methods/FBIL.md``; written anew from those facts, no code copied).

::

    clip [B, T, 3, H, W] (padded batch) ──SlowFast──▶ [slow, fast] ──head(rois)──▶ logits [R, C]
    rois: the batch's boxes (training: ground truth, jittered; testing: proposals, else ground truth) normalised
          to the padded frame, one row [clip, x1, y1, x2, y2] per actor
    head: ``fbil`` (masked foreground/background interaction, :class:`stad.models.heads.fbil.FBILHead`),
          ``acar`` (HR2O, :class:`stad.models.heads.acar.ACARHead`) or ``linear`` (no relation reasoning)
    loss: p = cat(softmax(logits[:, :P]), sigmoid(logits[:, P:])) with P pose classes; BCE(p, targets), the mean
          over R x C; under torchrun scaled by R / (all ranks' R) x world size, so the gradient is the mean over
          every RoI of the global batch (FBIL.md §5)

``model.name: fbil`` defaults to the FBIL head, ``acar`` to HR2O; ``model.options.head`` picks any of the three.
Evaluation writes what FBIL writes: every class for every box, boxes and scores rounded to 3 decimals.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stad.errors import StadError
from stad.structures import KeyframeDetections

HEADS = ("fbil", "acar", "linear")
BACKBONES = ("slowfast_tiny", "slowfast_r50_acar", "slowfast_r101_acar")

FBIL_OPTIONS: dict[str, Any] = {
    "backbone": "slowfast_r101_acar",  # a preset of stad.models.backbones.slowfast
    "backbone_options": {},  # overrides of the preset (e.g. width, depth)
    "backbone_weights": None,  # ACAR-layout (or PySlowFast-layout, see backbone_layout) SlowFast weights
    "backbone_layout": "acar",  # acar | pyslowfast
    "head": None,  # fbil | acar | linear (default: the model name's)
    "head_options": {},  # keyword arguments of the head (sizes, mask fractions, compat_mask_coords, ...)
    "pose_classes": 13,  # the first P classes form one softmax group (AVA: 13 pose classes)
    "jitter": 0.075,  # training box jitter scale (FBIL's neck), 0 = none
    "score_decimals": 3,  # detections rounded as FBIL's CSV (%.3f); null = full precision
    "input_size": None,  # filled by the keyframe family (unused by the model)
}


def mask_seed(video: str, timestamp: int) -> int:
    """The evaluation mask seed of a keyframe (CRC-32 of ``"video,timestamp"``): FBIL's masks are random also at
    evaluation; seeding them per keyframe makes results independent of batching and order."""
    return zlib.crc32(f"{video},{int(timestamp)}".encode())


def apply_jitter(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """FBIL's neck jitter of normalised boxes ``(R, 4)`` by ``offsets`` ``(R, 4)`` (fractions of the box width /
    height), with its clamping: ``x1, x2`` clamped below at 0, ``y1, y2`` above at 1 (FBIL.md §2)."""
    w = (boxes[:, 2] - boxes[:, 0]).unsqueeze(1)
    h = (boxes[:, 3] - boxes[:, 1]).unsqueeze(1)
    moved = boxes + offsets * torch.cat((w, h, w, h), dim=1)
    return torch.stack((moved[:, 0].clamp(min=0), moved[:, 1].clamp(max=1), moved[:, 2].clamp(min=0),
                        moved[:, 3].clamp(max=1)), dim=1)


def pose_probabilities(logits: torch.Tensor, pose_classes: int) -> torch.Tensor:
    """``(R, C)`` scores: softmax over the first ``pose_classes`` logits, sigmoid for the others (FBIL.md §5)."""
    pose = logits[:, :pose_classes].softmax(dim=1)
    return torch.cat((pose, logits[:, pose_classes:].sigmoid()), dim=1).clamp(0.0, 1.0)


class ActorContextDetector(nn.Module):
    """SlowFast + an actor head (FBIL / ACAR-Net / linear) over given boxes.

    Args:
        backbone: a SlowFast module (``out_channels`` attribute; forward ``(B, 3, T, H, W) -> [slow, fast]``).
        head: a head with the interface of :class:`stad.models.heads.fbil.FBILHead`.
        num_classes: ``C``.
        pose_classes: ``P``, the softmax group (0: sigmoids only).
        jitter: training box jitter scale (0: none).
        score_decimals: rounding of the detections (None: none).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, *, num_classes: int, pose_classes: int = 13,
                 jitter: float = 0.075, score_decimals: int | None = 3) -> None:
        super().__init__()
        if not 0 <= pose_classes <= num_classes:
            raise StadError(f"option pose_classes must be in 0..{num_classes}, got {pose_classes}")
        self.backbone = backbone
        self.head = head
        self.num_classes = int(num_classes)
        self.pose_classes = int(pose_classes)
        self.jitter = float(jitter)
        self.score_decimals = score_decimals

    # -- shared ---------------------------------------------------------------------------------------------
    def _features(self, batch: Mapping[str, Any]) -> list[torch.Tensor]:
        clip = batch["clip"]  # [B, T, 3, H, W]
        return self.backbone(clip.permute(0, 2, 1, 3, 4).contiguous())

    @staticmethod
    def _frame_sizes(batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 2)`` unpadded ``(W, H)`` of each clip and ``(B, 2)`` ``[w_frac, h_frac]`` of the padded frame."""
        clip = batch["clip"]
        B, H, W = clip.shape[0], clip.shape[-2], clip.shape[-1]  # noqa: N806
        if "unpadded_size" in batch:
            hw = batch["unpadded_size"].to(clip.device).float()  # [B, 2] (H, W)
            size = torch.stack((hw[:, 1], hw[:, 0]), dim=1)
        else:
            size = clip.new_tensor([W, H]).expand(B, 2)
        return size, size / size.new_tensor([W, H])

    def _rois(self, boxes: torch.Tensor, valid: torch.Tensor, batch: Mapping[str, Any], *, jitter: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RoIs ``(R, 5)`` normalised to the padded frame from input-pixel ``boxes`` ``(B, N, 4)`` where ``valid``;
        also the ``(R,)`` clip and actor indices."""
        clip_index, actor = valid.nonzero(as_tuple=True)
        size, fractions = self._frame_sizes(batch)  # [B, 2] unpadded (W, H)
        scale = size[clip_index].repeat(1, 2)  # [R, 4]
        norm = boxes[clip_index, actor].float() / scale  # normalised to the unpadded frame
        if jitter and self.jitter > 0 and len(norm):
            offsets = (torch.rand(norm.shape, device=norm.device) * 2 - 1) * self.jitter
            norm = apply_jitter(norm, offsets)
        padded = norm * fractions[clip_index].repeat(1, 2)  # normalised to the padded frame
        return torch.cat((clip_index.unsqueeze(1).to(padded.dtype), padded), dim=1), clip_index, actor

    def _logits(self, features: Sequence[torch.Tensor], rois: torch.Tensor, batch: Mapping[str, Any],
                seeds: torch.Tensor | None) -> torch.Tensor:
        _, fractions = self._frame_sizes(batch)
        return self.head(features, rois, fractions, mask_seeds=seeds)

    # -- training -------------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Losses of a batch of keyframe items: ``{"loss", "loss_action"}`` on the ground-truth boxes (jittered)."""
        features = self._features(batch)
        rois, clip_index, actor = self._rois(batch["boxes"], batch["mask"], batch, jitter=True)
        targets = batch["labels"][clip_index, actor].float()  # [R, C]
        logits = self._logits(features, rois, batch, None)
        count = torch.tensor(float(len(rois)), device=logits.device)
        total, world = count, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            total = count.clone()
            torch.distributed.all_reduce(total)
        if len(rois) == 0:  # keep every parameter in the graph (DDP) with a zero gradient
            loss = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        else:
            loss = F.binary_cross_entropy(pose_probabilities(logits, self.pose_classes), targets)
            loss = loss * count / total.clamp(min=1.0) * world
        return {"loss": loss, "loss_action": loss.detach()}

    # -- inference ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, batch: Mapping[str, Any], **_: Any) -> list[list[KeyframeDetections]]:
        """Every class for every box of each clip (``[stage][clip]``, one stage): the batch's ``proposals``
        (``proposal_mask``) when present, else its ground-truth ``boxes`` (``mask``: scoring given boxes). Boxes
        normalised by each clip's unpadded input size; boxes and scores rounded to ``score_decimals``."""
        if "proposals" in batch:
            boxes, valid = batch["proposals"], batch["proposal_mask"]
        else:
            boxes, valid = batch["boxes"], batch["mask"]
        features = self._features(batch)
        rois, clip_index, _ = self._rois(boxes, valid, batch, jitter=False)
        seeds = torch.tensor([mask_seed(v, int(t)) for v, t in zip(batch["video"], batch["timestamp"])],
                             dtype=torch.int64, device=rois.device)
        scores = pose_probabilities(self._logits(features, rois, batch, seeds).float(), self.pose_classes)
        _, fractions = self._frame_sizes(batch)
        norm = (rois[:, 1:] / fractions[clip_index].repeat(1, 2)).clamp(0, 1)  # normalised to the unpadded frame
        if self.score_decimals is not None:
            scores, norm = scores.round(decimals=self.score_decimals), norm.round(decimals=self.score_decimals)
        out = []
        C = self.num_classes  # noqa: N806
        for b in range(batch["clip"].shape[0]):
            rows = (clip_index == b).nonzero().squeeze(1)
            n = len(rows)
            out.append(KeyframeDetections(
                boxes=norm[rows].repeat_interleave(C, dim=0).double().cpu().numpy().reshape(-1, 4),
                labels=np.tile(np.arange(C, dtype=np.int64), n),
                scores=scores[rows].reshape(-1).double().cpu().numpy(),
            ))
        return [out]


def _options(cfg: Any) -> dict[str, Any]:
    options = dict(getattr(cfg, "options", None) or {})
    unknown = sorted(set(options) - set(FBIL_OPTIONS))
    if unknown:
        raise StadError(f"unknown {cfg.name} option(s) {unknown}; valid options: {sorted(FBIL_OPTIONS)}")
    return {**FBIL_OPTIONS, **options}


def build_actor_context(cfg: Any) -> ActorContextDetector:
    """Build FBIL (``model.name: fbil``) or ACAR-Net (``acar``) from a ``ModelConfig``-like object.

    Options (:data:`FBIL_OPTIONS`): ``backbone`` (a SlowFast preset: ``slowfast_r101_acar`` FBIL's, ``slowfast_r50_acar``,
    ``slowfast_tiny`` for the CPU) with ``backbone_options`` overrides and ``backbone_weights`` (ACAR layout, or
    PySlowFast's with ``backbone_layout: pyslowfast``; read without running pickled code); ``head`` (``fbil``,
    ``acar``, ``linear``) with ``head_options``; ``pose_classes``, ``jitter``, ``score_decimals``.
    ``cfg.weights`` (a stad checkpoint) is loaded last.
    """
    from stad.models.backbones import slowfast
    from stad.models.heads.acar import ACARHead
    from stad.models.heads.fbil import FBILHead, LinearHead

    opt = _options(cfg)
    if opt["backbone"] not in BACKBONES:
        raise StadError(f"option backbone must be one of {list(BACKBONES)}, got {opt['backbone']!r}")
    head_name = opt["head"] or ("acar" if cfg.name == "acar" else "fbil")
    if head_name not in HEADS:
        raise StadError(f"option head must be one of {list(HEADS)}, got {head_name!r}")
    try:
        backbone = getattr(slowfast, opt["backbone"])(**dict(opt["backbone_options"]))
        head_cls = {"fbil": FBILHead, "acar": ACARHead, "linear": LinearHead}[head_name]
        head = head_cls(in_channels=int(sum(backbone.out_channels)), num_classes=int(cfg.num_classes),
                        **dict(opt["head_options"]))
    except (TypeError, ValueError) as err:
        raise StadError(f"{cfg.name}: {err}") from None
    if opt["backbone_weights"]:
        loader = {"acar": slowfast.load_acar_state_dict, "pyslowfast": slowfast.load_pyslowfast_state_dict}.get(
            opt["backbone_layout"])
        if loader is None:
            raise StadError(f"option backbone_layout must be acar or pyslowfast, got {opt['backbone_layout']!r}")
        loader(backbone, opt["backbone_weights"])
    model = ActorContextDetector(backbone, head, num_classes=int(cfg.num_classes), pose_classes=int(opt["pose_classes"]),
                                 jitter=float(opt["jitter"]), score_decimals=opt["score_decimals"])
    if getattr(cfg, "weights", None):  # a stad checkpoint of this model (e.g. the evaluation twin of a config)
        from stad.data.safe_pickle import safe_torch_load
        from stad.models.checkpoints import load_state_dict_strict

        state = safe_torch_load(cfg.weights, what="a stad checkpoint")
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise StadError(f"{cfg.weights}: not a stad checkpoint (no 'model' state dict)")
        load_state_dict_strict(model, state["model"], source=str(cfg.weights))
    return model
