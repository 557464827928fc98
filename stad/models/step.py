"""STEP: Spatio-Temporal Progressive learning for video action detection (Yang et al., CVPR 2019).

Written anew from the facts in ``shared/methods/STEP.md`` (read from the public NVlabs/STEP code; no code was
copied). STEP detects actors and their actions at the keyframe of a 36-frame clip without a person detector:
34 coarse cuboid proposals are refined over 3 progressive steps, each with its own two-branch head, and extended
in time from 1 s to 3 s after step 2.

Flow for ``B`` clips (paper sizes; ``A`` = 34 tubelets, ``K`` = 3 or 9 feature frames)::

    clip [B, 36, 3, H, W] ─permute─▶ [B, 3, 36, H, W] ─InceptionI3D (to Mixed_4f)─▶ features [B, 832, 9, H/16, W/16]
    features ─ContextNet─▶ context [B, 1024, 9]
    step 1: anchors [B, A, 3, 4] on feature frames 3..5 ─ROIAlign 7x7─▶ [B·A, 832, 3, 7, 7] ─head 0─▶
            probs [B, A, C], boxes = decode(tubes, local_loc) ─valid_tubes─▶ step-2 tubes [B, A, 3, 4]
    step 2: head 1 likewise; then temporal extension: decode(tubes, first_loc) ++ boxes ++ decode(tubes, last_loc)
            ─valid_tubes─▶ step-3 tubes [B, A, 9, 4] on feature frames 0..8
    step 3: head 2 ─▶ probs [B, A, C], boxes [B, A, 9, 4]
    detect : per step, the middle-frame box (index K//2) + probs ─threshold, valid_tubes, per-class NMS (+1 areas),
             normalise, top-N─▶ list[step][clip] of KeyframeDetections
    forward: features (with grad) → the same steps in eval mode without grad give each step's candidates →
             per step and clip: sample selection (numpy, under no_grad) → head k on the samples → weighted losses
             {"loss" (their sum), "step{k}_cls", "step{k}_reg", ("step{k}_neighbor" at the step followed by the extension)}

``forward`` and ``detect`` share :meth:`STEPDetector.features` and :meth:`STEPDetector._infer`.

Batch (collated): ``"clip"`` ``[B, 36, 3, H, W]`` RGB in [-1, 1]; ``"boxes"`` ``[B, N, 4]`` keyframe GT boxes in
input pixels; ``"labels"`` ``[B, N, C]`` multi-hot; ``"mask"`` ``[B, N]`` bool (real actors); ``"neighbor_boxes"``
``[B, N, 2, 4]`` the same actor at ts-1 / ts+1 (zeros if absent); ``"neighbor_valid"`` ``[B, N, 2]`` bool.
``detect`` needs only ``"clip"``. Anchors and the valid-tube bounds scale with the clip's real ``W, H``.

The classification pre-training model :class:`STEPClassifier` (``step_cls``) scores 9-frame constant tubelets
with a global-branch-only head (STEP.md §5 "Classification pretraining").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stad.errors import StadError
from stad.models.backbones.i3d import InceptionI3D, mixed5
from stad.models.checkpoints import (
    load_i3d_kinetics_weights,
    load_step_cls_weights,
    load_step_release,
    load_step_weights,
    read_step_cls_state_dict,
)
from stad.models.heads.step import ContextNet, STEPHeadOutputs, TwoBranchHead
from stad.models.step_ops import (
    anchors_for_mode,
    candidate_tubes,
    classification_loss,
    decode_boxes,
    demo_postprocess,
    encode_boxes,
    extrapolate_tubes,
    masked_smooth_l1,
    postprocess_keyframes,
    roi_pool_tubelets,
    sample_anchors,
    scale_boxes,
    select_proposals,
    valid_tubes,
    warmup_cosine_factor,
)
from stad.structures import KeyframeDetections

__all__ = [
    "STEPClassifier",
    "STEPDetector",
    "StepResult",
    "build_step",
    "build_step_cls",
    "demo_postprocess",
    "load_step_cls_weights",
    "load_step_release",
    "step_param_groups",
    "warmup_cosine_factor",
]

CLIP_FRAMES = 36  # 3 s at 12 fps; the keyframe is clip index 18
TEMPORAL_MODES = ("predict", "extrapolate")


def _clip_tensor(batch: Mapping[str, Any] | torch.Tensor) -> torch.Tensor:
    clip = batch if isinstance(batch, torch.Tensor) else batch["clip"]
    if clip.dim() != 5 or clip.shape[2] != 3:
        raise ValueError(f"clip must have shape [B, T, 3, H, W], got {tuple(clip.shape)}")
    return clip


@contextmanager
def _eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Temporarily put ``modules`` in eval mode (dropout off), restoring each one's mode afterwards."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def _selection_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """``rng`` or a numpy generator seeded from torch's global RNG (reproducible under ``torch.manual_seed``)."""
    if rng is not None:
        return rng
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), dtype=torch.int64).item()))


@dataclass
class StepResult:
    """One progressive step run on all ``A`` tubelets of ``B`` clips (inference; boxes in input pixels).

    Attributes:
        tubes: ``[B, A, K, 4]`` the step's input tubelets.
        boxes: ``[B, A, K, 4]`` refined tubelets ``decode(tubes, local_loc)``.
        probs: ``[B, A, C]`` class probabilities.
        next_tubes: ``[B, A, K', 4]`` the next step's input (valid_tubes, plus the temporal extension when
            ``K' > K``); None after the last step.
    """

    tubes: torch.Tensor
    boxes: torch.Tensor
    probs: torch.Tensor
    next_tubes: torch.Tensor | None = None


