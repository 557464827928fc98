"""Pure tensor / numpy operations of STEP ("Spatio-Temporal Progressive Learning for Video Action Detection",
Yang et al., CVPR 2019): anchors, box coding, the valid-tube rule, temporal extension, candidate and sample
selection, losses and the keyframe post-processing (per-class NMS with "+1" areas, top-N).

Written anew from the facts in ``shared/methods/STEP.md`` (§4 proposals, §5 training, §6 inference); no code was
copied. Every function takes arrays and returns arrays (no hidden state, randomness only from a generator passed
in) and handles empty input.

Naming: ``B`` clips, ``A`` tubelets per clip (34 anchors), ``K`` frames of a tubelet (3 or 9 feature frames),
``G`` ground-truth actors of a clip, ``M`` candidates of a clip, ``S`` selected samples, ``C`` classes.

Boxes are ``x1, y1, x2, y2`` in pixels of the network input (``W x H``) unless said otherwise. Two conventions are
used on purpose, as in STEP:

* box coding and the NMS of the outputs use the inclusive "+1" pixel convention (``w = x2 - x1 + 1``);
* the IoU of training sample selection is the plain continuous IoU (no "+1"), ``stad.boxes.box_iou``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from stad.boxes import box_iou
from stad.structures import KeyframeDetections

# --------------------------------------------------------------------------------------------------------------
# Anchors (STEP.md §4 "Initial proposals")

#: ``anchor_mode`` -> (scales, overlaps) of :func:`generate_anchors`. Mode "1" is STEP's released recipe (34 boxes).
#: Modes "2".."4" keep STEP's box counts (59, 84, 109) by adding one 5x5 square grid each; their exact scales are
#: not in STEP.md, so these grids (side 0.375 / 0.25 / 0.2) are our own choice.
ANCHOR_MODES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "1": ((4 / 3, 2.0), (5 / 6, 3 / 4)),
    "2": ((4 / 3, 2.0, 8 / 3), (5 / 6, 3 / 4, 0.6)),
    "3": ((4 / 3, 2.0, 8 / 3, 4.0), (5 / 6, 3 / 4, 0.6, 0.3)),
    "4": ((4 / 3, 2.0, 8 / 3, 4.0, 5.0), (5 / 6, 3 / 4, 0.6, 0.3, 0.1)),
}


def generate_anchors(scales: Sequence[float], overlaps: Sequence[float]) -> np.ndarray:
    """STEP's square grid of initial proposals, normalized to the unit square.

    Per scale, the side is ``s = 1/scale`` and the stride ``s * (1 - overlap)``. The outer loop runs ``x`` from 0
    while ``x + s <= 1`` (adding the stride each time), the inner loop ``y`` likewise, so the order is x-major.

    Args:
        scales: e.g. ``[4/3, 2]``.
        overlaps: one per scale, e.g. ``[5/6, 3/4]``.

    Returns:
        ``(A, 4)`` float64 ``[x, y, x + s, y + s]`` (34 boxes for the defaults).
    """
    if len(scales) != len(overlaps):
        raise ValueError(f"need one overlap per scale, got {len(scales)} scales and {len(overlaps)} overlaps")
    boxes: list[list[float]] = []
    for scale, overlap in zip(scales, overlaps):
        side = 1.0 / scale
        stride = side * (1.0 - overlap)
        if stride <= 0:
            raise ValueError(f"overlap must be < 1, got {overlap}")
        x = 0.0
        while x + side <= 1.0:
            y = 0.0
            while y + side <= 1.0:
                boxes.append([x, y, x + side, y + side])
                y += stride
            x += stride
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def anchors_for_mode(mode: str | int) -> np.ndarray:
    """Normalized anchors ``(A, 4)`` of ``anchor_mode`` "1" (34), "2" (59), "3" (84) or "4" (109)."""
    key = str(mode)
    if key not in ANCHOR_MODES:
        raise ValueError(f"anchor_mode must be one of {sorted(ANCHOR_MODES)}, got {mode!r}")
    return generate_anchors(*ANCHOR_MODES[key])


def scale_boxes(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """Multiply ``(..., 4)`` normalized boxes by ``(W, H, W, H)``."""
    return boxes * boxes.new_tensor([width, height, width, height])


# --------------------------------------------------------------------------------------------------------------
# Box coding and the valid-tube rule (STEP.md §4)


def encode_boxes(boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Regression targets of ``boxes`` relative to ``reference`` (both ``(..., 4)`` pixels, "+1" convention).

    ``w = x2 - x1 + 1``, ``cx = x1 + w/2``; ``t = ((gx - cx)/w, (gy - cy)/h, ln(gw/w), ln(gh/h))``, no variances.
    """
    rw = reference[..., 2] - reference[..., 0] + 1
    rh = reference[..., 3] - reference[..., 1] + 1
    rx = reference[..., 0] + rw / 2
    ry = reference[..., 1] + rh / 2
    gw = boxes[..., 2] - boxes[..., 0] + 1
    gh = boxes[..., 3] - boxes[..., 1] + 1
    gx = boxes[..., 0] + gw / 2
    gy = boxes[..., 1] + gh / 2
    return torch.stack(((gx - rx) / rw, (gy - ry) / rh, torch.log(gw / rw), torch.log(gh / rh)), dim=-1)


