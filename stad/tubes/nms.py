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
In the two soft NMS variants equal scores are broken by input order: the earlier row comes first.
Sums of per-frame IoUs are accumulated frame by frame in order, as the reference's ``sum([...])``.
The tube NMS (``batched_tube_nms``, ``tube_nms``) instead visits tubes exactly as the reference's
``nms3dt`` does, ties included (reverse of ``np.argsort`` of each group's scores), because the
video-mAP of ``stad.eval.video_map`` must reproduce the reference's numbers.

Spatio-temporal IoU: ``TubeTable`` + ``spatiotemporal_iou_pairs`` is the single implementation
used by ``stad.tubes`` and ``stad.eval``; ``spatiotemporal_iou_matrix`` and ``spatiotemporal_iou``
wrap it.
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
# Per-frame IoUs of tube pairs computed at once in spatiotemporal_iou_pairs (~200 MB of temporaries).
_CHUNK_FRAMES = 2_000_000
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
# ----------------------------------------------------------------------------------------------


@dataclass
class TubeTable:
    """Tubes concatenated for vectorized spatio-temporal IoU (the one implementation in ``stad``).

    Tube ``i`` has frames ``start[i] .. end[i]`` in rows ``offset[i] ..`` of the box columns, which
    are stored ready for the "+1" IoU: ``x1``, ``y1``, ``x2p = x2 + 1``, ``y2p = y2 + 1`` and
    ``area = (x2 - x1 + 1) * (y2 - y1 + 1)`` (float64, ``[sum L]`` each). An empty tube has
    ``start = 0``, ``end = -1`` and overlaps nothing.
    """

    start: np.ndarray  # [N] int64
    end: np.ndarray  # [N] int64
    offset: np.ndarray  # [N] int64
    x1: np.ndarray  # [sum L] float64
    y1: np.ndarray
    x2p: np.ndarray
    y2p: np.ndarray
    area: np.ndarray

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @classmethod
    def build(
        cls,
        tubes: Sequence[np.ndarray],
        *,
        name_of: Callable[[int], str] | None = None,
        allow_empty: bool = True,
    ) -> "TubeTable":
        """Concatenate ``(L, >=5)`` tubes ``[frame, x1, y1, x2, y2, ...]`` (extra columns are ignored).

        Args:
            tubes: ``N`` arrays on consecutive increasing frames.
            name_of: ``name_of(i)`` names tube ``i`` in error messages (built only on error);
                default ``"tube {i}"``.
            allow_empty: accept tubes with no rows (they overlap nothing).

        Raises:
            StadError: a tube that is not 2-D with >= 5 columns, has no rows (unless allowed), or
                whose frames are not consecutive and increasing.
        """
        where = name_of if name_of is not None else (lambda i: f"tube {i}")
        arrays = [np.asarray(t) for t in tubes]
        for i, arr in enumerate(arrays):
            if arr.ndim != 2 or arr.shape[1] < 5:
                raise StadError(f"{where(i)} must have shape [L, >=5] (rows frame, x1, y1, x2, y2, ...), got {arr.shape}")
            if arr.shape[0] == 0 and not allow_empty:
                raise StadError(f"{where(i)} has no rows: a tube needs at least one frame")
        if not arrays:
            z = np.zeros(0, np.int64)
            return cls(z, z, z, *(np.zeros(0) for _ in range(5)))
        lens = np.array([a.shape[0] for a in arrays], np.int64)
        offset = np.r_[0, np.cumsum(lens)[:-1]].astype(np.int64)
        rows = np.concatenate([a[:, :5] for a in arrays]).astype(np.float64)  # [sum L, 5]
        frames = rows[:, 0]
        nonempty = lens > 0
        start = np.zeros(len(arrays), np.int64)
        end = np.full(len(arrays), -1, np.int64)
        start[nonempty] = frames[offset[nonempty]].astype(np.int64)
        end[nonempty] = frames[offset[nonempty] + lens[nonempty] - 1].astype(np.int64)
        expected = np.repeat(start - offset, lens) + np.arange(frames.shape[0])  # consecutive frames
        if (frames != expected).any():
            # the tube owning the first bad row: the last one starting at or before it (empty tubes
            # share their offset with the next tube, so they are never picked)
            i = int(np.searchsorted(offset, int(np.flatnonzero(frames != expected)[0]), side="right") - 1)
            raise StadError(
                f"{where(i)}: frames must be consecutive and increasing, got {arrays[i][:10, 0].tolist()}"
                f"{' ...' if len(arrays[i]) > 10 else ''}"
            )
        x1, y1 = np.ascontiguousarray(rows[:, 1]), np.ascontiguousarray(rows[:, 2])
        x2p, y2p = rows[:, 3] + 1.0, rows[:, 4] + 1.0
        area = (rows[:, 3] - x1 + 1.0) * (rows[:, 4] - y1 + 1.0)  # the reference's operation order
        return cls(start, end, offset, x1, y1, x2p, y2p, area)


def spatiotemporal_iou_pairs(a: TubeTable, ia: np.ndarray, b: TubeTable, ib: np.ndarray) -> np.ndarray:
    """ACT spatio-temporal IoU (``iou3dt``, "+1" boxes) of the tube pairs ``(a[ia[p]], b[ib[p]])``.

    Temporal IoU of the inclusive frame spans, ``(min end - max start + 1) / (max end - min start + 1)``,
    times the mean per-frame IoU over the frames of the temporal intersection; 0 when the spans are
    disjoint. Vectorized over pairs and frames (in chunks of pairs that bound memory). The per-frame
    IoUs of a pair are summed with ``np.add.reduceat``, i.e. first value plus NumPy's pairwise sum of
    the rest: it can differ from the reference's ``np.mean`` in the last bit.

    Args:
        a, b: tube tables (``TubeTable.build``).
        ia: ``(P,)`` int indices into ``a``.
        ib: ``(P,)`` int indices into ``b``.

    Returns:
        ``(P,)`` float64 ST-IoUs in [0, 1].
    """
    ia = np.asarray(ia, np.int64)
    ib = np.asarray(ib, np.int64)
    out = np.zeros(ia.shape[0])
    if ia.size == 0:
        return out
    tmin = np.maximum(a.start[ia], b.start[ib])
    tmax = np.minimum(a.end[ia], b.end[ib])
    inter = tmax - tmin + 1  # [P]
    union_t = np.maximum(a.end[ia], b.end[ib]) - np.minimum(a.start[ia], b.start[ib]) + 1
    nz = np.flatnonzero(inter > 0)
    if nz.size == 0:
        return out
    cum = np.cumsum(inter[nz])
    bounds = np.searchsorted(cum, np.arange(0, cum[-1], _CHUNK_FRAMES), side="right")
    bounds = np.unique(np.r_[0, bounds, nz.size])
    for lo, hi in zip(bounds[:-1], bounds[1:]):  # chunks of pairs, to bound memory
        sel = nz[lo:hi]
        lens = inter[sel]
        first = np.r_[0, np.cumsum(lens)[:-1]]
        pair = np.repeat(np.arange(sel.size), lens)  # [F] pair of each frame
        step = np.arange(int(lens.sum())) - first[pair]  # [F] frame offset inside the intersection
        ra = (a.offset[ia[sel]] + tmin[sel] - a.start[ia[sel]])[pair] + step  # [F] rows of a
        rb = (b.offset[ib[sel]] + tmin[sel] - b.start[ib[sel]])[pair] + step  # [F] rows of b
        # per-frame IoU as the reference writes it: min(x2a + 1, x2b + 1) - max(x1a, x1b), clipped at 0
        iw = np.minimum(a.x2p[ra], b.x2p[rb])
        iw -= np.maximum(a.x1[ra], b.x1[rb])
        np.maximum(iw, 0.0, out=iw)
        ih = np.minimum(a.y2p[ra], b.y2p[rb])
        ih -= np.maximum(a.y1[ra], b.y1[rb])
        np.maximum(ih, 0.0, out=ih)
        iw *= ih  # [F] intersection
        union = a.area[ra] + b.area[rb] - iw
        with np.errstate(divide="ignore", invalid="ignore"):
            ious = np.where(union > 0, iw / union, 0.0)  # [F]
        out[sel] = np.add.reduceat(ious, first) / lens * (lens / union_t[sel])
    return out


def spatiotemporal_iou_matrix(tubes_a: Sequence[np.ndarray], tubes_b: Sequence[np.ndarray]) -> np.ndarray:
    """Pairwise spatio-temporal IoU (``spatiotemporal_iou_pairs``) of two lists of tubes.

    Only temporally overlapping pairs cost per-frame work.

    Args:
        tubes_a: ``N`` tubes, each ``(L, >=5)`` ``[frame, x1, y1, x2, y2, ...]`` on consecutive frames.
        tubes_b: ``M`` tubes, same format.

    Returns:
        ``(N, M)`` float64 ST-IoUs.
    """
    a = TubeTable.build(tubes_a, name_of=lambda i: f"tubes_a[{i}]")
    b = TubeTable.build(tubes_b, name_of=lambda i: f"tubes_b[{i}]")
    out = np.zeros((len(a), len(b)), np.float64)
    if out.size == 0:
        return out
    overlap = np.minimum(a.end[:, None], b.end[None, :]) >= np.maximum(a.start[:, None], b.start[None, :])  # [N, M]
    ia, ib = np.nonzero(overlap)
    out[ia, ib] = spatiotemporal_iou_pairs(a, ia, b, ib)
    return out


def spatiotemporal_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Spatio-temporal IoU of two tubes (ACT ``iou3dt``); see ``spatiotemporal_iou_pairs``.

    Args:
        a, b: ``(L, >=5)`` rows ``[frame, x1, y1, x2, y2, ...]`` on consecutive frames.

    Returns:
        The ST-IoU in [0, 1]; 0 when the spans are disjoint or a tube is empty.
    """
    ta = TubeTable.build([a], name_of=lambda _: "a")
    tb = TubeTable.build([b], name_of=lambda _: "b")
    return float(spatiotemporal_iou_pairs(ta, np.zeros(1, np.int64), tb, np.zeros(1, np.int64))[0])


def _pairs_within_groups(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)`` of distinct items sharing a group id, each unordered pair once."""
    order = np.argsort(group, kind="stable")
    g = group[order]
    first = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1] if g.size else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[first, g.size])
    ii, jj = [], []
    for n in np.unique(sizes):  # loop over distinct group sizes
        if n < 2:
            continue
        ti, tj = np.triu_indices(int(n), 1)
        starts = first[sizes == n]
        ii.append((starts[:, None] + ti[None, :]).ravel())
        jj.append((starts[:, None] + tj[None, :]).ravel())
    if not ii:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return order[np.concatenate(ii)], order[np.concatenate(jj)]


