"""Video-mAP of action tubes, the ACT protocol (PROTOCOLS.md §A; ACT release / MOC-Detector ``videoAP``).

Rules, in order:

1. per test video and class, tube NMS at ``nms`` (0.3): ``np.argsort`` of the (float32) tube scores,
   repeatedly keep the last (highest) one and drop every remaining tube whose spatio-temporal IoU with
   it is ``> nms`` (the reference's ``nms3dt``, ties as its unstable argsort breaks them);
2. the kept tubes of all test videos, listed video by video in NMS order, are ranked by
   ``np.argsort(-score)`` on float32 scores;
3. each tube takes the still-unmatched ground-truth tube of its class and video with the highest
   ST-IoU (first on ties); TP if ST-IoU >= th (inclusive);
4. AP = trapezoid on the raw float32 curve from (0, 1) (:func:`stad.eval.ap.act_ap`); mAP = mean over
   all labels (a label without test ground truth: AP 0, kept in the mean, as for frame-mAP);
5. ``"0.5:0.95"`` = mean of the mAP at ``0.5 + 0.05 * i``, i = 0..9 (thresholds computed that way, as
   the reference does, e.g. 0.8500000000000001).

ST-IoU (:func:`stad.boxes.tube_iou`): temporal IoU of the inclusive frame spans times the mean "+1"
box IoU over the temporal intersection. Computed here in float64; the reference computes the per-frame
IoUs in the arrays' dtype (float32 for its tubes), which can only matter for an ST-IoU within ~1e-7 of
a threshold.

Naming: ``P`` tube pairs, ``L`` frames of a tube.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from stad.errors import StadError
from stad.eval.ap import PRCurve, act_ap_from_curve, act_curve
from stad.eval.frame_map import ClassCounts, greedy_rounds
from stad.structures import Tube, TubeAnnotations

DEFAULT_THRESHOLDS: tuple = (0.2, 0.5, 0.75, "0.5:0.95")
_CHUNK_FRAMES = 2_000_000  # per-frame IoUs computed at once (memory bound, ~200 MB)


class _LazyNames:
    """``names[i]`` = the JSON-like path of the i-th detected tube (built only for an error message)."""

    def __init__(self, videos: list[str], det_list: list, tubes: dict) -> None:
        self.videos, self.det_list, self.tubes = videos, det_list, tubes

    def __getitem__(self, i: int) -> str:
        iv, tube = self.det_list[i]
        v = self.videos[iv]
        j = next(k for k, t in enumerate(self.tubes[v]) if t is tube)
        return f"tubes: [{v!r}][{j}]"


@dataclass
class _TubeTable:
    """Tubes concatenated: tube ``i`` has frames ``start[i] .. end[i]`` in rows ``offset[i] ..`` of the columns.

    The box columns are stored ready for the "+1" IoU: ``x1, y1``, ``x2p = x2 + 1``, ``y2p = y2 + 1`` and
    ``area = (x2 - x1 + 1) * (y2 - y1 + 1)`` (float64, ``[sum L]`` each).
    """

    start: np.ndarray  # [n] int
    end: np.ndarray  # [n] int
    offset: np.ndarray  # [n] int
    x1: np.ndarray
    y1: np.ndarray
    x2p: np.ndarray
    y2p: np.ndarray
    area: np.ndarray

    @classmethod
    def build(cls, arrays: Sequence[np.ndarray], names: Sequence[str] | None = None) -> "_TubeTable":
        """Concatenate ``(L, >=5)`` tubes ``[frame, x1, y1, x2, y2, ...]``; frames must be consecutive.

        Raises:
            StadError: a tube with fewer than 5 columns, no rows, or non-consecutive frames
                (named by ``names[i]`` when given).
        """
        where = (lambda i: names[i]) if names is not None else (lambda i: f"tube {i}")
        for i, arr in enumerate(arrays):
            if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < 5:
                raise StadError(f"{where(i)}.boxes must be (L, 6) rows [frame, x1, y1, x2, y2, score], got {arr.shape}")
        if not arrays:
            z = np.zeros(0, np.int64)
            return cls(z, z, z, *(np.zeros(0) for _ in range(5)))
        lens = np.array([a.shape[0] for a in arrays], np.int64)
        offset = np.r_[0, np.cumsum(lens)[:-1]]
        rows = np.concatenate([a[:, :5] for a in arrays]).astype(np.float64)  # [sum L, 5]
        frames = rows[:, 0]
        start = frames[offset].astype(np.int64)
        end = frames[offset + lens - 1].astype(np.int64)
        expected = np.repeat(start - offset, lens) + np.arange(frames.shape[0])  # consecutive frames
        if (frames != expected).any():
            i = int(np.searchsorted(offset, int(np.flatnonzero(frames != expected)[0]), side="right") - 1)
            raise StadError(f"{where(i)}.boxes: frames must be consecutive and increasing")
        x2p, y2p = rows[:, 3] + 1.0, rows[:, 4] + 1.0
        x1, y1 = np.ascontiguousarray(rows[:, 1]), np.ascontiguousarray(rows[:, 2])
        area = (rows[:, 3] - x1 + 1.0) * (rows[:, 4] - y1 + 1.0)  # the reference's operation order
        return cls(start, end, offset, x1, y1, x2p, y2p, area)


def st_iou_pairs(a: _TubeTable, ia: np.ndarray, b: _TubeTable, ib: np.ndarray) -> np.ndarray:
    """ACT ST-IoU ("+1" boxes) of tube pairs ``(a[ia[p]], b[ib[p]])``, vectorized over pairs and frames; ``(P,)``."""
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
    # per-frame IoU as the ACT reference writes it: min(x2a + 1, x2b + 1) - max(x1a, x1b), clipped at 0
    ax1, ay1, ax2, ay2, aarea = a.x1, a.y1, a.x2p, a.y2p, a.area
    bx1, by1, bx2, by2, barea = b.x1, b.y1, b.x2p, b.y2p, b.area
    cum = np.cumsum(inter[nz])
    bounds = np.searchsorted(cum, np.arange(0, cum[-1], _CHUNK_FRAMES), side="right")
    bounds = np.unique(np.r_[0, bounds, nz.size])
    for lo, hi in zip(bounds[:-1], bounds[1:]):  # chunks of pairs, to bound memory
        sel = nz[lo:hi]
        lens = inter[sel]
        first = np.r_[0, np.cumsum(lens)[:-1]]
        pair = np.repeat(np.arange(sel.size), lens)  # [F] pair of each frame
        step = np.arange(int(lens.sum())) - first[pair]  # [F] frame offset inside the intersection
        ra = (a.offset[ia[sel]] + tmin[sel] - a.start[ia[sel]])[pair] + step
        rb = (b.offset[ib[sel]] + tmin[sel] - b.start[ib[sel]])[pair] + step
        iw = np.minimum(ax2[ra], bx2[rb])
        iw -= np.maximum(ax1[ra], bx1[rb])
        np.maximum(iw, 0.0, out=iw)
        ih = np.minimum(ay2[ra], by2[rb])
        ih -= np.maximum(ay1[ra], by1[rb])
        np.maximum(ih, 0.0, out=ih)
        iw *= ih  # [F] intersection
        union = aarea[ra] + barea[rb] - iw
        with np.errstate(divide="ignore", invalid="ignore"):
            ious = np.where(union > 0, iw / union, 0.0)  # [F]
        out[sel] = np.add.reduceat(ious, first) / lens * (lens / union_t[sel])
    return out


def _pairs_within_groups(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)``, ``i < j``, of items sharing a group id; items sorted by group."""
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