@dataclass
class StepSamples:
    """Training samples of one step, ``S`` rows over the whole batch (targets in input pixels).

    Attributes:
        tubes: ``[S, K, 4]`` input tubelets; clip_index: ``[S]``; labels: ``[S, C]`` (zero for negatives);
        cls_flag: ``[S]`` bool; reg_flag: ``[S]`` bool; gt_boxes: ``[S, 4]`` keyframe GT of the assigned actor;
        neighbor_boxes: ``[S, 2, 4]`` GT at ts-1 / ts+1; neighbor_flag: ``[S, 2]`` bool (positives only, and only at
        the step followed by the temporal extension).
    """

    tubes: torch.Tensor
    clip_index: torch.Tensor
    labels: torch.Tensor
    cls_flag: torch.Tensor
    reg_flag: torch.Tensor
    gt_boxes: torch.Tensor
    neighbor_boxes: torch.Tensor
    neighbor_flag: torch.Tensor

    def __len__(self) -> int:
        return int(self.clip_index.shape[0])


def step_schedule(num_steps: int) -> tuple[int, ...]:
    """Chunks (of 3 feature frames) per step: STEP's ``NUM_CHUNKS`` {1: 1, 2: 1, 3: 3}. With other step counts the
    last step is the extended one (``(1, 3)`` for 2 steps, ``(1, 1, 1, 3)`` for 4) and a single step stays 1 chunk."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if num_steps == 1:
        return (1,)
    return (1,) * (num_steps - 1) + (3,)


class STEPDetector(nn.Module):
    """STEP: I3D features, context, and ``len(heads)`` progressive two-branch steps over fixed initial proposals.

    Args:
        backbone: :class:`~stad.models.backbones.i3d.InceptionI3D`-like (``forward_features``, ``out_channels``,
            ``stride``), ``[B, 3, 36, H, W] -> [B, C, 9, H/16, W/16]``.
        context_net: :class:`~stad.models.heads.step.ContextNet`.
        heads: one :class:`~stad.models.heads.step.TwoBranchHead` per step (with its local branch).
        num_classes: action classes (no background).
        anchors: ``(A, 4)`` initial proposals normalized to [0, 1] (:func:`stad.models.step_ops.anchors_for_mode`).
        chunks: chunks of 3 feature frames per step (default ``(1, 1, 3)``); a step followed by ``+2`` chunks
            gets the temporal extension and the neighbour loss.
        input_size: the network input side(s) this model is meant for (information; boxes follow the real clip).
        # proposals
        temporal_mode: ``"predict"`` (anticipation heads, STEP's released recipe) or ``"extrapolate"`` (linear).
        pool_size: ROI cells per side (7).
        # training
        thresholds: IoU threshold of sample selection per step (0.2, 0.35, 0.5).
        max_pos: positives per clip and step (5).
        neg_ratio: negatives per positive (2).
        selection_sampling: ``"softmax"`` (``p ∝ exp(score)``) or ``"uniform"`` negatives.
        topk: STEP's ``topk``: ``2*floor(topk/C)`` candidates per class (300).
        lambda_reg: weight of the centre regression (5).
        lambda_neighbor: weight of the neighbour regression (1).
        loss_div_by_steps: divide every loss by the number of steps (STEP's fp16 runs do; default False).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        context_net: ContextNet,
        heads: Sequence[TwoBranchHead],
        num_classes: int,
        anchors: np.ndarray | torch.Tensor,
        chunks: Sequence[int] = (1, 1, 3),
        input_size: int | tuple[int, int] = 400,
        # proposals
        temporal_mode: str = "predict",
        pool_size: int = 7,
        # training
        thresholds: Sequence[float] = (0.2, 0.35, 0.5),
        max_pos: int = 5,
        neg_ratio: float = 2,
        selection_sampling: str = "softmax",
        topk: int = 300,
        lambda_reg: float = 5.0,
        lambda_neighbor: float = 1.0,
        loss_div_by_steps: bool = False,
    ) -> None:
        super().__init__()
        chunks = tuple(int(c) for c in chunks)
        if len(heads) != len(chunks) or len(thresholds) != len(chunks):
            raise ValueError(f"need one head and one threshold per step: {len(chunks)} steps, {len(heads)} heads, "
                             f"{len(thresholds)} thresholds")
        for k, (a, b) in enumerate(zip(chunks[:-1], chunks[1:])):
            if b not in (a, a + 2):
                raise ValueError(f"step {k + 2} must keep or extend (by 2 chunks) step {k + 1}'s {a} chunks, got {b}")
        if temporal_mode not in TEMPORAL_MODES:
            raise ValueError(f"temporal_mode must be one of {list(TEMPORAL_MODES)}, got {temporal_mode!r}")
        if selection_sampling not in ("softmax", "uniform"):
            raise ValueError(f"selection_sampling must be 'softmax' or 'uniform', got {selection_sampling!r}")
        for head in heads:
            if head.cls_only or head.num_classes != num_classes or head.pool_size != pool_size:
                raise ValueError("every head needs its local branch, num_classes and pool_size of the detector")
        self.backbone = backbone
        self.context_net = context_net
        self.heads = nn.ModuleList(heads)
        self.num_classes = num_classes
        self.chunks = chunks
        self.max_chunks = max(chunks)
        self.t_starts = tuple((self.max_chunks - c) // 2 * 3 for c in chunks)
        self.extends = tuple(b == a + 2 for a, b in zip(chunks[:-1], chunks[1:])) + (False,)
        self.input_size = input_size
        self.temporal_mode = temporal_mode
        self.pool_size = pool_size
        self.stride = int(getattr(backbone, "stride", 16))
        self.thresholds = tuple(float(t) for t in thresholds)
        self.max_pos = max_pos
        self.neg_ratio = neg_ratio
        self.selection_sampling = selection_sampling
        self.topk = topk
        self.lambda_reg = lambda_reg
        self.lambda_neighbor = lambda_neighbor
        self.loss_div_by_steps = loss_div_by_steps
        self.register_buffer("anchors", torch.as_tensor(np.asarray(anchors), dtype=torch.float32).reshape(-1, 4),
                             persistent=False)

    @property
    def num_steps(self) -> int:
        return len(self.heads)

    @property
    def loss_names(self) -> list[str]:
        """The weighted parts in :meth:`forward`'s dict after ``"loss"`` (their sum), in order."""
        names = []
        for k in range(self.num_steps):
            names += [f"step{k + 1}_cls", f"step{k + 1}_reg"] + ([f"step{k + 1}_neighbor"] if self.extends[k] else [])
        return names

    # -- shared path ---------------------------------------------------------------------------------
    def features(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``clip`` ``[B, 36, 3, H, W]`` -> (features ``[B, C, 9, h, w]``, context ``[B, C_ctx, 9]``)."""
        clip = _clip_tensor(clip)
        feats = self.backbone.forward_features(clip.transpose(1, 2))  # [B, C, T', h, w]
        if feats.shape[2] != 3 * self.max_chunks:
            raise ValueError(f"the clip of {clip.shape[1]} frames gives {feats.shape[2]} feature frames; STEP needs "
                             f"{3 * self.max_chunks} ({CLIP_FRAMES} input frames)")
        return feats, self.context_net(feats)

    def initial_tubes(self, batch_size: int, width: float, height: float) -> torch.Tensor:
        """The anchors in pixels tiled over the first step's frames: ``[B, A, 3*chunks[0], 4]``."""
        boxes = scale_boxes(self.anchors, width, height)  # [A, 4]
        K = 3 * self.chunks[0]  # noqa: N806
        return boxes[None, :, None].expand(batch_size, -1, K, 4).contiguous()

    def run_head(self, step: int, features: torch.Tensor, context: torch.Tensor, tubes: torch.Tensor,
                 clip_index: torch.Tensor) -> STEPHeadOutputs:
        """Head ``step`` (0-based) on tubelets ``[N, K, 4]`` of clips ``clip_index`` ``[N]``."""
        t0, K = self.t_starts[step], tubes.shape[1]  # noqa: N806
        if K != 3 * self.chunks[step]:
            raise ValueError(f"step {step + 1} takes {3 * self.chunks[step]}-frame tubelets, got {K}")
        rois = roi_pool_tubelets(features, tubes, clip_index, t_start=t0, pool_size=self.pool_size, stride=self.stride)
        ctx = context[clip_index, :, t0:t0 + K]  # [N, C_ctx, K]
        return self.heads[step](rois, ctx)

    def next_tubes(self, step: int, tubes: torch.Tensor, boxes: torch.Tensor, out: STEPHeadOutputs,
                   width: float, height: float) -> torch.Tensor:
        """The input of step ``step + 1`` from step ``step``'s tubes ``[..., K, 4]``, refined boxes and outputs."""
        if not self.extends[step]:
            return valid_tubes(boxes, width=width, height=height)
        if self.temporal_mode == "predict":
            assert out.first_loc is not None and out.last_loc is not None
            lead = tubes.shape[:-2]
            first = decode_boxes(tubes[..., :3, :], out.first_loc.reshape(*lead, 3, 4))
            last = decode_boxes(tubes[..., -3:, :], out.last_loc.reshape(*lead, 3, 4))
            return valid_tubes(torch.cat((first, boxes, last), dim=-2), width=width, height=height)
        grown = extrapolate_tubes(valid_tubes(boxes, width=width, height=height), num_frames=boxes.shape[-2] + 6,
                                  width=width, height=height)
        return valid_tubes(grown, width=width, height=height)

    def _infer(self, features: torch.Tensor, context: torch.Tensor, *, width: float, height: float,
               num_steps: int | None = None) -> list[StepResult]:
        """Run steps ``1..num_steps`` (default all) on all anchors of every clip (no sampling, no pruning)."""
        B = features.shape[0]  # noqa: N806
        tubes = self.initial_tubes(B, width, height)  # [B, A, K, 4]
        A = tubes.shape[1]  # noqa: N806
        clip_index = torch.arange(B, device=features.device).repeat_interleave(A)  # [B*A]
        results: list[StepResult] = []
        for k in range(self.num_steps if num_steps is None else num_steps):
            K = tubes.shape[2]  # noqa: N806
            flat = tubes.reshape(B * A, K, 4)
            out = self.run_head(k, features, context, flat, clip_index)
            assert out.local_loc is not None
            boxes = decode_boxes(flat, out.local_loc.float()).reshape(B, A, K, 4)
            probs = torch.sigmoid(out.logits.float()).reshape(B, A, -1)
            nxt = self.next_tubes(k, tubes, boxes, _reshape_outputs(out, B, A), width, height) \
                if k + 1 < self.num_steps else None
            results.append(StepResult(tubes=tubes, boxes=boxes, probs=probs, next_tubes=nxt))
            if nxt is not None:
                tubes = nxt
        return results

    def _head_outputs(self, clip: torch.Tensor) -> list[StepResult]:
        """All steps on all anchors of ``clip`` ``[B, 36, 3, H, W]`` (heads in eval mode, no grad)."""
        H, W = clip.shape[-2:]  # noqa: N806
        features, context = self.features(clip)
        return self._infer(features, context, width=float(W), height=float(H))

    # -- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, batch: Mapping[str, Any] | torch.Tensor, *, conf_thresh: float = 0.01, nms_thresh: float = 0.4,
               top_n: int = 300) -> list[list[KeyframeDetections]]:
        """Keyframe detections of every step (STEP's ``test.py`` post-processing per step).

        Args:
            batch: a dict with ``"clip"`` ``[B, 36, 3, H, W]`` or that tensor.
            conf_thresh: keep probabilities ``> conf_thresh`` (0.01).
            nms_thresh: per-class NMS, "+1" areas, suppress at IoU ``>= nms_thresh`` (0.4).
            top_n: detections kept per keyframe over all classes (300).

        Returns:
            ``[step][clip]`` :class:`KeyframeDetections` (boxes normalized by the input ``W, H``); the last step
            is the final output. Heads run in eval mode whatever the model's mode.
        """
        clip = _clip_tensor(batch)
        H, W = clip.shape[-2:]  # noqa: N806
        with _eval_mode([self]):
            results = self._head_outputs(clip)
        out = []
        for res in results:
            middle = res.boxes[:, :, res.boxes.shape[2] // 2]  # [B, A, 4] the keyframe box
            out.append(postprocess_keyframes(middle, res.probs, width=float(W), height=float(H), conf_thresh=conf_thresh,
                                             nms_thresh=nms_thresh, top_n=top_n))
        return out

    # -- training ------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor], *, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """Losses of a batch: ``{"loss": the sum of the parts, *parts}``, the parts (:attr:`loss_names`) already
        weighted (``lambda_reg``, ``lambda_neighbor``, optional ``1/num_steps``). The trainer back-propagates
        ``"loss"`` and logs the parts.

        Args:
            batch: the training batch (module docstring).
            rng: generator of the sample selection; default: seeded from torch's global RNG.
        """
        clip = _clip_tensor(batch)
        H, W = float(clip.shape[-2]), float(clip.shape[-1])  # noqa: N806
        B = clip.shape[0]  # noqa: N806
        features, context = self.features(clip)
        with torch.no_grad(), _eval_mode(list(self.heads)):
            inferred = self._infer(features.detach(), context.detach(), width=W, height=H, num_steps=self.num_steps - 1)
        gt = _GroundTruth.from_batch(batch, self.num_classes)
        rng = _selection_rng(rng)
        losses: dict[str, torch.Tensor] = {}
        scale = 1.0 / self.num_steps if self.loss_div_by_steps else 1.0
        for k in range(self.num_steps):
            if k == 0:
                tubes = self.initial_tubes(B, W, H)  # [B, A, K, 4]
                keep, score = torch.ones(tubes.shape[:2], dtype=torch.bool), None
            else:
                prev = inferred[k - 1]
                assert prev.next_tubes is not None
                tubes = prev.next_tubes
                keep, score = candidate_tubes(prev.probs, topk=self.topk)
            samples = self._select(k, tubes, keep, score, gt, rng)
            names = [f"step{k + 1}_cls", f"step{k + 1}_reg"] + ([f"step{k + 1}_neighbor"] if self.extends[k] else [])
            if len(samples) == 0:
                zero = features.sum() * 0.0 + context.sum() * 0.0
                losses.update({name: zero for name in names})
                continue
            out = self.run_head(k, features, context, samples.tubes, samples.clip_index)
            step_losses = self._step_losses(k, samples, out)
            losses.update({name: value * scale for name, value in zip(names, step_losses)})
        return {"loss": torch.stack(list(losses.values())).sum(), **losses}

    def _select(self, step: int, tubes: torch.Tensor, keep: torch.Tensor, score: torch.Tensor | None,
                gt: "_GroundTruth", rng: np.random.Generator) -> StepSamples:
        """Per clip sample selection (numpy) among the candidate tubes ``[B, A, K, 4]`` -> :class:`StepSamples`."""
        B, A, K, _ = tubes.shape  # noqa: N806
        middle = tubes[:, :, K // 2].detach().cpu().double().numpy()  # [B, A, 4]
        keep_np = keep.cpu().numpy()
        score_np = None if score is None else score.detach().cpu().double().numpy()
        thresh = self.thresholds[step]
        rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # clip, tube, gt, positive, iou
        for b in range(B):  # per clip, in numpy
            cand = np.flatnonzero(keep_np[b])
            if score_np is not None:
                cand = cand[np.argsort(-score_np[b, cand], kind="stable")]  # sorted by score, as STEP's list
            sel = select_proposals(gt.boxes_np[b], middle[b, cand], None if score_np is None else score_np[b, cand],
                                   thresh=thresh, max_pos=self.max_pos, neg_ratio=self.neg_ratio,
                                   sampling=self.selection_sampling, rng=rng)
            positive = np.concatenate((np.ones(len(sel.pos_index), bool), np.zeros(len(sel.neg_index), bool)))
            rows.append((b, cand[sel.index], sel.gt, positive, sel.sample_iou()))
        device = tubes.device
        clip_np = np.concatenate([np.full(len(r[1]), r[0], np.int64) for r in rows])
        tube_np = np.concatenate([r[1] for r in rows]).astype(np.int64)
        gt_np = np.concatenate([r[2] for r in rows]).astype(np.int64)
        pos_np = np.concatenate([r[3] for r in rows])
        iou_np = np.concatenate([r[4] for r in rows])
        clip_index = torch.as_tensor(clip_np, device=device)
        gt_index = torch.as_tensor(np.maximum(gt_np, 0), device=device)
        positive = torch.as_tensor(pos_np, device=device)
        has_gt = torch.as_tensor(gt_np >= 0, device=device)
        reg_flag = positive | (torch.as_tensor(iou_np >= thresh, device=device) & has_gt)
        labels = gt.labels[clip_index, gt_index] * positive[:, None].to(gt.labels.dtype)  # [S, C]
        neighbor_flag = gt.neighbor_valid[clip_index, gt_index] & positive[:, None] & has_gt[:, None]  # [S, 2]
        if not self.extends[step]:
            neighbor_flag = torch.zeros_like(neighbor_flag)
        return StepSamples(
            tubes=tubes[clip_index, torch.as_tensor(tube_np, device=device)].detach(),
            clip_index=clip_index,
            labels=labels,
            cls_flag=positive,
            reg_flag=reg_flag & has_gt,
            gt_boxes=gt.boxes[clip_index, gt_index],
            neighbor_boxes=gt.neighbor_boxes[clip_index, gt_index],
            neighbor_flag=neighbor_flag,
        )

    def _step_losses(self, step: int, samples: StepSamples, out: STEPHeadOutputs) -> list[torch.Tensor]:
        """``[cls, lambda_reg * centre reg (, lambda_neighbor * neighbour reg)]`` of one step."""
        assert out.local_loc is not None and out.first_loc is not None and out.last_loc is not None
        K = samples.tubes.shape[1]  # noqa: N806
        tubes = samples.tubes.float()
        cls = classification_loss(out.logits, samples.labels, samples.cls_flag)
        target = _safe_encode(samples.gt_boxes, tubes[:, K // 2], samples.reg_flag)  # [S, 4]
        reg = masked_smooth_l1(out.local_loc[:, K // 2], target, samples.reg_flag)
        losses = [cls, self.lambda_reg * reg]
        if self.extends[step]:
            first_t = _safe_encode(samples.neighbor_boxes[:, 0], tubes[:, 1], samples.neighbor_flag[:, 0])
            last_t = _safe_encode(samples.neighbor_boxes[:, 1], tubes[:, K - 2], samples.neighbor_flag[:, 1])
            pred = torch.cat((out.first_loc[:, 1], out.last_loc[:, 1]))  # [2S, 4]
            nb = masked_smooth_l1(pred, torch.cat((first_t, last_t)), torch.cat((samples.neighbor_flag[:, 0],
                                                                                  samples.neighbor_flag[:, 1])))
            losses.append(self.lambda_neighbor * nb)
        return losses

    # -- optimisation ----------------------------------------------------------------------------------
    def param_groups(self, base_lr: float = 7.5e-5, weight_decay: float = 1e-7, *, det_lr0: float | None = None,
                     det_lr: float | None = None) -> list[dict[str, Any]]:
        """STEP's optimiser groups (:func:`step_param_groups`); ``det_lr0``/``det_lr`` default to 2x/10x ``base_lr``
        (STEP's 7.5e-5 / 1.5e-4 / 7.5e-4). Called by the trainer as ``param_groups(lr, weight_decay)``."""
        return step_param_groups(self, base_lr=base_lr, det_lr0=2 * base_lr if det_lr0 is None else det_lr0,
                                 det_lr=10 * base_lr if det_lr is None else det_lr, weight_decay=weight_decay)


def _reshape_outputs(out: STEPHeadOutputs, B: int, A: int) -> STEPHeadOutputs:  # noqa: N803
    """Head outputs of ``B*A`` tubelets viewed as ``[B, A, ...]``."""
    def view(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.float().reshape(B, A, *t.shape[1:])
    return STEPHeadOutputs(logits=out.logits.reshape(B, A, -1), local_loc=view(out.local_loc),
                           first_loc=view(out.first_loc), last_loc=view(out.last_loc))


def _safe_encode(boxes: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`encode_boxes` with unmasked rows set to 0 (no NaN from absent, all-zero boxes reaches the loss)."""
    target = encode_boxes(boxes.float(), reference.float())
    return torch.where(mask[:, None], target, torch.zeros_like(target)).nan_to_num(0.0)


@dataclass
class _GroundTruth:
    """The batch's keyframe GT, padded to ``G`` actors per clip (``G >= 1``)."""

    boxes: torch.Tensor  # [B, G, 4]
    labels: torch.Tensor  # [B, G, C] float
    neighbor_boxes: torch.Tensor  # [B, G, 2, 4]
    neighbor_valid: torch.Tensor  # [B, G, 2] bool
    boxes_np: list[np.ndarray]  # per clip (G_b, 4) real actors only

    @classmethod
    def from_batch(cls, batch: Mapping[str, torch.Tensor], num_classes: int) -> "_GroundTruth":
        for key in ("boxes", "labels", "mask"):
            if key not in batch:
                raise StadError(f"batch has no {key!r} entry, needed for training (keys: {sorted(batch)})")
        boxes = batch["boxes"].float()
        B, G = boxes.shape[:2]  # noqa: N806
        if boxes.shape != (B, G, 4):
            raise ValueError(f"Expected batch['boxes'] of shape [B, N, 4], got {tuple(boxes.shape)}.")
        labels = batch["labels"].float()
        if labels.shape != (B, G, num_classes):
            raise ValueError(f"Expected batch['labels'] of shape [B, N, C={num_classes}] (multi-hot), got {tuple(labels.shape)}.")
        mask = batch["mask"].bool()
        nb_boxes = batch.get("neighbor_boxes")
        nb_boxes = boxes.new_zeros(B, G, 2, 4) if nb_boxes is None else nb_boxes.float()
        nb_valid = batch.get("neighbor_valid")
        nb_valid = torch.zeros(B, G, 2, dtype=torch.bool, device=boxes.device) if nb_valid is None else nb_valid.bool()
        nb_valid = nb_valid & (nb_boxes.abs().sum(dim=-1) > 0) & mask[..., None]
        if G == 0:  # keep indexable
            boxes, labels = boxes.new_zeros(B, 1, 4), labels.new_zeros(B, 1, num_classes)
            nb_boxes, nb_valid = boxes.new_zeros(B, 1, 2, 4), torch.zeros(B, 1, 2, dtype=torch.bool, device=boxes.device)
        boxes_cpu, mask_cpu = batch["boxes"].detach().double().cpu().numpy(), mask.cpu().numpy()
        per_clip = [boxes_cpu[b][mask_cpu[b]] for b in range(B)] if G else [np.zeros((0, 4))] * B
        return cls(boxes=boxes, labels=labels, neighbor_boxes=nb_boxes, neighbor_valid=nb_valid, boxes_np=per_clip)


# ---------------------------------------------------------------------------------------------------
# Classification pre-training model (STEP.md §5 "Classification pretraining")


class STEPClassifier(nn.Module):
    """STEP's classification pre-training model (``train_cls.py``): one step of 9-frame constant tubelets, a
    global-branch-only head, BCE.

    Training proposals per clip come from :func:`stad.models.step_ops.sample_anchors` (one jittered positive per
    GT, up to ``num_negatives`` negatives) and :func:`stad.models.step_ops.select_proposals` (IoU ``cls_thresh``,
    ``max_pos``, uniform negatives, ``neg_ratio``); every selected sample is classified (negatives: all-zero labels).

    Args:
        backbone, context_net: as :class:`STEPDetector`.
        head: a ``cls_only`` :class:`~stad.models.heads.step.TwoBranchHead`.
        num_classes: action classes.
        input_size: information, as :class:`STEPDetector`.
        pool_size: ROI cells per side (7).
        # training
        cls_thresh: IoU threshold (0.75); max_pos: positives per clip (5); neg_ratio: negatives per positive (3);
        num_negatives: negatives drawn by ``sample_anchors`` (3).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        context_net: ContextNet,
        head: TwoBranchHead,
        num_classes: int,
        input_size: int | tuple[int, int] = 400,
        pool_size: int = 7,
        cls_thresh: float = 0.75,
        max_pos: int = 5,
        neg_ratio: float = 3,
        num_negatives: int = 3,
    ) -> None:
        super().__init__()
        if not head.cls_only or head.num_classes != num_classes or head.pool_size != pool_size:
            raise ValueError("the classifier needs a cls_only head with its num_classes and pool_size")
        self.backbone = backbone
        self.context_net = context_net
        self.head = head
        self.num_classes = num_classes
        self.input_size = input_size
        self.pool_size = pool_size
        self.stride = int(getattr(backbone, "stride", 16))
        self.cls_thresh = cls_thresh
        self.max_pos = max_pos
        self.neg_ratio = neg_ratio
        self.num_negatives = num_negatives

    loss_names = ["cls"]

    def features(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``clip`` ``[B, 36, 3, H, W]`` -> (features ``[B, C, 9, h, w]``, context ``[B, C_ctx, 9]``)."""
        feats = self.backbone.forward_features(_clip_tensor(clip).transpose(1, 2))  # [B, C, T', h, w]
        return feats, self.context_net(feats)

    def score_boxes(self, features: torch.Tensor, context: torch.Tensor, boxes: torch.Tensor,
                    clip_index: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C]`` of constant tubelets of ``boxes`` ``[N, 4]`` over all feature frames."""
        T = features.shape[2]  # noqa: N806
        tubes = boxes[:, None].expand(-1, T, 4)  # [N, T, 4]
        rois = roi_pool_tubelets(features, tubes, clip_index, t_start=0, pool_size=self.pool_size, stride=self.stride)
        return self.head(rois, context[clip_index]).logits

    def forward(self, batch: Mapping[str, torch.Tensor], *, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """``{"loss": BCE mean, "cls": the same}`` over the sampled boxes of the batch (proposals drawn from ``rng``)."""
        clip = _clip_tensor(batch)
        H, W = float(clip.shape[-2]), float(clip.shape[-1])  # noqa: N806
        features, context = self.features(clip)
        gt = _GroundTruth.from_batch(batch, self.num_classes)
        rng = _selection_rng(rng)
        boxes, clips, gts, positive = [], [], [], []
        for b, gt_boxes in enumerate(gt.boxes_np):  # per clip, in numpy
            proposals = sample_anchors(gt_boxes, width=W, height=H, rng=rng, num_negatives=self.num_negatives)
            sel = select_proposals(gt_boxes, proposals, None, thresh=self.cls_thresh, max_pos=self.max_pos,
                                   neg_ratio=self.neg_ratio, sampling="uniform", rng=rng)
            boxes.append(proposals[sel.index])
            clips.append(np.full(len(sel.index), b, np.int64))
            gts.append(np.maximum(sel.gt, 0))
            positive.append(np.arange(len(sel.index)) < len(sel.pos_index))
        device = clip.device
        clip_index = torch.as_tensor(np.concatenate(clips), device=device)
        if clip_index.numel() == 0:
            zero = features.sum() * 0.0 + context.sum() * 0.0
            return {"loss": zero, "cls": zero}
        box_t = torch.as_tensor(np.concatenate(boxes), dtype=torch.float32, device=device)
        pos_t = torch.as_tensor(np.concatenate(positive), device=device)
        labels = gt.labels[clip_index, torch.as_tensor(np.concatenate(gts), device=device)] * pos_t[:, None].float()
        logits = self.score_boxes(features, context, box_t, clip_index)
        cls = classification_loss(logits, labels, torch.ones_like(pos_t))
        return {"loss": cls, "cls": cls}

    @torch.no_grad()
    def detect(self, batch: Mapping[str, Any], *, conf_thresh: float = 0.01) -> list[list[KeyframeDetections]]:
        """Score the batch's GT boxes ("GT boxes given" protocol of STEP's classification validation).

        Returns:
            ``[[KeyframeDetections per clip]]`` (one step): a row per (GT box, class) with probability
            ``> conf_thresh``, boxes normalized by the input ``W, H``, sorted by decreasing score.
        """
        clip = _clip_tensor(batch)
        H, W = float(clip.shape[-2]), float(clip.shape[-1])  # noqa: N806
        B = clip.shape[0]  # noqa: N806
        mask = batch["mask"].bool().to(clip.device)
        boxes = batch["boxes"].float().to(clip.device)  # [B, N, 4]
        clip_index, actor = torch.nonzero(mask, as_tuple=True)
        with _eval_mode([self]):
            features, context = self.features(clip)
            probs = torch.sigmoid(self.score_boxes(features, context, boxes[clip_index, actor], clip_index).float())
        scale = boxes.new_tensor([W, H, W, H])
        out = []
        for b in range(B):  # per clip
            rows = clip_index == b
            p = probs[rows]  # [G_b, C]
            g, c = torch.nonzero(p > conf_thresh, as_tuple=True)
            s = p[g, c]
            order = s.argsort(descending=True, stable=True)
            out.append(KeyframeDetections(
                boxes=(boxes[b, actor[rows][g[order]]] / scale).clamp(0, 1).double().cpu().numpy().reshape(-1, 4),
                labels=c[order].cpu().numpy().astype(np.int64),
                scores=s[order].double().cpu().numpy(),
            ))
        return [out]

    def param_groups(self, base_lr: float = 5e-5, weight_decay: float = 1e-7, *, det_lr0: float | None = None,
                     det_lr: float | None = None) -> list[dict[str, Any]]:
        """Optimiser groups as :func:`step_param_groups` (``det_lr0``/``det_lr`` default to 2x/10x ``base_lr``)."""
        return step_param_groups(self, base_lr=base_lr, det_lr0=2 * base_lr if det_lr0 is None else det_lr0,
                                 det_lr=10 * base_lr if det_lr is None else det_lr, weight_decay=weight_decay)


# ---------------------------------------------------------------------------------------------------
# Optimiser groups (STEP.md §5 "Optimiser and schedule")

_BACKBONE_LR_FACTORS = (
    ("conv3d_1a_7x7.", 1 / 8),
    ("conv3d_2b_1x1.", 1 / 4),
    ("conv3d_2c_3x3.", 1 / 4),
    ("mixed_3", 1 / 2),
    ("mixed_4", 1.0),
)


def step_param_groups(model: nn.Module, *, base_lr: float, det_lr0: float, det_lr: float,
                      weight_decay: float = 1e-7) -> list[dict[str, Any]]:
    """STEP's per-parameter optimiser groups of a :class:`STEPDetector` or :class:`STEPClassifier`.

    lr: I3D ``conv3d_1a`` ``base_lr/8``; ``conv3d_2b``/``2c`` ``base_lr/4``; ``mixed_3*`` ``base_lr/2``;
    ``mixed_4*`` ``base_lr``; the context net and every head's ``i3d_conv`` (Mixed_5b/5c) ``det_lr0``; all other
    head layers ``det_lr``. Weights get ``weight_decay`` (1e-7), biases none and twice the lr. Parameters without
    ``requires_grad`` (frozen) are left out.

    Returns:
        non-empty groups ``{"name", "params", "lr", "weight_decay"}`` (for ``torch.optim.Adam(groups)``).
    """
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("backbone."):
            layer = name[len("backbone."):]
            factor = next((f for prefix, f in _BACKBONE_LR_FACTORS if layer.startswith(prefix)), None)
            if factor is None:
                raise StadError(f"no STEP learning rate rule for backbone parameter {name!r}")
            lr, group = base_lr * factor, layer.split(".", 1)[0]
        elif name.startswith("context_net.") or ".i3d_conv." in name:
            lr, group = det_lr0, "mixed5"
        else:
            lr, group = det_lr, "head"
        is_bias = name.endswith(".bias")
        entry = groups.setdefault((group, is_bias), {
            "name": f"{group}.{'bias' if is_bias else 'weight'}", "params": [],
            "lr": 2 * lr if is_bias else lr, "weight_decay": 0.0 if is_bias else weight_decay,
        })
        entry["params"].append(param)
    return list(groups.values())


# ---------------------------------------------------------------------------------------------------
# Builders

_COMMON_OPTIONS: dict[str, Any] = {
    "input_size": 400,
    "channel_divisor": 1,
    "fc_dim": 256,
    "pool_size": 7,
    "dropout": 0.3,
    "backbone_weights": None,  # i3d_kinetics.pth layout, loaded into the backbone and every Mixed_5b/5c copy
}
STEP_OPTIONS: dict[str, Any] = {
    **_COMMON_OPTIONS,
    "bottleneck_mid": 256,
    "bottleneck_out": 1024,
    "anchor_mode": 1,
    "temporal_mode": "predict",
    "num_steps": 3,
    "thresholds": [0.2, 0.35, 0.5],
    "max_pos": 5,
    "neg_ratio": 2,
    "lambda_reg": 5.0,
    "lambda_neighbor": 1.0,
    "topk": 300,
    "selection_sampling": "softmax",
    "loss_div_by_steps": False,
    "cls_pretrained": None,  # a step_cls stad checkpoint or STEP's ava_cls.pth (STEP.md §5)
}
STEP_CLS_OPTIONS: dict[str, Any] = {
    **_COMMON_OPTIONS,
    "cls_thresh": 0.75,
    "max_pos": 5,
    "neg_ratio": 3,
    "num_negatives": 3,
}


def _options(cfg: Any, defaults: Mapping[str, Any], model: str) -> dict[str, Any]:
    options = dict(getattr(cfg, "options", None) or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise StadError(f"unknown {model} option(s) {unknown}; valid options: {sorted(defaults)}")
    return {**defaults, **options}


def kaiming_init_i3d_(model: nn.Module) -> None:
    """Kaiming-normal (fan-in, ReLU) weights of every ``Conv3d`` of the I3D parts (backbone, context net, heads'
    Mixed_5b/5c) of a STEP model built without Kinetics weights.

    With frozen batch norm at its initial statistics nothing re-normalises the activations, and PyTorch's default
    conv init shrinks them about 10^5-fold over the 13 blocks up to Mixed_5c; this init keeps them of order 1.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv3d) and module.bias is None:  # I3D units are bias-free; head convs keep Xavier
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")


def _trunk(opt: Mapping[str, Any]) -> tuple[InceptionI3D, ContextNet]:
    try:
        backbone = InceptionI3D(channel_divisor=int(opt["channel_divisor"]), frozen_bn=True)
    except ValueError as err:
        raise StadError(f"option channel_divisor: {err}") from None
    context = ContextNet(mixed5(backbone.out_channels, channel_divisor=int(opt["channel_divisor"]), frozen_bn=True))
    return backbone, context


def _input_size(value: Any) -> int | tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise StadError(f"option input_size must be an int or [H, W], got {value!r}")
        return int(value[0]), int(value[1])
    return int(value)


def build_step(cfg: Any) -> STEPDetector:
    """Build a :class:`STEPDetector` from a ``ModelConfig``-like object (``num_classes``, ``options``, ``weights``).

    Options (defaults = STEP's released recipe): ``input_size`` (400), ``channel_divisor`` (1; 8 for the CPU
    network of STEP.md §9), ``fc_dim`` (256), ``pool_size`` (7), ``bottleneck_mid`` (256), ``bottleneck_out``
    (1024), ``dropout`` (0.3), ``anchor_mode`` (1), ``temporal_mode`` (``predict`` | ``extrapolate``),
    ``num_steps`` (3), ``thresholds`` ([0.2, 0.35, 0.5], one per step), ``max_pos`` (5), ``neg_ratio`` (2),
    ``lambda_reg`` (5), ``lambda_neighbor`` (1), ``topk`` (300), ``selection_sampling`` (``softmax``),
    ``loss_div_by_steps`` (False), ``backbone_weights`` (``i3d_kinetics.pth`` or null), ``cls_pretrained``
    (a ``step_cls`` checkpoint or ``ava_cls.pth``, or null). ``cfg.weights`` (a stad checkpoint or
    ``ava_step.pth``) is loaded last. CPU variant: ``channel_divisor 8, fc_dim 16, bottleneck_mid 32,
    bottleneck_out 128, pool_size 7 (or 4), input_size 128``.

    Raises:
        StadError: an unknown option (named) or a bad value.
    """
    opt = _options(cfg, STEP_OPTIONS, "STEP")
    num_classes, num_steps = int(cfg.num_classes), int(opt["num_steps"])
    thresholds = [float(t) for t in opt["thresholds"]]
    if len(thresholds) != num_steps:
        raise StadError(f"option thresholds needs one value per step ({num_steps}), got {thresholds}")
    if opt["temporal_mode"] not in TEMPORAL_MODES:
        raise StadError(f"option temporal_mode must be one of {list(TEMPORAL_MODES)}, got {opt['temporal_mode']!r}")
    if opt["selection_sampling"] not in ("softmax", "uniform"):
        raise StadError(f"option selection_sampling must be 'softmax' or 'uniform', got {opt['selection_sampling']!r}")
    try:
        anchors = anchors_for_mode(opt["anchor_mode"])
    except ValueError as err:
        raise StadError(f"option anchor_mode: {err}") from None
    backbone, context = _trunk(opt)
    heads = [
        TwoBranchHead(
            mixed5=mixed5(backbone.out_channels, channel_divisor=int(opt["channel_divisor"]), frozen_bn=True),
            in_channels=backbone.out_channels, context_channels=context.out_channels, num_classes=num_classes,
            fc_dim=int(opt["fc_dim"]), pool_size=int(opt["pool_size"]), mid_channels=int(opt["bottleneck_mid"]),
            local_channels=int(opt["bottleneck_out"]), dropout=float(opt["dropout"]),
        )
        for _ in range(num_steps)
    ]
    model = STEPDetector(
        backbone=backbone, context_net=context, heads=heads, num_classes=num_classes, anchors=anchors,
        chunks=step_schedule(num_steps), input_size=_input_size(opt["input_size"]),
        temporal_mode=str(opt["temporal_mode"]), pool_size=int(opt["pool_size"]), thresholds=thresholds,
        max_pos=int(opt["max_pos"]), neg_ratio=float(opt["neg_ratio"]), selection_sampling=str(opt["selection_sampling"]),
        topk=int(opt["topk"]), lambda_reg=float(opt["lambda_reg"]), lambda_neighbor=float(opt["lambda_neighbor"]),
        loss_div_by_steps=bool(opt["loss_div_by_steps"]),
    )
    kaiming_init_i3d_(model)
    if opt["backbone_weights"]:
        load_i3d_kinetics_weights(model, opt["backbone_weights"])
    if opt["cls_pretrained"]:
        load_step_cls_weights(model, read_step_cls_state_dict(opt["cls_pretrained"]), source=str(opt["cls_pretrained"]))
    weights = getattr(cfg, "weights", None)
    if weights:
        load_step_weights(model, weights)
    return model


def build_step_cls(cfg: Any) -> STEPClassifier:
    """Build the classification pre-training :class:`STEPClassifier` from a ``ModelConfig``-like object.

    Options: ``input_size``, ``channel_divisor``, ``fc_dim``, ``pool_size``, ``dropout``, ``backbone_weights`` as
    :func:`build_step`, plus ``cls_thresh`` (0.75), ``max_pos`` (5), ``neg_ratio`` (3), ``num_negatives`` (3).
    ``cfg.weights`` may be a stad checkpoint or STEP's ``ava_cls.pth``.
    """
    opt = _options(cfg, STEP_CLS_OPTIONS, "STEP classification")
    num_classes = int(cfg.num_classes)
    backbone, context = _trunk(opt)
    head = TwoBranchHead(
        mixed5=mixed5(backbone.out_channels, channel_divisor=int(opt["channel_divisor"]), frozen_bn=True),
        in_channels=backbone.out_channels, context_channels=context.out_channels, num_classes=num_classes,
        fc_dim=int(opt["fc_dim"]), pool_size=int(opt["pool_size"]), dropout=float(opt["dropout"]), cls_only=True,
    )
    model = STEPClassifier(
        backbone=backbone, context_net=context, head=head, num_classes=num_classes,
        input_size=_input_size(opt["input_size"]), pool_size=int(opt["pool_size"]), cls_thresh=float(opt["cls_thresh"]),
        max_pos=int(opt["max_pos"]), neg_ratio=float(opt["neg_ratio"]), num_negatives=int(opt["num_negatives"]),
    )
    kaiming_init_i3d_(model)
    if opt["backbone_weights"]:
        load_i3d_kinetics_weights(model, opt["backbone_weights"])
    weights = getattr(cfg, "weights", None)
    if weights:
        load_step_weights(model, weights)
    return model


build = build_step
