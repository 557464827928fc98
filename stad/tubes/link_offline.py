"""Offline tube building from K-frame tubelets: the ACT/MOC linking, vectorized.

Rules (PROTOCOLS.md §A), checked line by line against the public code of MOC-Detector
(``src/ACT_utils/ACT_build.py``, ``BuildTubes``), which keeps ACT's (Kalogeiton et al., ICCV 2017)
linking; no code was copied. Per video and class, for start frames ``t = 1 .. nframes - K + 1``:

1. The tubelets starting at ``t`` get the tubelet soft NMS (summed per-frame IoU > 0.6 K gives
   weight ``1 - sum``, negative for K >= 2) and the 10 best by new score are the candidates,
   in that order (``stad.tubes.nms.batched_tubelet_soft_nms``). Tubes use the *new* scores.
2. Live tubes are sorted by their mean tubelet score (descending; ties keep the current order).
3. Each tube in turn, with ``offset = t - (start of its last tubelet)``, scores every still
   unused candidate by the mean +1 IoU over the ``K - offset`` overlapping frames (candidate frame
   ``k`` against the last tubelet's frame ``k + offset``); when ``offset >= K`` (only ``== K`` can
   happen) by the IoU of the candidate's first box and the last tubelet's last box. Among
   candidates with that IoU >= 0.5 it takes, **by default, the one with the highest score**
   (the published code: ``valid[np.argmax(score[valid])]``), i.e. the first valid candidate in
   score order. PROTOCOLS.md words this as "the highest IoU"; ``pick="iou"`` gives that variant.
4. A tube not extended while ``offset >= K`` (``max_miss``) is closed. Candidates that no tube took
   start new tubes (in candidate order, after the existing tubes).
5. After the last start frame all remaining tubes are closed. A tube's frames run from its first
   tubelet's start to its last tubelet's end; per frame the box and the frame score are the
   averages over the tubelets covering it (consecutive tubelets are at most K apart, so every
   frame is covered); tube score = mean tubelet score. Tubes with score < 0.005 or fewer than 15
   frames are dropped.
6. Optional, off by default (``trim=True``; not part of ACT/MOC): temporal trimming as in ROAD
   (Singh et al., ICCV 2017), with the online linker's energy (:mod:`stad.tubes.trim`). Every tube of
   at least ``min_length`` frames (whatever its score) is labelled frame by frame as action or
   background by the two-state Viterbi on ``frame_score - trim_threshold`` with ``trim_penalty`` per
   label change; each run of action frames becomes a tube of the same label, its boxes and frame
   scores those of the tube on these frames, its score the mean score of the tube's tubelets that
   cover at least one of its frames (summed in the order they joined the tube, so a segment spanning
   the whole tube keeps the tube's score exactly). Segments then pass the step-5 filter (fewer than
   ``min_length`` frames or score < ``min_score``: dropped); a tube without action frames is dropped.
   Segments of a tube take its place in the output order, in frame order.

Quirks kept from the reference: the soft-NMS weights can be negative and such tubelets can still
be candidates (when fewer than 10 survive); candidates are chosen by score, not IoU; at
``offset == K`` a tube shares no frame with the candidates and is compared by first-vs-last box,
so a tubelet that merely continues it after a gap of zero frames still extends it.
Output order is the reference's: by label; within a label, tubes in the order they were closed,
those closed at the same start frame in reverse list order, then the tubes still open at the end.

Numerics: float64 throughout (the reference stores float32); the tube score is the running sum
of tubelet scores divided by their count (the reference's ``np.mean`` may differ in the last bit);
ties in scores are broken by input order (the reference's unstable sorts leave them undefined).

Vectorization: the per-window soft NMS runs once for all windows and classes of many videos; the
linking then advances all (video, class) groups of a batch of videos together, one start frame at
a time. At each start frame the mean IoUs between every live tube and every candidate of its group
are computed in one pass (pairs whose boxes never meet, judged by the boxes enclosing each
tubelet's K boxes, have IoU 0 and are skipped); the greedy "tube i takes its best free candidate" runs in rounds, where
round r lets the r-th claiming tube of every group choose (claimants of different groups never
compete), so the Python work per start frame is a handful of array operations.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from stad.boxes import box_area, box_iou_paired
from stad.errors import StadError
from stad.structures import Tube, Tubelets
from stad.tubes.nms import _priority, batched_tubelet_soft_nms
from stad.tubes.trim import TRIM_PENALTY, TRIM_THRESHOLD, action_segments, check_trim_params
from stad.tubes.tubelets import validate_tubelets

# Videos are linked together in batches of at most this many tubelets (bounds memory).
_TUBELETS_PER_BATCH = 2_000_000
_OPEN = np.iinfo(np.int64).max  # "closed" step of tubes still open at the end


@dataclass(frozen=True)
class LinkParams:
    """Parameters of the offline linking (defaults: ACT/MOC)."""

    K: int
    num_classes: int
    nms_threshold: float = 0.6
    top_k: int = 10
    link_iou: float = 0.5
    max_miss: int = 0  # 0 means K
    min_length: int = 15
    min_score: float = 0.005
    pick: str = "score"
    trim: bool = False
    trim_threshold: float = TRIM_THRESHOLD
    trim_penalty: float = TRIM_PENALTY


def build_tubes(
    tubelets: Tubelets,
    *,
    num_classes: int,
    nframes: int,
    K: int | None = None,
    # per-window tubelet soft NMS
    nms_threshold: float = 0.6,
    top_k: int = 10,
    # linking
    link_iou: float = 0.5,
    max_miss: int | None = None,
    pick: Literal["score", "iou"] = "score",
    # output filter
    min_length: int = 15,
    min_score: float = 0.005,
    # temporal trimming (ROAD), off in ACT/MOC
    trim: bool = False,
    trim_threshold: float = TRIM_THRESHOLD,
    trim_penalty: float = TRIM_PENALTY,
) -> list[Tube]:
    """Action tubes of one video from its K-frame tubelets (ACT/MOC offline linking, all classes).

    Args:
        tubelets: the video's tubelets, ``boxes`` ``(N, K, 4)`` x1, y1, x2, y2 pixels (+1 IoU).
        num_classes: number of action classes; labels must be in ``[0, num_classes)``.
        nframes: frames of the video ``T``; start frames run over ``1 .. T - K + 1``.
        K: tubelet length; default ``tubelets.K`` (an error if both are given and differ).
        nms_threshold: per-frame threshold of the tubelet soft NMS (summed IoU > it * K), 0.6.
        top_k: candidates kept per start frame and class after the soft NMS, 10.
        link_iou: minimum mean IoU over overlapping frames to extend a tube, 0.5 (inclusive).
        max_miss: a tube not extended while ``t - last_start >= max_miss`` is closed; default K,
            allowed ``1 .. K`` (beyond K a tube would have frames no tubelet covers).
        pick: which valid candidate extends a tube: ``"score"`` (published code) or ``"iou"``.
        min_length: tubes with fewer frames are dropped, 15.
        min_score: tubes with a lower mean tubelet score are dropped, 0.005.
        trim: cut every tube into its action segments (module docstring, step 6), False (ACT/MOC).
            With False the output is exactly the ACT/MOC builder's.
        trim_threshold: frame score below which trimming favours background, in ``[0, 1]``, 0.1.
            Frame scores are class probabilities (means of tubelet scores); 0.1 is the online
            linker's default, so both linkers cut the same frame scores alike. It lies well above the
            0.005 tube filter, so frames a tube only reached through barely scored tubelets are cut,
            and low enough to keep a moderately confident action (rationale in :mod:`stad.tubes.trim`).
        trim_penalty: cost of one action/background label change, >= 0, 0.5 (online default): a
            tube is split only where the summed deficit ``trim_threshold - frame_score`` of a dip
            exceeds 1.0, and an end is cut once its deficit exceeds 0.5.

    Returns:
        Tubes (``boxes`` ``(L, 6)`` ``[frame, x1, y1, x2, y2, frame_score]`` on consecutive frames),
        by label, then in the reference's order (see the module docstring).
    """
    K = _resolve_K(tubelets, K, "tubelets")
    params = _params(
        K, num_classes, nms_threshold, top_k, link_iou, max_miss, min_length, min_score, pick,
        trim, trim_threshold, trim_penalty,
    )  # fmt: skip
    validate_tubelets(tubelets, where="tubelets", num_classes=num_classes, nframes=int(nframes))
    return _link_batch([tubelets], [int(nframes)], params)[0]


def build_tubes_for_videos(
    tubelets_per_video: Mapping[str, Tubelets],
    *,
    num_classes: int,
    nframes: Mapping[str, int],
    K: int | None = None,
    nms_threshold: float = 0.6,
    top_k: int = 10,
    link_iou: float = 0.5,
    max_miss: int | None = None,
    pick: Literal["score", "iou"] = "score",
    min_length: int = 15,
    min_score: float = 0.005,
    trim: bool = False,
    trim_threshold: float = TRIM_THRESHOLD,
    trim_penalty: float = TRIM_PENALTY,
    # execution
    workers: int = 0,
) -> dict[str, list[Tube]]:
    """``build_tubes`` for many videos, linked together in batches, optionally in worker processes.

    Args:
        tubelets_per_video: video -> tubelets; all videos must share K.
        num_classes: number of action classes.
        nframes: video -> number of frames (every video of ``tubelets_per_video`` must be present).
        K, nms_threshold, top_k, link_iou, max_miss, pick, min_length, min_score, trim, trim_threshold,
            trim_penalty: as ``build_tubes``.
        workers: worker processes (0 or 1: this process). Results do not depend on it.

    Returns:
        video -> its tubes, in the order of ``tubelets_per_video``.
    """
    videos = list(tubelets_per_video)
    Ks = {_resolve_K(tubelets_per_video[v], K, f"video {v!r}") for v in videos}
    if len(Ks) > 1:
        raise StadError(f"all videos must share the tubelet length K, got {sorted(Ks)}")
    if not videos:
        return {}
    params = _params(
        Ks.pop(), num_classes, nms_threshold, top_k, link_iou, max_miss, min_length, min_score, pick,
        trim, trim_threshold, trim_penalty,
    )  # fmt: skip
    for v in videos:
        if v not in nframes:
            raise StadError(f"nframes: no frame count for video {v!r}")
        validate_tubelets(tubelets_per_video[v], where=f"video {v!r}", num_classes=num_classes, nframes=int(nframes[v]))
    batches: list[list[str]] = [[]]
    size = 0
    for v in videos:
        if batches[-1] and size + len(tubelets_per_video[v]) > _TUBELETS_PER_BATCH:
            batches.append([])
            size = 0
        batches[-1].append(v)
        size += len(tubelets_per_video[v])
    if workers > 1:  # spread the work: at least one batch per worker
        per = -(-len(videos) // workers)
        batches = [b[i : i + per] for b in batches for i in range(0, len(b), per)]
    args = [([tubelets_per_video[v] for v in b], [int(nframes[v]) for v in b], params) for b in batches]
    if workers > 1 and len(batches) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_link_batch, *zip(*args)))
    else:
        results = [_link_batch(*a) for a in args]
    return {v: tubes for b, res in zip(batches, results) for v, tubes in zip(b, res)}


def _resolve_K(tubelets: Tubelets, K: int | None, where: str) -> int:
    boxes = np.asarray(tubelets.boxes)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise StadError(f"{where}: boxes must have shape [N, K, 4], got {boxes.shape}")
    if K is not None and int(K) != boxes.shape[1]:
        raise StadError(f"{where}: K={K} but the tubelets have {boxes.shape[1]} frames")
    return int(boxes.shape[1])


def _params(
    K, num_classes, nms_threshold, top_k, link_iou, max_miss, min_length, min_score, pick,
    trim, trim_threshold, trim_penalty,
) -> LinkParams:  # fmt: skip
    if K < 1:
        raise StadError(f"K must be >= 1, got {K}")
    if num_classes < 1:
        raise StadError(f"num_classes must be >= 1, got {num_classes}")
    if top_k < 1:
        raise StadError(f"top_k must be >= 1, got {top_k}")
    max_miss = K if max_miss is None else int(max_miss)
    if not 1 <= max_miss <= K:
        raise StadError(f"max_miss must be in 1..K={K}, got {max_miss}")
    if pick not in ("score", "iou"):
        raise StadError(f"pick must be 'score' or 'iou', got {pick!r}")
    if not isinstance(trim, (bool, np.bool_)):
        raise StadError(f"trim must be True or False, got {trim!r}")
    check_trim_params(trim_threshold, trim_penalty)
    return LinkParams(
        K=K,
        num_classes=int(num_classes),
        nms_threshold=float(nms_threshold),
        top_k=int(top_k),
        link_iou=float(link_iou),
        max_miss=max_miss,
        min_length=int(min_length),
        min_score=float(min_score),
        pick=pick,
        trim=bool(trim),
        trim_threshold=float(trim_threshold),
        trim_penalty=float(trim_penalty),
    )


def _link_batch(tubelets_list: list[Tubelets], nframes_list: list[int], p: LinkParams) -> list[list[Tube]]:
    """Link the (validated) tubelets of several videos together; returns each video's tubes.

    Naming: V videos, C classes, N tubelets, Q candidates (after the per-window NMS); a *group*
    is a (video, class) pair, keyed ``g = video * C + label``.
    """
    K, C = p.K, p.num_classes
    V = len(tubelets_list)
    counts = [len(t) for t in tubelets_list]
    vid = np.repeat(np.arange(V, dtype=np.int64), counts)  # [N]
    start = np.concatenate([np.asarray(t.start, np.int64) for t in tubelets_list] + [np.zeros(0, np.int64)])
    label = np.concatenate([np.asarray(t.label, np.int64) for t in tubelets_list] + [np.zeros(0, np.int64)])
    score = np.concatenate([np.asarray(t.score, np.float64) for t in tubelets_list] + [np.zeros(0)])
    boxes = np.concatenate([np.asarray(t.boxes, np.float64).reshape(-1, K, 4) for t in tubelets_list])  # [N, K, 4]
    last_step = np.asarray(nframes_list, np.int64) - K + 1  # [V] last start frame of each video

    # 1. Per-window soft NMS, all windows and classes at once -> candidates.
    window = (vid * (int(start.max(initial=0)) + 1) + start) * C + label  # [N] (video, start, class)
    nms = batched_tubelet_soft_nms(boxes, score, window, threshold_per_frame=p.nms_threshold, top_k=p.top_k)
    cand = nms.keep  # [Q] by window, then rank
    c_start = start[cand]
    c_group = vid[cand] * C + label[cand]
    order = np.lexsort((np.arange(len(cand)), c_group, c_start))  # by start frame, group, rank
    cand, c_start, c_group = cand[order], c_start[order], c_group[order]
    c_score = nms.scores[order]  # [Q] new scores
    c_boxes = boxes[cand]  # [Q, K, 4]
    c_hull = np.concatenate([c_boxes[:, :, :2].min(axis=1), c_boxes[:, :, 2:].max(axis=1)], axis=1)  # [Q, 4]
    c_min_area = box_area(c_boxes, plus_one=True).min(axis=1)  # [Q] smallest of the K boxes
    Q = len(cand)
    T = int(last_step.max(initial=0))
    step_bounds = np.searchsorted(c_start, np.arange(1, T + 2))  # candidates of start t: [b[t-1], b[t])

    # Tube state, indexed by tube id (a tube starts from one candidate, so at most Q tubes).
    t_group = np.zeros(Q, np.int64)
    t_first = np.zeros(Q, np.int64)  # start of the first tubelet
    t_last = np.zeros(Q, np.int64)  # start of the last tubelet
    t_sum = np.zeros(Q, np.float64)  # running sum of tubelet scores
    t_count = np.zeros(Q, np.int64)
    t_closed = np.full(Q, _OPEN, np.int64)  # start frame at which the tube was closed
    t_rank = np.zeros(Q, np.int64)  # order among tubes closed together (reference order)
    member_tube: list[np.ndarray] = []  # (tube, candidate) pairs, chronological
    member_cand: list[np.ndarray] = []
    n_tubes = 0
    live = np.zeros(0, np.int64)  # ids of the open tubes, in the reference's list order
    live_cand = np.zeros(0, np.int64)  # [n_live] candidate index of each open tube's last tubelet
    video_ends = set(last_step.tolist())

    for t in range(1, T + 1):
        if (t - 1) in video_ends and live.size:  # videos that ended: their tubes stay open, leave the loop
            ended = last_step[t_group[live] // C] < t
            t_rank[live[ended]] = np.flatnonzero(ended)
            live, live_cand = live[~ended], live_cand[~ended]
        c0, c1 = int(step_bounds[t - 1]), int(step_bounds[t])
        if live.size:
            perm, _ = _priority(t_sum[live] / t_count[live], t_group[live])  # by group, mean score, list order
            live, live_cand = live[perm], live_cand[perm]
        taken = np.zeros(c1 - c0, bool)
        extended = np.zeros(live.size, bool)
        if live.size and c1 > c0:
            ext_pos, ext_local = _extend(
                t_group[live], t_last[live], live_cand, t, c0, c1, c_group, c_boxes, c_hull, c_min_area, p
            )
            ext_cand = c0 + ext_local
            taken[ext_local] = True
            extended[ext_pos] = True
            tubes = live[ext_pos]
            t_last[tubes] = t
            t_sum[tubes] += c_score[ext_cand]
            t_count[tubes] += 1
            live_cand[ext_pos] = ext_cand
            member_tube.append(tubes)
            member_cand.append(ext_cand)
        closing = ~extended & (t - t_last[live] >= p.max_miss)
        if closing.any():
            t_closed[live[closing]] = t
            t_rank[live[closing]] = -np.flatnonzero(closing)  # the reference appends them in reverse
            live, live_cand = live[~closing], live_cand[~closing]
        new = c0 + np.flatnonzero(~taken)  # unused candidates start tubes, in candidate order
        if new.size:
            ids = np.arange(n_tubes, n_tubes + new.size)
            n_tubes += new.size
            t_group[ids] = c_group[new]
            t_first[ids] = t_last[ids] = t
            t_sum[ids] = c_score[new]
            t_count[ids] = 1
            member_tube.append(ids)
            member_cand.append(new)
            live = np.concatenate([live, ids])
            live_cand = np.concatenate([live_cand, new])
    if live.size:
        t_rank[live] = np.arange(live.size)  # still open at the end, in list order
    return _make_tubes(
        n_tubes, t_group, t_first, t_last, t_sum, t_count, t_closed, t_rank,
        member_tube, member_cand, c_start, c_boxes, c_score, V, p,
    )  # fmt: skip


def _extend(
    live_group: np.ndarray,
    live_last: np.ndarray,
    live_cand: np.ndarray,
    t: int,
    c0: int,
    c1: int,
    c_group: np.ndarray,
    c_boxes: np.ndarray,
    c_hull: np.ndarray,
    c_min_area: np.ndarray,
    p: LinkParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Which open tubes take which candidates of start frame ``t``.

    Args:
        live_group, live_last: ``(n,)`` group and last tubelet start of the open tubes, sorted by
            group and then in list order (mean score).
        live_cand: ``(n,)`` candidate index of each open tube's last tubelet.
        c0, c1: the candidates of start ``t`` are ``c0:c1``, sorted by group, each group in score order.
        c_group: ``(Q,)`` group of every candidate.
        c_boxes: ``(Q, K, 4)`` boxes of every candidate; c_hull: ``(Q, 4)`` box enclosing its K boxes;
            c_min_area: ``(Q,)`` smallest +1 area of its K boxes.

    Returns:
        ``(positions among the open tubes, candidate positions relative to c0)`` of the extensions.
    """
    K = p.K
    cand_group = c_group[c0:c1]
    lo = np.searchsorted(cand_group, live_group, side="left")
    counts = np.searchsorted(cand_group, live_group, side="right") - lo
    pos = np.repeat(np.arange(live_group.size), counts)  # [P] tube of each (tube, candidate) pair
    cand = lo[pos] + (np.arange(pos.size) - np.repeat(np.cumsum(counts) - counts, counts))  # [P]
    if pos.size == 0:
        return pos, cand
    if p.link_iou > 0:
        # Pre-test: frame boxes lie inside their tubelet's enclosing box, so on every frame
        # IoU <= area(hull_a & hull_b) / max(min area a, min area b); pairs where that bound is
        # < link_iou cannot reach a mean IoU >= link_iou and are skipped.
        a, b = live_cand[pos], c0 + cand
        ha, hb = c_hull[a], c_hull[b]  # [P, 4]
        iw = np.clip(np.minimum(ha[:, 2], hb[:, 2]) + 1.0 - np.maximum(ha[:, 0], hb[:, 0]), 0.0, None)
        ih = np.clip(np.minimum(ha[:, 3], hb[:, 3]) + 1.0 - np.maximum(ha[:, 1], hb[:, 1]), 0.0, None)
        bound_ok = iw * ih >= (p.link_iou * (1.0 - 1e-12)) * np.maximum(c_min_area[a], c_min_area[b])
        meet = bound_ok & (iw > 0) & (ih > 0)
        pos, cand = pos[meet], cand[meet]
        if pos.size == 0:
            return pos, cand
    offset = t - live_last[pos]  # [P], 1 .. K
    mean_iou = np.empty(pos.size, np.float64)
    for o in np.flatnonzero(np.bincount(offset, minlength=K + 1)):
        sel = np.flatnonzero(offset == o)
        if o < K:  # candidate frames 0..K-o-1 against the last tubelet's frames o..K-1
            n = K - o
            iou = box_iou_paired(c_boxes[c0 + cand[sel], :n], c_boxes[live_cand[pos[sel]], o:], plus_one=True)
        else:  # offset K: the candidate's first box against the last tubelet's last box
            n = 1
            iou = box_iou_paired(c_boxes[c0 + cand[sel], :1], c_boxes[live_cand[pos[sel]], K - 1 :], plus_one=True)
        total = iou[:, 0].copy()
        for k in range(1, n):  # frame by frame, like the reference's sum([...])
            total += iou[:, k]
        mean_iou[sel] = total / n
    valid = np.flatnonzero(mean_iou >= p.link_iou)
    if valid.size == 0:
        return valid, valid
    pos, cand, mean_iou = pos[valid], cand[valid], mean_iou[valid]
    # Rank of each claiming tube within its group (pos is sorted; tubes are sorted by group).
    claimants = pos[np.r_[True, pos[1:] != pos[:-1]]]
    cg = live_group[claimants]
    group_start = np.flatnonzero(np.r_[True, cg[1:] != cg[:-1]])
    rank_of = np.zeros(live_group.size, np.int64)
    rank_of[claimants] = np.arange(claimants.size) - np.repeat(group_start, np.diff(np.r_[group_start, claimants.size]))
    rank = rank_of[pos]
    if p.pick == "score" and not rank.any():  # one claimant per group: it takes its first valid candidate
        first = np.r_[True, pos[1:] != pos[:-1]]
        return pos[first], cand[first]
    if p.pick == "score":  # first valid candidate in score order
        order = np.lexsort((cand, pos, rank))
    else:  # highest mean IoU, ties: score order
        order = np.lexsort((cand, -mean_iou, pos, rank))
    pos, cand, rank = pos[order], cand[order], rank[order]
    n_rounds = int(rank[-1]) + 1
    bounds = np.searchsorted(rank, np.arange(n_rounds + 1))
    free = np.ones(cand_group.size, bool)
    out_pos, out_cand = [], []
    for r in range(n_rounds):  # round r: the r-th claimant of every group chooses
        rp, rc = pos[bounds[r] : bounds[r + 1]], cand[bounds[r] : bounds[r + 1]]
        ok = free[rc]
        rp, rc = rp[ok], rc[ok]
        if rp.size == 0:
            continue
        first = np.r_[True, rp[1:] != rp[:-1]]
        rp, rc = rp[first], rc[first]
        free[rc] = False
        out_pos.append(rp)
        out_cand.append(rc)
    if not out_pos:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_pos), np.concatenate(out_cand)