def _batched_tube_nms(table: _TubeTable, group: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """The reference's ``nms3dt`` in every group at once; returns kept tube indices by (group, keep order).

    Per group the visiting order is the reverse of ``np.argsort(scores_of_group)`` (the reference's
    unstable argsort, so ties fall as there). A tube is kept unless a kept tube visited before it has
    ST-IoU > ``threshold`` with it. Only pairs whose *temporal* IoU exceeds the threshold can conflict
    (ST-IoU <= temporal IoU) and whose spatial hulls intersect, so only those get the per-frame
    computation. The greedy pass runs in
    rounds over the visiting rank (at most the largest group size), vectorized over groups.
    """
    n = group.shape[0]
    order = np.argsort(group, kind="stable")
    g_sorted = group[order]
    starts = np.r_[0, np.flatnonzero(g_sorted[1:] != g_sorted[:-1]) + 1]
    ends = np.r_[starts[1:], n]
    rank = np.empty(n, np.int64)  # visiting rank of each tube inside its group (0 first)
    for s, e in zip(starts.tolist(), ends.tolist()):  # loop over groups: the reference's per-group argsort
        members = order[s:e]
        visit = members[np.argsort(scores[members])[::-1]]
        rank[visit] = np.arange(e - s)
    pi, pj = _pairs_within_groups(group)
    t_inter = np.minimum(table.end[pi], table.end[pj]) - np.maximum(table.start[pi], table.start[pj]) + 1
    t_union = np.maximum(table.end[pi], table.end[pj]) - np.minimum(table.start[pi], table.start[pj]) + 1
    maybe = np.flatnonzero((t_inter > 0) & (t_inter / t_union > threshold))
    # pairs whose spatial hulls (over the whole tubes) are disjoint have ST-IoU 0: no conflict
    hx1, hy1 = np.minimum.reduceat(table.x1, table.offset), np.minimum.reduceat(table.y1, table.offset)
    hx2, hy2 = np.maximum.reduceat(table.x2p, table.offset), np.maximum.reduceat(table.y2p, table.offset)
    a, b = pi[maybe], pj[maybe]
    overlap = (np.minimum(hx2[a], hx2[b]) > np.maximum(hx1[a], hx1[b])) & (np.minimum(hy2[a], hy2[b]) > np.maximum(hy1[a], hy1[b]))
    maybe = maybe[overlap]
    conflict = maybe[st_iou_pairs(table, pi[maybe], table, pj[maybe]) > threshold]
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
    return out[np.lexsort((rank[out], group[out]))]


@dataclass
class VideoMAPResult:
    """Video-mAP at several thresholds.

    Attributes:
        mAP: threshold name (``"0.2"``, ``"0.5"``, ``"0.75"``, ``"0.5:0.95"`` ...) -> mAP (fraction).
        per_class: threshold name -> label name -> AP.
        curves: threshold name -> label name -> precision/recall per ranked tube (not for ranges).
        counts: threshold name -> label name -> :class:`ClassCounts` (tubes after NMS).
        nms: the tube NMS threshold used.
        labels_without_gt: labels with tubes but no test ground truth.
    """

    mAP: dict[str, float]
    per_class: dict[str, dict[str, float]]
    curves: dict[str, dict[str, PRCurve]] = field(repr=False)
    counts: dict[str, dict[str, ClassCounts]] = field(repr=False)
    nms: float = 0.3
    labels_without_gt: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``{"mAP": {thr: value}, "per_class": {label: {thr: AP}}, ...}``."""
        labels = list(next(iter(self.per_class.values()), {}))
        return {
            "metric": "video-mAP",
            "protocol": "act",
            "nms": self.nms,
            "mAP": dict(self.mAP),
            "per_class": {name: {t: self.per_class[t][name] for t in self.per_class} for name in labels},
            "counts": {t: {k: vars(c) for k, c in cs.items()} for t, cs in self.counts.items()},
            "labels_without_gt": list(self.labels_without_gt),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def parse_thresholds(values: Sequence[float | str]) -> list[tuple[str, list[float]]]:
    """Threshold specs -> ``[(name, [thresholds])]``; ``"0.5:0.95"`` is 0.5 + 0.05 * i, i = 0..9.

    Raises:
        StadError: an unknown range or a value outside (0, 1].
    """
    out = []
    for v in values:
        if isinstance(v, str) and ":" in v:
            if v.strip() != "0.5:0.95":
                raise StadError(f"threshold range {v!r}: only '0.5:0.95' is defined (COCO-style 0.50..0.95 step 0.05)")
            out.append(("0.5:0.95", [0.5 + 0.05 * i for i in range(10)]))
            continue
        try:
            t = float(v)
        except ValueError:
            raise StadError(f"threshold {v!r} is not a number or '0.5:0.95'") from None
        if not 0.0 < t <= 1.0:
            raise StadError(f"threshold {t} outside (0, 1]")
        out.append((f"{t:g}", [t]))
    return out


def video_map(
    gt: TubeAnnotations,
    tubes: dict[str, list[Tube]],
    *,
    split: int = 1,
    thresholds: Sequence[float | str] = DEFAULT_THRESHOLDS,
    nms: float | None = 0.3,
) -> VideoMAPResult:
    """Video-mAP of detected tubes on the test videos of ``split`` (ACT protocol, module docstring).

    Args:
        gt: ground truth (tubes ``(L, 5)`` on consecutive frames).
        tubes: video -> detected tubes (``boxes`` ``(L, 6)`` ``[frame, x1, y1, x2, y2, frame_score]``,
            consecutive frames); every video must be a test video of the split; test videos
            missing from the mapping simply have no detections.
        split: 1-based split.
        thresholds: ST-IoU thresholds and/or ``"0.5:0.95"``.
        nms: tube NMS threshold per video and class before matching (``None`` skips it).

    Returns:
        :class:`VideoMAPResult`.

    Raises:
        StadError: a video outside the split, a label out of range, bad frames.
    """
    specs = parse_thresholds(thresholds)
    videos = gt.split_videos(split, "test")
    vpos = {v: i for i, v in enumerate(videos)}
    n_labels = len(gt.labels)
    for v in tubes:
        if v not in vpos:
            raise StadError(f"tubes: video {v!r} is not a test video of split {split}")
    # detections in video order (the reference loops over test videos), then list order
    det_list: list[tuple[int, Tube]] = [(vpos[v], t) for v in videos for t in tubes.get(v, [])]
    det_video = np.array([iv for iv, _ in det_list], np.int64)
    det_label = np.array([int(t.label) for _, t in det_list], np.int64)
    det_score = np.array([t.score for _, t in det_list], np.float64).astype(np.float32)  # reference: float32
    det_names = _LazyNames(videos, det_list, tubes)
    det_table = _TubeTable.build([np.asarray(t.boxes) for _, t in det_list], det_names)
    bad = (det_label < 0) | (det_label >= n_labels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StadError(f"{det_names[i]}.label {det_label[i]} outside 0..{n_labels - 1}")
    nframes = np.array([int(gt.nframes[v]) for v in videos], np.int64)
    bad = (det_table.start < 1) | (det_table.end > nframes[det_video] if len(det_list) else False)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise StadError(
            f"{det_names[i]}.boxes: frames {det_table.start[i]}..{det_table.end[i]} outside 1..{nframes[det_video[i]]}"
        )

    # 1. tube NMS per (video, class)
    kept = np.arange(len(det_list))
    if nms is not None and len(det_list):
        kept = _batched_tube_nms(det_table, det_video * n_labels + det_label, det_score, nms)
        kept = kept[np.argsort(det_video[kept], kind="stable")]  # videos in order, keep order inside

    # 2. ground-truth tubes of the split
    gt_arrays, gt_video, gt_label = [], [], []
    for iv, v in enumerate(videos):
        for label, ltubes in gt.gttubes.get(v, {}).items():
            for t in ltubes:
                gt_arrays.append(np.asarray(t, np.float64))
                gt_video.append(iv)
                gt_label.append(int(label))
    gt_table = _TubeTable.build(gt_arrays, [f"ground truth tube {k}" for k in range(len(gt_arrays))])
    gt_video_a = np.array(gt_video, np.int64)
    gt_label_a = np.array(gt_label, np.int64)

    names = list(gt.labels)
    result_map: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {}
    curves: dict[str, dict[str, PRCurve]] = {}
    counts: dict[str, dict[str, ClassCounts]] = {}
    without_gt = []
    # ST-IoU of each kept tube with the GT tubes of its video and class, computed once for all thresholds
    per_label = []
    for c in range(n_labels):
        sel = kept[det_label[kept] == c]
        ranked = sel[np.argsort(-det_score[sel])]
        gsel = np.flatnonzero(gt_label_a == c)
        if gsel.size == 0 and ranked.size:
            without_gt.append(names[c])
        gvid = gt_video_a[gsel]
        gorder = np.argsort(gvid, kind="stable")
        gv_sorted = gvid[gorder]
        uv, gstart, gcount = np.unique(gv_sorted, return_index=True, return_counts=True)
        pos = np.searchsorted(uv, det_video[ranked])
        pos_c = np.minimum(pos, max(uv.size - 1, 0))
        has = (pos < uv.size) & (uv[pos_c] == det_video[ranked]) if uv.size else np.zeros(ranked.size, bool)
        rows = np.flatnonzero(has)
        grp = pos[rows]
        gmax = int(gcount[grp].max()) if rows.size else 0
        offs = np.arange(gmax)
        valid = offs[None, :] < gcount[grp][:, None]
        cols = np.where(valid, gstart[grp][:, None] + offs[None, :], 0)  # [D, G] into gsel[gorder]
        ious = np.full(cols.shape, -1.0)
        if rows.size:
            d_idx = np.broadcast_to(ranked[rows][:, None], cols.shape)[valid]
            g_idx = gsel[gorder][cols[valid]]
            ious[valid] = st_iou_pairs(det_table, d_idx, gt_table, g_idx)
        per_label.append((ranked, rows, grp, cols, ious, gsel.size))

    for name, ths in specs:
        maps = []
        per_class[name] = {}
        for th in ths:
            aps = []
            cur: dict[str, PRCurve] = {}
            cnt: dict[str, ClassCounts] = {}
            for c, (ranked, rows, grp, cols, ious, n_gt) in enumerate(per_label):
                tp = np.zeros(ranked.size, bool)
                tp[rows[greedy_rounds(grp, ious, cols, n_cols=max(n_gt, 1), iou=th) >= 0]] = True
                precision, recall = act_curve(tp, n_gt)
                aps.append(np.float32(act_ap_from_curve(precision, recall)))
                cur[names[c]] = PRCurve(precision=precision[1:], recall=recall[1:], scores=det_score[ranked])
                cnt[names[c]] = ClassCounts(n_gt=int(n_gt), n_det=int(ranked.size), n_tp=int(tp.sum()))
            aps_arr = np.array(aps, np.float32)
            maps.append(float(np.mean(aps_arr)) if aps else float("nan"))
            if len(ths) == 1:
                per_class[name] = {names[c]: float(aps_arr[c]) for c in range(n_labels)}
                curves[name] = cur
                counts[name] = cnt
            else:
                for c in range(n_labels):
                    per_class[name][names[c]] = per_class[name].get(names[c], 0.0) + float(aps_arr[c]) / len(ths)
        result_map[name] = float(np.mean(maps))
    return VideoMAPResult(
        mAP=result_map, per_class=per_class, curves=curves, counts=counts, nms=float(nms) if nms is not None else float("nan"),
        labels_without_gt=without_gt,
    )