def decode_boxes(reference: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: ``(..., 4)`` reference boxes + deltas -> boxes (no clamping of ``tw, th``).

    ``cx' = cx + w*tx``, ``w' = w*exp(tw)``; box ``(cx' - w'/2, cy' - h'/2, cx' + w'/2 - 1, cy' + h'/2 - 1)``.
    """
    rw = reference[..., 2] - reference[..., 0] + 1
    rh = reference[..., 3] - reference[..., 1] + 1
    rx = reference[..., 0] + rw / 2
    ry = reference[..., 1] + rh / 2
    cx = rx + rw * deltas[..., 0]
    cy = ry + rh * deltas[..., 1]
    w = rw * torch.exp(deltas[..., 2])
    h = rh * torch.exp(deltas[..., 3])
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2 - 1, cy + h / 2 - 1), dim=-1)


def valid_tubes(tubes: torch.Tensor, *, width: float, height: float) -> torch.Tensor:
    """STEP's ``valid_tubes``: clamp ``(..., 4)`` boxes to ``x1, y1 >= 0``, ``x2 <= W``, ``y2 <= H``; any box
    with ``x1 >= x2 - 2`` or ``y1 >= y2 - 2`` after clamping becomes the full image ``[0, 0, W, H]``.

    The number of boxes never changes (every frame of every tube is treated on its own).
    """
    x1 = tubes[..., 0].clamp(min=0)
    y1 = tubes[..., 1].clamp(min=0)
    x2 = tubes[..., 2].clamp(max=width)
    y2 = tubes[..., 3].clamp(max=height)
    clamped = torch.stack((x1, y1, x2, y2), dim=-1)
    degenerate = (x1 >= x2 - 2) | (y1 >= y2 - 2)
    full = tubes.new_tensor([0.0, 0.0, width, height]).expand_as(clamped)
    return torch.where(degenerate[..., None], full, clamped)


# --------------------------------------------------------------------------------------------------------------
# Temporal extension (STEP.md §4 "Temporal extension")


def extend_tubes_predicted(tubes: torch.Tensor, boxes: torch.Tensor, first_loc: torch.Tensor, last_loc: torch.Tensor) -> torch.Tensor:
    """STEP's ``temporal_mode="predict"``: grow 3-frame tubelets to 9 frames with the anticipation heads.

    Args:
        tubes: ``(..., 3, 4)`` the step's input tubelets (the reference boxes of the deltas).
        boxes: ``(..., 3, 4)`` the step's refined tubelets (``decode(tubes, local_loc)``).
        first_loc: ``(..., 3, 4)`` deltas of the previous second (frame ``j`` from the input frame ``j``).
        last_loc: ``(..., 3, 4)`` deltas of the next second.

    Returns:
        ``(..., 9, 4)``: ``concat_time(decode(tubes, first_loc), boxes, decode(tubes, last_loc))``.
    """
    return torch.cat((decode_boxes(tubes, first_loc), boxes, decode_boxes(tubes, last_loc)), dim=-2)


def extrapolate_tubes(tubes: torch.Tensor, *, num_frames: int, width: float, height: float) -> torch.Tensor:
    """STEP's ``temporal_mode="extrapolate"``: extend ``(..., K, 4)`` tubes to ``num_frames`` frames linearly.

    Each new frame ``n`` outward from either end is ``1.5*box[n-1] - 0.5*box[n-3]`` after the tube and
    ``1.5*box[n+1] - 0.5*box[n+3]`` before it, applied recursively (``K >= 3``). E.g. ``x1 = 100, 110, 120``
    grows to ``70, 80, 90, 100, 110, 120, 130, 140, 150``. Then ``x1, y1 >= 0`` and ``x2 <= W - 1``,
    ``y2 <= H - 1`` (STEP's 399 at 400 pixels).

    Returns:
        ``(..., num_frames, 4)``; ``(num_frames - K)`` must be even.
    """
    K = tubes.shape[-2]  # noqa: N806
    extra = num_frames - K
    if extra < 0 or extra % 2 or K < 3:
        raise ValueError(f"cannot extrapolate {K}-frame tubes to {num_frames} frames")
    frames = list(tubes.unbind(dim=-2))
    for _ in range(extra // 2):
        frames.append(1.5 * frames[-1] - 0.5 * frames[-3])
        frames.insert(0, 1.5 * frames[0] - 0.5 * frames[2])
    out = torch.stack(frames, dim=-2)  # [..., num_frames, 4]
    lo = out.new_tensor([0.0, 0.0, -math.inf, -math.inf])
    hi = out.new_tensor([math.inf, math.inf, width - 1, height - 1])
    return torch.maximum(torch.minimum(out, hi), lo)


# --------------------------------------------------------------------------------------------------------------
# ROI pooling of tubelets (STEP.md §3 "ROI", fact 10)


def roi_pool_tubelets(
    features: torch.Tensor, tubes: torch.Tensor, clip_index: torch.Tensor, *, t_start: int, pool_size: int, stride: int = 16
) -> torch.Tensor:
    """ROIAlign (legacy, ``aligned=False``, ``sampling_ratio=0``) of every frame of every tubelet.

    The map is sliced to frames ``t_start .. t_start+K-1`` and flattened to ``[B*K, C, h, w]``, so frame ``t`` of
    clip ``b`` has ROI batch index ``b*K + t`` (STEP's layout).

    Args:
        features: ``[B, C, T', h, w]`` backbone map (stride ``stride`` in pixels).
        tubes: ``[N, K, 4]`` boxes in input pixels.
        clip_index: ``[N]`` int64, the clip of each tubelet.
        t_start: first feature frame of the tubelets.
        pool_size: output cells ``P`` per side.

    Returns:
        ``[N, C, K, P, P]``.
    """
    N, K = tubes.shape[:2]  # noqa: N806
    B, C, T, h, w = features.shape  # noqa: N806
    if t_start < 0 or t_start + K > T:
        raise ValueError(f"tubelets of {K} frames from frame {t_start} do not fit a map of {T} frames")
    maps = features[:, :, t_start:t_start + K].transpose(1, 2).reshape(B * K, C, h, w)  # [B*K, C, h, w]
    frame = torch.arange(K, device=tubes.device)
    batch_index = (clip_index[:, None].to(tubes.device) * K + frame[None, :]).to(tubes.dtype)  # [N, K]
    rois = torch.cat((batch_index.reshape(-1, 1), tubes.reshape(-1, 4)), dim=1)  # [N*K, 5]
    pooled = roi_align(maps, rois.to(maps.dtype), (pool_size, pool_size), spatial_scale=1.0 / stride,
                       sampling_ratio=0, aligned=False)  # [N*K, C, P, P]
    return pooled.view(N, K, C, pool_size, pool_size).transpose(1, 2)  # [N, C, K, P, P]


# --------------------------------------------------------------------------------------------------------------
# Candidates and training sample selection (STEP.md §5)


def candidate_tubes(probs: torch.Tensor, *, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tubes of the previous step become training candidates, and their scores.

    Per class the ``2*floor(topk/C)`` most probable tubes are kept; a tube's score is its highest probability
    among the classes that kept it. (STEP then caps the merged list at ``topk``; with ``A <= topk`` that never
    removes anything, and here the cap is applied by keeping the ``topk`` best scores.)

    Args:
        probs: ``[B, A, C]`` probabilities.
        topk: STEP's ``topk`` (300).

    Returns:
        ``(keep [B, A] bool, score [B, A] float)``; scores of tubes not kept are ``-inf``.
    """
    B, A, C = probs.shape  # noqa: N806
    per_class = min(2 * (topk // max(C, 1)), A)
    member = torch.zeros_like(probs, dtype=torch.bool)
    if per_class > 0 and A > 0:
        index = probs.topk(per_class, dim=1).indices  # [B, per_class, C]
        member.scatter_(1, index, True)
    score = torch.where(member, probs, torch.full_like(probs, -math.inf)).amax(dim=2) if C else probs.new_full((B, A), -math.inf)
    keep = member.any(dim=2)
    if A > topk:
        rank = score.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
        keep &= rank < topk
        score = torch.where(keep, score, torch.full_like(score, -math.inf))
    return keep, score


@dataclass
class Selection:
    """Samples chosen among one clip's candidates (:func:`select_proposals`).

    Attributes:
        pos_index: ``(P,)`` candidate index of each positive.
        pos_gt: ``(P,)`` the GT each positive is assigned to.
        neg_index: ``(Q,)`` candidate index of each negative.
        neg_gt: ``(Q,)`` the argmax-IoU GT of each negative (``-1`` when the clip has no GT).
        iou: ``(G, M)`` plain IoU of GT boxes and candidate boxes.
    """

    pos_index: np.ndarray
    pos_gt: np.ndarray
    neg_index: np.ndarray
    neg_gt: np.ndarray
    iou: np.ndarray

    @property
    def index(self) -> np.ndarray:
        """Positives then negatives, ``(P + Q,)``."""
        return np.concatenate((self.pos_index, self.neg_index))

    @property
    def gt(self) -> np.ndarray:
        return np.concatenate((self.pos_gt, self.neg_gt))

    def sample_iou(self) -> np.ndarray:
        """IoU of each sample with its assigned GT, ``(P + Q,)`` (0 without GT)."""
        index, gt = self.index, self.gt
        if self.iou.shape[0] == 0:
            return np.zeros(len(index))
        return self.iou[np.maximum(gt, 0), index]


def select_proposals(
    gt_boxes: np.ndarray,
    candidates: np.ndarray,
    scores: np.ndarray | None,
    *,
    thresh: float,
    max_pos: int = 5,
    neg_ratio: float = 2,
    sampling: str = "softmax",
    rng: np.random.Generator,
) -> Selection:
    """STEP's ``select_proposals`` for one clip.

    1. Forced positives: once per GT, the GT whose best remaining IoU is largest takes its highest-IoU candidate
       not yet taken (even at IoU 0); more than ``max_pos`` are shuffled and cut to ``max_pos``.
    2. Extra positives: untaken candidates with IoU > ``thresh`` for any GT are drawn uniformly without
       replacement up to ``max_pos`` positives, each assigned to its argmax-IoU GT. Every candidate with
       IoU > ``thresh`` is then excluded from the negatives.
    3. Negatives: ``min(neg_ratio * P, left)`` of the rest without replacement, with ``p ∝ exp(score)``
       (``sampling="softmax"``) or uniformly (``"uniform"``). ``scores=None`` uses the max IoU with any GT.

    Args:
        gt_boxes: ``(G, 4)`` keyframe GT boxes.
        candidates: ``(M, 4)`` candidate boxes at the keyframe.
        scores: ``(M,)`` candidate scores, or None (step 1).
        thresh: IoU threshold of this step.
        rng: the only source of randomness.

    Returns:
        :class:`Selection`.
    """
    if sampling not in ("softmax", "uniform"):
        raise ValueError(f"sampling must be 'softmax' or 'uniform', got {sampling!r}")
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    candidates = np.asarray(candidates, np.float64).reshape(-1, 4)
    G, M = len(gt_boxes), len(candidates)  # noqa: N806
    iou = box_iou(gt_boxes, candidates, plus_one=False)  # [G, M]
    empty = np.zeros(0, np.int64)
    taken = np.zeros(M, bool)
    pos_index: list[int] = []
    pos_gt: list[int] = []
    work = iou.copy()
    for _ in range(min(G, M)):  # forced positives
        g, m = np.unravel_index(int(np.argmax(work)), work.shape)
        pos_index.append(int(m))
        pos_gt.append(int(g))
        taken[m] = True
        work[g, :] = -1.0
        work[:, m] = -1.0
    pos_i, pos_g = np.asarray(pos_index, np.int64), np.asarray(pos_gt, np.int64)
    if len(pos_i) > max_pos:
        order = rng.permutation(len(pos_i))[:max_pos]
        pos_i, pos_g = pos_i[order], pos_g[order]
    max_iou = iou.max(axis=0) if G else np.zeros(M)
    arg_gt = iou.argmax(axis=0) if G else np.full(M, -1, np.int64)
    above = max_iou > thresh
    eligible = np.flatnonzero(above & ~taken)
    need = max_pos - len(pos_i)
    if need > 0 and len(eligible):
        extra = rng.choice(eligible, size=min(need, len(eligible)), replace=False)
        pos_i = np.concatenate((pos_i, extra))
        pos_g = np.concatenate((pos_g, arg_gt[extra]))
    taken[pos_i] = True
    left = np.flatnonzero(~taken & ~above)
    num_neg = min(int(neg_ratio * len(pos_i)), len(left))
    if num_neg > 0:
        if sampling == "softmax":
            s = max_iou[left] if scores is None else np.asarray(scores, np.float64)[left]
            p = np.exp(s - s.max())
            neg_i = rng.choice(left, size=num_neg, replace=False, p=p / p.sum())
        else:
            neg_i = rng.choice(left, size=num_neg, replace=False)
    else:
        neg_i = empty
    return Selection(
        pos_index=pos_i.astype(np.int64), pos_gt=pos_g.astype(np.int64),
        neg_index=np.asarray(neg_i, np.int64), neg_gt=arg_gt[neg_i].astype(np.int64), iou=iou,
    )


def sample_anchors(
    gt_boxes: np.ndarray,
    *,
    width: float,
    height: float,
    rng: np.random.Generator,
    train: bool = True,
    pos_iou: float = 0.75,
    neg_iou: float = 0.2,
    num_negatives: int = 3,
    tries: int = 50,
    jitter: float = 0.1,
    neg_size: tuple[float, float] = (0.15, 0.6),
) -> np.ndarray:
    """Proposals of STEP's classification pre-training for one clip (STEP.md §5 "Classification pretraining").

    Per GT one positive: a jittered copy (centre moved by ``U(-jitter, jitter)`` of the size, width and height
    scaled by ``exp(U(-1.5 jitter, 1.5 jitter))``, clipped to the image) with IoU > ``pos_iou`` to its own GT and
    < ``neg_iou`` to every other, the first of ``tries`` draws; otherwise (and with ``train=False``) the GT itself.
    Then up to ``num_negatives`` boxes (side ``neg_size`` of the image, anywhere inside it) with IoU < ``neg_iou``
    to every GT, ``tries`` draws each. The jitter and negative-box laws are our choice (STEP.md gives only the IoU rules).

    Returns:
        ``(G + Q, 4)`` float64 boxes in pixels: the ``G`` positives (in GT order), then ``Q <= num_negatives`` negatives.
    """
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    G = len(gt)  # noqa: N806
    positives = gt.copy()
    bound = np.array([width, height, width, height]) - 1e-6
    if train:
        for g in range(G):
            w, h = gt[g, 2] - gt[g, 0], gt[g, 3] - gt[g, 1]
            cx, cy = gt[g, 0] + w / 2, gt[g, 1] + h / 2
            u = rng.uniform(-1.0, 1.0, size=(tries, 4))
            nw, nh = w * np.exp(1.5 * jitter * u[:, 2]), h * np.exp(1.5 * jitter * u[:, 3])
            ncx, ncy = cx + jitter * w * u[:, 0], cy + jitter * h * u[:, 1]
            boxes = np.stack((ncx - nw / 2, ncy - nh / 2, ncx + nw / 2, ncy + nh / 2), axis=1)
            boxes = np.clip(boxes, 0, bound)
            iou = box_iou(boxes, gt, plus_one=False)  # [tries, G]
            others = np.delete(iou, g, axis=1)
            ok = (iou[:, g] > pos_iou) & (others.max(axis=1, initial=0.0) < neg_iou)
            if ok.any():
                positives[g] = boxes[int(np.argmax(ok))]
    negatives: list[np.ndarray] = []
    for _ in range(num_negatives):
        u = rng.uniform(0.0, 1.0, size=(tries, 4))
        w = width * (neg_size[0] + (neg_size[1] - neg_size[0]) * u[:, 0])
        h = height * (neg_size[0] + (neg_size[1] - neg_size[0]) * u[:, 1])
        x1, y1 = (width - w) * u[:, 2], (height - h) * u[:, 3]
        boxes = np.stack((x1, y1, x1 + w, y1 + h), axis=1)
        ok = box_iou(boxes, gt, plus_one=False).max(axis=1, initial=0.0) < neg_iou
        if ok.any():
            negatives.append(boxes[int(np.argmax(ok))])
    return np.concatenate((positives, np.asarray(negatives, np.float64).reshape(-1, 4)))


# --------------------------------------------------------------------------------------------------------------
# Losses (STEP.md §5 "Losses")


def masked_smooth_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SmoothL1 (beta 1) of ``(S, 4)`` rows where ``mask`` ``(S,)`` is set, averaged over ``mask.sum() * 4``
    coordinates (0 with an empty mask, still connected to ``pred``)."""
    m = mask.to(pred.dtype)[:, None]  # [S, 1]
    loss = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=1.0) * m
    return loss.sum() / (m.sum() * pred.shape[-1]).clamp(min=1.0)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, cls_flag: torch.Tensor) -> torch.Tensor:
    """``BCEWithLogits(logits, labels * cls_flag)`` averaged over all ``S x C`` entries; 0 when no sample has
    ``cls_flag`` (STEP computes it only then). Shapes: logits / labels ``(S, C)``, cls_flag ``(S,)``."""
    if not bool(cls_flag.any()):
        return logits.sum() * 0.0
    target = labels.float() * cls_flag.float()[:, None]
    return F.binary_cross_entropy_with_logits(logits.float(), target, reduction="mean")


# --------------------------------------------------------------------------------------------------------------
# Keyframe post-processing (STEP.md §6)


def _iou_plus_one(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise "+1" IoU of ``(..., N, 4)`` and ``(..., M, 4)`` -> ``(..., N, M)`` (maskrcnn-benchmark's NMS rule)."""
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    iw = (torch.minimum(a[..., :, None, 2], b[..., None, :, 2]) - torch.maximum(a[..., :, None, 0], b[..., None, :, 0]) + 1).clamp(min=0)
    ih = (torch.minimum(a[..., :, None, 3], b[..., None, :, 3]) - torch.maximum(a[..., :, None, 1], b[..., None, :, 1]) + 1).clamp(min=0)
    inter = iw * ih
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter)


def batched_nms_plus_one(boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, thresh: float) -> torch.Tensor:
    """Greedy NMS of many independent sets at once, maskrcnn-benchmark's CPU kernel rule.

    Areas are "+1" (``(x2 - x1 + 1) * (y2 - y1 + 1)``); a box is suppressed by a higher-scored kept box when
    their IoU is ``>= thresh``. Ties in score keep the lower index first (stable sort). The loop runs over rank
    positions (``N`` iterations), vectorised over all sets.

    Args:
        boxes: ``(..., N, 4)``.
        scores: ``(..., N)``.
        valid: ``(..., N)`` bool, the boxes taking part (e.g. ``score > conf_thresh``).
        thresh: IoU threshold.

    Returns:
        ``(..., N)`` bool, the kept boxes.
    """
    N = boxes.shape[-2]  # noqa: N806
    if N == 0 or valid.numel() == 0:
        return valid.clone()
    masked = torch.where(valid, scores, torch.full_like(scores, -math.inf))
    order = masked.argsort(dim=-1, descending=True, stable=True)  # [..., N]
    sorted_boxes = boxes.gather(-2, order[..., None].expand(*order.shape, 4))  # [..., N, 4]
    sorted_valid = valid.gather(-1, order)  # [..., N]
    suppress_by = _iou_plus_one(sorted_boxes, sorted_boxes) >= thresh  # [..., N, N]
    alive = sorted_valid.clone()
    for i in range(N - 1):  # rank i suppresses the later ranks it overlaps, if it is still alive
        alive[..., i + 1:] &= ~(alive[..., i:i + 1] & suppress_by[..., i, i + 1:])
    keep = torch.zeros_like(valid)
    return keep.scatter(-1, order, alive)


def nms_plus_one(boxes: torch.Tensor, scores: torch.Tensor, thresh: float) -> torch.Tensor:
    """Indices ``(K,)`` int64 of the boxes kept by :func:`batched_nms_plus_one`, in decreasing score order.

    Args: boxes ``(N, 4)``, scores ``(N,)``. Empty input gives ``torch.empty((0,), dtype=torch.int64)``.
    """
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    keep = batched_nms_plus_one(boxes, scores, torch.ones_like(scores, dtype=torch.bool), thresh)
    index = torch.nonzero(keep).reshape(-1)
    return index[scores[index].argsort(descending=True, stable=True)]


def postprocess_keyframes(
    boxes: torch.Tensor,
    probs: torch.Tensor,
    *,
    width: float,
    height: float,
    conf_thresh: float = 0.01,
    nms_thresh: float = 0.4,
    top_n: int = 300,
) -> list[KeyframeDetections]:
    """STEP's ``test.py`` post-processing of one step's keyframe boxes, for every clip.

    Per clip and class: keep boxes with probability > ``conf_thresh``, apply :func:`valid_tubes`, per-class NMS
    (:func:`batched_nms_plus_one`, IoU ``>= nms_thresh`` suppresses), normalise by ``(W, H)``; then over all
    classes sort by score and keep the ``top_n`` best.

    Args:
        boxes: ``[B, A, 4]`` keyframe boxes (the middle frame of each tubelet) in input pixels.
        probs: ``[B, A, C]`` class probabilities.

    Returns:
        ``B`` :class:`KeyframeDetections`, rows sorted by decreasing score.
    """
    B, A, C = probs.shape  # noqa: N806
    boxes = valid_tubes(boxes.float(), width=width, height=height)  # [B, A, 4]
    per_class_boxes = boxes[:, None].expand(B, C, A, 4)  # [B, C, A, 4]
    per_class_scores = probs.float().transpose(1, 2)  # [B, C, A]
    keep = batched_nms_plus_one(per_class_boxes, per_class_scores, per_class_scores > conf_thresh, nms_thresh)
    scale = boxes.new_tensor([width, height, width, height])
    out: list[KeyframeDetections] = []
    for b in range(B):  # per clip: gather the kept (class, tube) pairs
        cls, tube = torch.nonzero(keep[b], as_tuple=True)
        scores = per_class_scores[b, cls, tube]
        order = scores.argsort(descending=True, stable=True)[:top_n]
        out.append(KeyframeDetections(
            boxes=(boxes[b, tube[order]] / scale).double().cpu().numpy().reshape(-1, 4),
            labels=cls[order].cpu().numpy().astype(np.int64),
            scores=scores[order].double().cpu().numpy(),
        ))
    return out


def demo_postprocess(
    boxes: torch.Tensor,
    probs: torch.Tensor,
    *,
    width: float,
    height: float,
    conf_thresh: float = 0.4,
    nms_thresh: float = 0.4,
    top_n: int = 300,
    merge_thresh: float = 0.8,
) -> KeyframeDetections:
    """STEP's ``demo.py`` rule for one keyframe: :func:`postprocess_keyframes` at ``conf_thresh`` 0.4, then a
    greedy cross-class merge.

    Walking the score-sorted detections, every later detection whose (continuous) box IoU with the current one is
    ``> merge_thresh`` is absorbed; the group's box is the mean of its members' boxes and every member's label and
    score is kept.

    Args:
        boxes: ``[A, 4]`` keyframe boxes in input pixels.
        probs: ``[A, C]`` probabilities.

    Returns:
        :class:`KeyframeDetections`, one row per (group, member label), groups in order of their best score and
        every row of a group carrying the group's mean box (normalized).
    """
    dets = postprocess_keyframes(boxes[None], probs[None], width=width, height=height, conf_thresh=conf_thresh,
                                 nms_thresh=nms_thresh, top_n=top_n)[0]
    n = len(dets)
    if n == 0:
        return dets
    iou = box_iou(dets.boxes, dets.boxes, plus_one=False)  # [n, n]
    absorbed = np.zeros(n, bool)
    out_boxes, out_labels, out_scores = [], [], []
    for i in range(n):  # greedy over the sorted detections
        if absorbed[i]:
            continue
        members = [i] + [j for j in range(i + 1, n) if not absorbed[j] and iou[i, j] > merge_thresh]
        absorbed[members] = True
        mean_box = dets.boxes[members].mean(axis=0)
        for j in members:
            out_boxes.append(mean_box)
            out_labels.append(dets.labels[j])
            out_scores.append(dets.scores[j])
    return KeyframeDetections(boxes=np.asarray(out_boxes, np.float64).reshape(-1, 4),
                              labels=np.asarray(out_labels, np.int64), scores=np.asarray(out_scores, np.float64))


# --------------------------------------------------------------------------------------------------------------
# Schedule (STEP.md §5 "Optimiser and schedule")


def warmup_cosine_factor(iteration: int, *, warmup_iters: int, total_iters: int) -> float:
    """STEP's ``WarmupCosineLR`` factor of the base lr at ``iteration`` (stepped before each forward pass).

    ``0.1*(1 - i/w) + i/w`` for ``i < w``, then ``(1 + cos(pi*(i - w)/(total - w)))/2``, 0 from ``total`` on.
    """
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        return 0.1 * (1 - alpha) + alpha
    if total_iters <= warmup_iters or iteration >= total_iters:
        return 0.0 if iteration >= total_iters else 1.0
    return (1 + math.cos(math.pi * (iteration - warmup_iters) / (total_iters - warmup_iters))) / 2