def _make_tubes(
    n_tubes: int,
    t_group: np.ndarray,
    t_first: np.ndarray,
    t_last: np.ndarray,
    t_sum: np.ndarray,
    t_count: np.ndarray,
    t_closed: np.ndarray,
    t_rank: np.ndarray,
    member_tube: list[np.ndarray],
    member_cand: list[np.ndarray],
    c_start: np.ndarray,
    c_boxes: np.ndarray,
    c_score: np.ndarray,
    V: int,
    p: LinkParams,
) -> list[list[Tube]]:
    """Average the tubelets of every kept tube per frame and build ``Tube`` records per video.

    With ``p.trim`` the score filter waits for the segments (a weak tube may hold a strong one).
    """
    K, C = p.K, p.num_classes
    ids = np.arange(n_tubes)
    score = t_sum[ids] / np.maximum(t_count[ids], 1)
    length = t_last[ids] + K - t_first[ids]
    kept = ids[((score >= p.min_score) | p.trim) & (length >= p.min_length)]
    out: list[list[Tube]] = [[] for _ in range(V)]
    if kept.size == 0:
        return out
    # Reference order: by video, label, closing step, rank among tubes closed together.
    kept = kept[np.lexsort((t_rank[kept], t_closed[kept], t_group[kept]))]
    row0 = np.full(n_tubes, -1, np.int64)
    row0[kept] = np.cumsum(length[kept]) - length[kept]
    n_rows = int(length[kept].sum())
    m_tube = np.concatenate(member_tube)
    m_cand = np.concatenate(member_cand)
    mine = row0[m_tube] >= 0
    m_tube, m_cand = m_tube[mine], m_cand[mine]  # chronological per tube, as the reference adds them
    rows = (row0[m_tube] + c_start[m_cand] - t_first[m_tube])[:, None] + np.arange(K)  # [M, K]
    rows = rows.reshape(-1)
    table = np.empty((n_rows, 6), np.float64)
    count = np.bincount(rows, minlength=n_rows).astype(np.float64)
    member_boxes = c_boxes[m_cand].reshape(-1, 4)  # [M*K, 4]
    for col in range(4):
        table[:, 1 + col] = np.bincount(rows, weights=member_boxes[:, col], minlength=n_rows) / count
    table[:, 5] = np.bincount(rows, weights=np.repeat(c_score[m_cand], K), minlength=n_rows) / count
    starts = row0[kept]
    table[:, 0] = np.arange(n_rows) - np.repeat(starts, length[kept]) + np.repeat(t_first[kept], length[kept])
    if p.trim:
        return _trimmed_tubes(kept, starts, length[kept], t_group, table, m_tube, m_cand, c_start, c_score, V, p)
    for tube_id, r0, n in zip(kept.tolist(), starts.tolist(), length[kept].tolist()):
        g = int(t_group[tube_id])
        out[g // C].append(Tube(label=g % C, score=float(score[tube_id]), boxes=table[r0 : r0 + n]))
    return out


def _trimmed_tubes(
    kept: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    t_group: np.ndarray,
    table: np.ndarray,
    m_tube: np.ndarray,
    m_cand: np.ndarray,
    c_start: np.ndarray,
    c_score: np.ndarray,
    V: int,
    p: LinkParams,
) -> list[list[Tube]]:
    """The action segments of the kept tubes (module docstring, step 6), in the tubes' output order.

    Args:
        kept: ``(n,)`` tube ids in output order; starts, lengths: ``(n,)`` their first row in
            ``table`` and their number of frames.
        t_group: group (``video * C + label``) of every tube id.
        table: ``(rows, 6)`` ``[frame, x1, y1, x2, y2, frame_score]`` of the kept tubes, stacked.
        m_tube, m_cand: ``(M,)`` (tube, candidate) membership pairs of the kept tubes, chronological.
        c_start, c_score: ``(Q,)`` start frame and (soft-NMS) score of every candidate.
    """
    K, C = p.K, p.num_classes
    out: list[list[Tube]] = [[] for _ in range(V)]
    by_tube = np.argsort(m_tube, kind="stable")  # members grouped by tube, chronological within
    m_bounds = np.searchsorted(m_tube[by_tube], kept)  # [n] first member of each kept tube
    m_ends = np.searchsorted(m_tube[by_tube], kept, side="right")
    # A tube with no frame score above the threshold has no action frame: skip its Viterbi.
    peak = np.maximum.reduceat(table[:, 5], starts) if starts.size else np.zeros(0)  # [n]
    for i in np.flatnonzero(peak > p.trim_threshold).tolist():
        r0, n = int(starts[i]), int(lengths[i])
        frames = table[r0 : r0 + n]  # [L, 6] of this tube
        segments = action_segments(frames[:, 5], threshold=p.trim_threshold, penalty=p.trim_penalty)  # [S, 2]
        segments = segments[segments[:, 1] - segments[:, 0] >= p.min_length]
        if segments.size == 0:
            continue
        members = by_tube[m_bounds[i] : m_ends[i]]  # the tube's tubelets, in the order they joined
        m_first = c_start[m_cand[members]]  # [m] first frame of each tubelet (increasing)
        m_score = c_score[m_cand[members]]  # [m]
        first = int(frames[0, 0])
        g = int(t_group[kept[i]])
        for s, e in segments.tolist():
            # Tubelets covering a frame of [first + s, first + e - 1] start in [first + s - K + 1, first + e - 1].
            lo = np.searchsorted(m_first, first + s - K + 1)
            hi = np.searchsorted(m_first, first + e - 1, side="right")
            seg_score = float(np.cumsum(m_score[lo:hi])[-1] / (hi - lo))  # sequential sum, as t_sum
            if seg_score >= p.min_score:
                out[g // C].append(Tube(label=g % C, score=seg_score, boxes=frames[s:e]))
    return out