def batched_tube_nms(table: TubeTable, groups: np.ndarray, scores: np.ndarray, threshold: float = 0.3) -> np.ndarray:
    """Greedy tube NMS (ACT ``nms3dt``) independently in every group, all groups at once.

    Visiting order (the reference's, ties included): per group, the *reverse* of
    ``np.argsort(scores_of_the_group)``, where the group's scores are taken in input order and
    sorted in their own dtype with NumPy's default (unstable) sort. Among equal scores the order is
    therefore whatever that sort gives for that array, as in the reference (e.g. for short arrays
    often the last input first); pass the scores in the dtype the reference had (float32 for tube
    files) to reproduce it. A tube is kept unless a kept tube visited before it has ST-IoU
    ``> threshold`` with it.

    Only pairs whose *temporal* IoU exceeds the threshold (ST-IoU <= temporal IoU) and whose spatial
    hulls intersect get the per-frame computation. The greedy pass runs in rounds over the visiting
    rank (at most the largest group size), vectorized over groups.

    Args:
        table: the ``N`` tubes (``TubeTable.build``).
        groups: ``(N,)`` int group of each tube (e.g. a (video, class) key).
        scores: ``(N,)`` tube scores.
        threshold: ST-IoU threshold, default 0.3 (the video-AP protocol).

    Returns:
        ``(K,)`` int64 indices of the kept tubes, by group and then visiting order.
    """
    groups = np.asarray(groups)
    scores = np.asarray(scores)
    n = len(table)
    if groups.shape != (n,) or scores.shape != (n,):
        raise StadError(f"groups and scores must have shape [{n}], got {groups.shape} and {scores.shape}")
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(groups, kind="stable")
    g_sorted = groups[order]
    starts = np.r_[0, np.flatnonzero(g_sorted[1:] != g_sorted[:-1]) + 1]
    ends = np.r_[starts[1:], n]
    rank = np.empty(n, np.int64)  # visiting rank of each tube inside its group (0 first)
    for s, e in zip(starts.tolist(), ends.tolist()):  # loop over groups: the reference's per-group argsort
        members = order[s:e]
        visit = members[np.argsort(scores[members])[::-1]]
        rank[visit] = np.arange(e - s)
    pi, pj = _pairs_within_groups(groups)
    t_inter = np.minimum(table.end[pi], table.end[pj]) - np.maximum(table.start[pi], table.start[pj]) + 1
    t_union = np.maximum(table.end[pi], table.end[pj]) - np.minimum(table.start[pi], table.start[pj]) + 1
    maybe = np.flatnonzero((t_inter > 0) & (t_inter / t_union > threshold))
    if maybe.size:
        # pairs whose spatial hulls (over the whole tubes) are disjoint have ST-IoU 0: no conflict
        at = np.minimum(table.offset, table.x1.shape[0] - 1)  # empty tubes never reach here
        hx1, hy1 = np.minimum.reduceat(table.x1, at), np.minimum.reduceat(table.y1, at)
        hx2, hy2 = np.maximum.reduceat(table.x2p, at), np.maximum.reduceat(table.y2p, at)
        a, b = pi[maybe], pj[maybe]
        overlap = (np.minimum(hx2[a], hx2[b]) > np.maximum(hx1[a], hx1[b])) & (
            np.minimum(hy2[a], hy2[b]) > np.maximum(hy1[a], hy1[b])
        )
        maybe = maybe[overlap]
    conflict = maybe[spatiotemporal_iou_pairs(table, pi[maybe], table, pj[maybe]) > threshold]
    # directed edges from the earlier-visited tube to the later one
    a, b = pi[conflict], pj[conflict]
    first_is_a = rank[a] < rank[b]
    src = np.where(first_is_a, a, b)
    dst = np.where(first_is_a, b, a)
    suppressed = np.zeros(n, bool)
    kept = np.zeros(n, bool)
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2))
    is_new = np.zeros(n, bool)
    for r in range(len(bounds) - 1):  # rounds over the visiting rank, all groups at once
        now = by_rank[bounds[r] : bounds[r + 1]]
        now = now[~suppressed[now]]
        kept[now] = True
        is_new[now] = True
        suppressed[dst[is_new[src]]] = True
        is_new[now] = False
    out = np.flatnonzero(kept)
    return out[np.lexsort((rank[out], groups[out]))].astype(np.int64)


