"""Soft NMS of boxes and K-frame tubelets, tube NMS and the spatio-temporal IoU (ACT protocol).

The rules are those of PROTOCOLS.md §A, read from the public ACT release and MOC-Detector's copy
of it (``ACT_utils.py``: ``nms2d``, ``nms_tubelets``, ``iou3dt``, ``nms3dt``). No code was copied;
everything here is vectorized over many groups at once.

Boxes are ``x1, y1, x2, y2`` pixels and every IoU in this module uses the ACT inclusive "+1"
areas, ``(x2 - x1 + 1) * (y2 - y1 + 1)`` (``stad.boxes`` with ``plus_one=True``).

Both soft NMS variants are the same greedy procedure:

    queue = boxes by descending score
    while queue:
        take the first box p (it keeps weight 1)
        every other queued box b with overlap(p, b) > threshold gets weight 1 - overlap and leaves
        boxes with overlap <= threshold stay in the queue
    new score = score * weight

A box is therefore *picked* exactly when no picked box before it overlaps it, and a suppressed
box takes its weight from the first picked box (in queue order) that overlaps it. This
characterisation lets all groups be decided together (``_greedy_soft_nms``): a few vectorized
rounds in which every group picks its next box (dense clusters collapse), then the rest on the
sparse graph of overlapping pairs, found by a sweep over ``x1`` (``_sweep_pairs``). Results are
identical to the queue loop (tests compare them on random inputs), with no Python loop per group.

Ties. The reference orders scores with ``np.argsort`` (NumPy's unstable quicksort; on recent
NumPy a SIMD sort on some CPUs), so its order among *equal* scores is an implementation artefact.
Here equal scores are always broken by input order: the earlier row (or tube) comes first.
Sums of per-frame IoUs are accumulated frame by frame in order, as the reference's ``sum([...])``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from stad.boxes import box_iou_paired
from stad.errors import StadError
from stad.structures import Tube

_UNDECIDED, _PICKED, _SUPPRESSED = 0, 1, 2
# Ragged work arrays are processed in chunks of at most this many elements (bounds memory).
_CHUNK = 1 << 22
# The pick rounds of the soft NMS stop when a round suppresses less than this fraction of the
# boxes it compared; the graph stage solves the rest (see _greedy_soft_nms).
_MIN_ROUND_FRACTION = 0.25


@dataclass
class TubeletNMSResult:
    """Output of the tubelet soft NMS.

    Attributes:
        keep: ``(M,)`` int64 indices into the input tubelets, by group and then by descending new score.
        scores: ``(M,)`` float64 new scores ``score * weight`` of the kept tubelets (may be negative).
    """

    keep: np.ndarray
    scores: np.ndarray


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _check_threshold(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise StadError(f"{name} must be in [0, 1), got {value}")
    return value


def _as_boxes(boxes: np.ndarray, name: str, ndim: int) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != ndim or boxes.shape[-1] != 4:
        want = "[N, 4]" if ndim == 2 else "[N, K, 4]"
        raise StadError(f"{name} must have shape {want}, got {boxes.shape}")
    if not np.isfinite(boxes).all():
        bad = np.argwhere(~np.isfinite(boxes))[0]
        raise StadError(f"{name} must be finite, got {boxes[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    return boxes


def _as_scores(scores: np.ndarray, n: int, name: str = "scores") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise StadError(f"{name} must have shape [{n}], got {scores.shape}")
    if not np.isfinite(scores).all():
        i = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise StadError(f"{name} must be finite, got {scores[i]} at index {i}")
    return scores


def _as_groups(groups: np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        return np.zeros(n, np.int64)
    groups = np.asarray(groups)
    if groups.shape != (n,) or (n and not np.issubdtype(groups.dtype, np.integer)):
        raise StadError(f"groups must be an integer array of shape [{n}], got {groups.dtype} {groups.shape}")
    return groups.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------------------------
# The greedy soft NMS on a sparse overlap graph
# ----------------------------------------------------------------------------------------------


def _ragged_arange(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``counts`` ``(n,)`` -> ``owner``, ``offset`` ``(sum(counts),)``: i repeated counts[i] times; 0, 1, .. within."""
    owner = np.repeat(np.arange(len(counts)), counts)
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, offset