def tube_nms(tubes: Sequence[Tube], threshold: float = 0.3) -> list[Tube]:
    """Greedy tube NMS (ACT ``nms3dt``) within each label; see ``batched_tube_nms`` for the order.

    The scores are ``np.asarray([t.score for t in tubes])`` (float64 for Python floats, float32 when
    all are ``np.float32``), as the reference's ``np.argsort`` of its list; a tube is removed when its
    ST-IoU with an already kept tube of the same label is ``> threshold``. The video-AP protocol
    applies it per video and class at 0.3; pass the tubes of one video.

    Args:
        tubes: detected tubes (``Tube.boxes`` ``(L, >=5)`` on consecutive frames).
        threshold: ST-IoU threshold, default 0.3.

    Returns:
        The kept tubes (the same objects) by descending score; equal scores by label, then in the
        NMS visiting order.
    """
    tubes = list(tubes)
    if not tubes:
        return []
    table = TubeTable.build([t.boxes for t in tubes], name_of=lambda i: f"tubes[{i}].boxes")
    scores = np.asarray([t.score for t in tubes])
    if scores.dtype.kind not in "fiu":
        raise StadError(f"tube scores must be numbers, got dtype {scores.dtype}")
    labels = np.array([int(t.label) for t in tubes], np.int64)
    kept = batched_tube_nms(table, labels, scores, threshold)
    kept = kept[np.argsort(-scores[kept].astype(np.float64), kind="stable")]
    return [tubes[i] for i in kept]