def _sweep_pairs(
    x1: np.ndarray, x2: np.ndarray, group_rank: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs ``(i, j)`` of boxes of one group whose +1 IoU may exceed ``threshold`` (a superset).

    For boxes a, b with ``x1_a <= x1_b`` and widths ``w = x2 - x1 + 1``: ``IoU > t`` needs an overlap
    ``iw > t * w_a`` (because ``union >= area_a`` and ``ih <= h_a``) and ``iw <= w_a - (x1_b - x1_a)``,
    hence ``x1_b - x1_a < (1 - t) * w_a``. A sweep over ``x1`` sorted within groups finds these pairs.

    Args:
        x1, x2: ``(n,)`` box coordinates.
        group_rank: ``(n,)`` int, dense group index (pairs never cross groups).
        threshold: IoU threshold in [0, 1).

    Returns:
        ``i, j`` ``(P,)`` int64 indices, each unordered pair at most once.
    """
    n = len(x1)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    reach = np.clip((1.0 - threshold) * (x2 - x1 + 1.0), 0.0, None)  # [n]
    x0 = x1.min()
    span = (x1.max() - x0) + reach.max() + 1.0  # groups are laid out on disjoint intervals
    key = (x1 - x0) + group_rank * span  # [n]
    perm = np.argsort(key, kind="stable")
    key_sorted = key[perm]
    eps = 1e-12 * (np.abs(key_sorted).max() + 1.0) + 1e-9  # absorbs rounding of `key`; superset only
    end = np.searchsorted(key_sorted, key_sorted + reach[perm] + eps, side="right")
    counts = np.maximum(end - np.arange(n) - 1, 0)
    first, offset = _ragged_arange(counts)
    return perm[first], perm[first + 1 + offset]


def _graph_suppressors(num: int, hi: np.ndarray, lo: np.ndarray, suppressor: np.ndarray) -> None:
    """Greedy soft-NMS decisions on the sparse graph of pairs that overlap more than the threshold.

    Boxes are numbered by priority (0 first) and edges never cross groups, so all groups are
    solved together. A box is decided once the first of its higher-priority neighbours that is not
    suppressed is known: if it is picked, the box is suppressed by it; if no such neighbour exists,
    the box is picked. Every round decides at least the first undecided box of each group.

    Args:
        num: number of boxes.
        hi, lo: ``(E,)`` int edges with ``hi < lo`` (hi has the higher priority).
        suppressor: ``(num,)`` int64, written in place for the boxes that are suppressed.
    """
    key = np.sort(lo * num + hi)  # edges by suppressed box, then by suppressor priority
    hi, lo = key % num, key // num
    state = np.full(num, _UNDECIDED, np.int8)
    while lo.size:
        alive = (state[lo] == _UNDECIDED) & (state[hi] != _SUPPRESSED)
        hi, lo = hi[alive], lo[alive]
        waiting = np.zeros(num, bool)
        waiting[lo] = True
        state[(state == _UNDECIDED) & ~waiting] = _PICKED
        if lo.size == 0:
            return
        first = np.ones(lo.size, bool)
        first[1:] = lo[1:] != lo[:-1]
        h, l = hi[first], lo[first]
        hit = state[h] == _PICKED
        state[l[hit]] = _SUPPRESSED
        suppressor[l[hit]] = h[hit]


def _greedy_soft_nms(
    num: int,
    rank: np.ndarray,
    overlap: Callable[[np.ndarray, np.ndarray], np.ndarray],
    threshold: float,
    candidate_pairs: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    max_picks: np.ndarray | None = None,
) -> np.ndarray:
    """Weights of the greedy soft NMS of boxes numbered by priority, within groups.

    Two exact stages. First, rounds in which every group picks its first undecided box and
    compares it with all its other undecided boxes: cheap when clusters collapse after a few picks.
    When a round suppresses less than a quarter of the boxes it compared (mostly isolated boxes
    left), the rest is solved on the sparse graph of its overlapping pairs (``_graph_suppressors``);
    the remaining problem is the same greedy NMS restricted to the undecided boxes.

    Args:
        num: number of boxes, in priority order (position 0 first within each group).
        rank: ``(num,)`` int dense group index, non-decreasing.
        overlap: ``overlap(i, j) -> (P,)`` overlap of boxes ``i[p]`` and ``j[p]`` (symmetric).
        threshold: a box is suppressed when its overlap with a picked box is > threshold.
        candidate_pairs: ``candidate_pairs(subset) -> (i, j)``, a superset of the pairs of boxes of
            ``subset`` (same group) whose overlap may exceed the threshold.
        max_picks: optional ``(G,)`` per group: once a group has picked that many boxes its other
            boxes are left undecided with weight 1 (for a top-k that only the picks can fill).

    Returns:
        ``(num,)`` float64 weights: 1 for picked (and left) boxes, ``1 - overlap`` with the
        suppressor otherwise.
    """
    suppressor = np.full(num, -1, np.int64)
    undecided = np.arange(num)
    picks = np.zeros(int(rank[-1]) + 1 if num else 0, np.int64)  # [G] picks so far
    while undecided.size:
        g = rank[undecided]
        first = np.ones(undecided.size, bool)
        first[1:] = g[1:] != g[:-1]
        pick_of = undecided[first][np.cumsum(first) - 1]  # [U] the pick of each box's group
        others, by = undecided[~first], pick_of[~first]
        hit = _chunked(overlap, by, others) > threshold
        suppressor[others[hit]] = by[hit]
        left = others[~hit]
        if max_picks is not None:
            picks[g[first]] += 1
            left = left[picks[rank[left]] < max_picks[rank[left]]]
        undecided = left
        if hit.sum() < _MIN_ROUND_FRACTION * hit.size:  # clusters no longer collapse
            break
    if undecided.size:
        i, j = candidate_pairs(undecided)
        ov = _chunked(overlap, i, j)
        edge = ov > threshold
        i, j = i[edge], j[edge]
        _graph_suppressors(num, np.minimum(i, j), np.maximum(i, j), suppressor)
    weight = np.ones(num, np.float64)
    suppressed = np.flatnonzero(suppressor >= 0)
    weight[suppressed] = 1.0 - _chunked(overlap, suppressor[suppressed], suppressed)
    return weight


def _chunked(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``fn(i, j)`` evaluated in chunks of ``_CHUNK // 8`` pairs (bounds temporary memory)."""
    step = _CHUNK // 8
    if len(i) <= step:
        return fn(i, j)
    return np.concatenate([fn(i[s : s + step], j[s : s + step]) for s in range(0, len(i), step)])


def _sweep_subset(
    boxes: np.ndarray, rank: np.ndarray, threshold: float, subset: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``_sweep_pairs`` among ``subset`` of ``(n, 4)`` boxes; returns global positions."""
    i, j = _sweep_pairs(boxes[subset, 0], boxes[subset, 2], rank[subset], threshold)
    return subset[i], subset[j]


def _priority(scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by group, then descending score, then row; returns ``order`` and the dense group rank (sorted).

    Built from unstable (SIMD) argsorts on unique keys, which are several times faster than
    ``np.lexsort``; a stable sort is used only when scores tie.
    """
    n = len(scores)
    by_group = np.argsort(groups)
    sorted_groups = groups[by_group]
    dense = np.empty(n, np.int64)
    dense[by_group] = np.cumsum(np.r_[False, sorted_groups[1:] != sorted_groups[:-1]])
    by_score = np.argsort(-scores)
    if n > 1 and (np.diff(scores[by_score]) == 0).any():
        by_score = np.argsort(-scores, kind="stable")
    score_pos = np.empty(n, np.int64)
    score_pos[by_score] = np.arange(n)
    order = np.argsort(dense * n + score_pos)  # unique keys: deterministic
    return order, dense[order]


# ----------------------------------------------------------------------------------------------
# Per-frame box soft NMS (tubelets -> frame detections)
# ----------------------------------------------------------------------------------------------


def batched_frame_soft_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None, threshold: float = 0.6
) -> np.ndarray:
    """The ACT per-frame soft NMS (``nms2d``), independently within each group.

    Repeatedly take the best remaining box; every other remaining box with IoU > ``threshold`` gets
    weight ``1 - IoU`` and leaves the queue; boxes with IoU <= ``threshold`` stay. No box is removed.

    Args:
        boxes: ``(N, 4)`` ``x1, y1, x2, y2`` pixels (+1 IoU).
        scores: ``(N,)``.
        groups: ``(N,)`` int group of each box (e.g. a (video, frame, class) key); None = one group.
        threshold: IoU threshold in [0, 1), default 0.6 as in ACT/MOC.

    Returns:
        ``(N,)`` float64 new scores ``score * weight`` in input order.
    """
    boxes = _as_boxes(boxes, "boxes", 2)
    scores = _as_scores(scores, len(boxes))
    groups = _as_groups(groups, len(boxes))
    threshold = _check_threshold(threshold, "threshold")
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.float64)
    order, _, new_scores = _frame_soft_nms_sorted(boxes, scores, groups, threshold)
    out = np.empty(n, np.float64)
    out[order] = new_scores
    return out


def _frame_soft_nms_sorted(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``batched_frame_soft_nms`` on checked input, in priority order: ``order``, dense group rank, new scores."""
    order, rank = _priority(scores, groups)
    b = boxes[order]  # [N, 4] in priority order
    weight = _greedy_soft_nms(
        len(b),
        rank,
        lambda i, j: box_iou_paired(b[i], b[j], plus_one=True),
        threshold,
        lambda subset: _sweep_subset(b, rank, threshold, subset),
    )
    return order, rank, scores[order] * weight


def frame_soft_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = 0.6) -> np.ndarray:
    """The ACT per-frame soft NMS of one group of boxes; see ``batched_frame_soft_nms``.

    Args:
        boxes: ``(N, 4)`` ``x1, y1, x2, y2`` pixels (+1 IoU).
        scores: ``(N,)``.
        threshold: IoU threshold in [0, 1), default 0.6.

    Returns:
        ``(N,)`` new scores in input order.
    """
    return batched_frame_soft_nms(boxes, scores, None, threshold)


# ----------------------------------------------------------------------------------------------
# Tubelet soft NMS (the tube builder's per-window rule)
# ----------------------------------------------------------------------------------------------


def batched_tubelet_soft_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    threshold_per_frame: float = 0.6,
    top_k: int | None = 10,
) -> TubeletNMSResult:
    """MOC/ACT ``nms_tubelets`` within each group: soft NMS on summed per-frame IoUs, then top-k.

    The overlap of two K-frame tubelets is the *sum* of their K per-frame IoUs; a queued tubelet is
    suppressed when that sum is > ``threshold_per_frame * K`` and then gets weight ``1 - sum``,
    which is negative for K >= 2 (a quirk of the reference, kept: suppressed tubelets get negative
    scores and rank after all picked ones, but still fill the top-k when fewer are picked). The
    tubelets are then sorted by descending new score and the first ``top_k`` of each group kept.

    Args:
        boxes: ``(N, K, 4)`` ``x1, y1, x2, y2`` pixels per frame (+1 IoU).
        scores: ``(N,)``.
        groups: ``(N,)`` int group (e.g. a (video, start frame, class) key); None = one group.
        threshold_per_frame: in [0, 1), default 0.6.
        top_k: tubelets kept per group (default 10); None keeps all.

    Returns:
        ``TubeletNMSResult``: ``keep`` indices ordered by group, then descending new score (ties:
        priority order), and their new scores.
    """
    boxes = _as_boxes(boxes, "boxes", 3)
    n, K = boxes.shape[0], boxes.shape[1]
    scores = _as_scores(scores, n)
    groups = _as_groups(groups, n)
    threshold = _check_threshold(threshold_per_frame, "threshold_per_frame")
    if top_k is not None and top_k < 1:
        raise StadError(f"top_k must be >= 1 or None, got {top_k}")
    if n == 0 or K == 0:
        return TubeletNMSResult(keep=np.zeros(0, np.int64), scores=np.zeros(0, np.float64))
    order, rank = _priority(scores, groups)
    b = boxes[order]  # [N, K, 4] in priority order

    def summed_iou(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        iou = box_iou_paired(b[i], b[j], plus_one=True)  # [P, K]
        total = iou[:, 0].copy()
        for k in range(1, K):  # frame by frame, like the reference's sum([...])
            total += iou[:, k]
        return total

    def candidate_pairs(subset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Summed IoU > t*K needs IoU > t on at least one frame: union of the per-frame sweeps.
        pairs = (_sweep_subset(b[:, k], rank, threshold, subset) for k in range(K))
        keys = np.concatenate([i * n + j for i, j in pairs])
        keys.sort()
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if keys.size else keys
        return keys // n, keys % n

    # Shortcut, exact for the top-k: with threshold * K >= 1 a suppressed tubelet gets weight < 0,
    # so in a group of positive scores the first top_k picks are its top_k; the rest can wait.
    max_picks = None
    if top_k is not None and threshold * K >= 1:
        n_groups = int(rank[-1]) + 1
        positive = np.ones(n_groups, bool)
        positive[rank[scores[order] <= 0]] = False
        max_picks = np.where(positive, top_k, n)
    weight = _greedy_soft_nms(n, rank, summed_iou, threshold * K, candidate_pairs, max_picks)
    new_scores = scores[order] * weight  # [N] in priority order
    final, _ = _priority(new_scores, rank)  # by group, new score, priority
    if top_k is not None:
        g = rank[final]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        within = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        final = final[within < top_k]
    return TubeletNMSResult(keep=order[final].astype(np.int64), scores=new_scores[final])


def tubelet_soft_nms(
    boxes: np.ndarray, scores: np.ndarray, *, threshold_per_frame: float = 0.6, top_k: int | None = 10
) -> TubeletNMSResult:
    """MOC/ACT tubelet soft NMS of one group (one start frame, one class); see ``batched_tubelet_soft_nms``.

    Args:
        boxes: ``(N, K, 4)`` ``x1, y1, x2, y2`` pixels (+1 IoU).
        scores: ``(N,)``.
        threshold_per_frame: in [0, 1), default 0.6 (compared with the summed IoU against 0.6 * K).
        top_k: tubelets kept (default 10); None keeps all.

    Returns:
        ``TubeletNMSResult`` with ``keep`` by descending new score and the new scores.
    """
    return batched_tubelet_soft_nms(boxes, scores, None, threshold_per_frame=threshold_per_frame, top_k=top_k)


# ----------------------------------------------------------------------------------------------
# Spatio-temporal IoU and tube NMS
# ----------------------------------------------------------------------------------------------


def _check_tube(tube: np.ndarray, name: str) -> np.ndarray:
    tube = np.asarray(tube, dtype=np.float64)
    if tube.ndim != 2 or tube.shape[1] < 5:
        raise StadError(f"{name} must have shape [L, >=5] (frame, x1, y1, x2, y2, ...), got {tube.shape}")
    if len(tube) > 1 and not np.all(np.diff(tube[:, 0]) == 1):
        raise StadError(f"{name} must be on consecutive increasing frames, got frames {tube[:, 0].tolist()[:10]}...")
    return tube


def spatiotemporal_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Spatio-temporal IoU of two tubes (ACT ``iou3dt``).

    Temporal IoU over the inclusive frame spans, times the mean per-frame +1 IoU over the frames of
    the temporal intersection; 0 when the spans are disjoint or a tube is empty.

    Args:
        a, b: ``(L, >=5)`` rows ``[frame, x1, y1, x2, y2, ...]`` on consecutive frames.

    Returns:
        The ST-IoU in [0, 1].
    """
    a = _check_tube(a, "a")
    b = _check_tube(b, "b")
    if len(a) == 0 or len(b) == 0:
        return 0.0
    lo, hi = max(a[0, 0], b[0, 0]), min(a[-1, 0], b[-1, 0])
    if hi < lo:
        return 0.0
    inter = hi - lo + 1
    union = max(a[-1, 0], b[-1, 0]) - min(a[0, 0], b[0, 0]) + 1
    ia, ib = int(lo - a[0, 0]), int(lo - b[0, 0])
    n = int(inter)
    ious = box_iou_paired(a[ia : ia + n, 1:5], b[ib : ib + n, 1:5], plus_one=True)  # [inter]
    return float(ious.mean() * (inter / union))


def _stack_tubes(tubes: Sequence[np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated boxes ``(sum L, 4)``, row offsets, first and last frames ``(N,)`` of a list of tubes."""
    checked = [_check_tube(t, f"{name}[{i}]") for i, t in enumerate(tubes)]
    lengths = np.array([len(t) for t in checked], np.int64)
    offsets = np.cumsum(lengths) - lengths
    first = np.array([t[0, 0] if len(t) else 0.0 for t in checked], np.float64)
    last = np.array([t[-1, 0] if len(t) else -1.0 for t in checked], np.float64)
    boxes = np.concatenate([t[:, 1:5] for t in checked]) if checked else np.zeros((0, 4))
    return boxes, offsets, first, last


def spatiotemporal_iou_matrix(tubes_a: Sequence[np.ndarray], tubes_b: Sequence[np.ndarray]) -> np.ndarray:
    """Pairwise spatio-temporal IoU (see ``spatiotemporal_iou``) of two lists of tubes.

    Only temporally overlapping pairs cost work: their per-frame IoUs are computed in one
    vectorized pass over all intersection frames (in chunks to bound memory).

    Args:
        tubes_a: ``N`` tubes, each ``(L, >=5)`` ``[frame, x1, y1, x2, y2, ...]`` on consecutive frames.
        tubes_b: ``M`` tubes, same format.

    Returns:
        ``(N, M)`` float64 ST-IoUs.
    """
    boxes_a, off_a, first_a, last_a = _stack_tubes(tubes_a, "tubes_a")
    boxes_b, off_b, first_b, last_b = _stack_tubes(tubes_b, "tubes_b")
    out = np.zeros((len(first_a), len(first_b)), np.float64)
    if out.size == 0:
        return out
    lo = np.maximum(first_a[:, None], first_b[None, :])  # [N, M]
    hi = np.minimum(last_a[:, None], last_b[None, :])
    ia, ib = np.nonzero(hi >= lo)
    if ia.size == 0:
        return out
    inter = (hi[ia, ib] - lo[ia, ib] + 1).astype(np.int64)  # [P]
    union = np.maximum(last_a[ia], last_b[ib]) - np.minimum(first_a[ia], first_b[ib]) + 1
    start_a = off_a[ia] + (lo[ia, ib] - first_a[ia]).astype(np.int64)
    start_b = off_b[ib] + (lo[ia, ib] - first_b[ib]).astype(np.int64)
    sums = np.zeros(len(ia), np.float64)
    ends = np.cumsum(inter)
    s = 0
    while s < len(ia):  # chunks of pairs with at most _CHUNK frames in all (at least one pair)
        e = max(int(np.searchsorted(ends, ends[s] - inter[s] + _CHUNK, side="right")), s + 1)
        pair, k = _ragged_arange(inter[s:e])
        ious = box_iou_paired(boxes_a[start_a[s:e][pair] + k], boxes_b[start_b[s:e][pair] + k], plus_one=True)
        sums[s:e] = np.bincount(pair, weights=ious, minlength=e - s)
        s = e
    out[ia, ib] = (sums / inter) * (inter / union)
    return out


def tube_nms(tubes: Sequence[Tube], threshold: float = 0.3) -> list[Tube]:
    """Greedy tube NMS (ACT ``nms3dt``), within each label.

    Tubes are visited by descending tube score (ties: input order); a tube is removed when its
    spatio-temporal IoU with an already kept tube of the same label is > ``threshold``. The video-AP
    protocol applies it per video and class at 0.3; pass the tubes of one video.

    Args:
        tubes: detected tubes (``Tube.boxes`` ``(L, 6)`` on consecutive frames).
        threshold: ST-IoU threshold, default 0.3.

    Returns:
        The kept tubes (the same objects) by descending score.
    """
    tubes = list(tubes)
    scores = np.array([float(t.score) for t in tubes], np.float64)
    labels = np.array([int(t.label) for t in tubes], np.int64)
    keep = np.zeros(len(tubes), bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        iou = spatiotemporal_iou_matrix([tubes[i].boxes for i in idx], [tubes[i].boxes for i in idx])  # [n, n]
        removed = np.zeros(len(idx), bool)
        for p in range(len(idx)):
            if removed[p]:
                continue
            keep[idx[p]] = True
            removed |= iou[p] > threshold
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(-scores[kept], kind="stable")]
    return [tubes[i] for i in kept]
