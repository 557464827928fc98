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

ST-IoU and tube NMS are those of :mod:`stad.tubes.nms` (``spatiotemporal_iou_pairs``,
``batched_tube_nms``): temporal IoU of the inclusive frame spans times the mean "+1" box IoU over the
temporal intersection. Computed in float64; the reference computes the per-frame IoUs in the arrays'
dtype (float32 for its tubes), which can only matter for an ST-IoU within ~1e-7 of a threshold.

Naming: ``P`` tube pairs, ``L`` frames of a tube.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from stad.errors import StadError
from stad.eval.ap import PRCurve, act_ap_from_curve, act_curve
from stad.eval.frame_map import ClassCounts, greedy_rounds, group_candidates
from stad.structures import Tube, TubeAnnotations
from stad.tubes.nms import TubeTable, batched_tube_nms, spatiotemporal_iou_pairs

DEFAULT_THRESHOLDS: tuple = (0.2, 0.5, 0.75, "0.5:0.95")


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


@dataclass
class _LabelCandidates:
    """One label's ranked detections and their ST-IoU with the ground-truth tubes of their video.

    ``ranked`` ``(D,)`` detection ids by score; ``rows`` ``(R,)`` positions in ``ranked`` having ground truth in
    their video; ``group``/``cols``/``ious`` ``(R,)``/``(R, G)``/``(R, G)`` as :func:`greedy_rounds` takes
    them (``cols`` index ``gt_ids``); ``gt_ids`` ``(n_gt,)`` global ground-truth tube ids of the label.
    """

    ranked: np.ndarray
    rows: np.ndarray
    group: np.ndarray
    cols: np.ndarray
    ious: np.ndarray
    gt_ids: np.ndarray


@dataclass
class _Matching:
    per_label: list[_LabelCandidates]
    det_score: np.ndarray
    gt_keys: list[tuple[str, Any, int]]  # per global ground-truth tube id: (video, label key, index)
    names: list[str]
    without_gt: list[str]


def _prepare_matching(gt: TubeAnnotations, tubes: dict[str, list[Tube]], *, split: int, nms: float | None) -> _Matching:
    """Rules 1-2 and the ST-IoUs of rule 3 (module docstring), shared by :func:`video_map` and
    :func:`video_map_occluded`."""
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
    det_table = TubeTable.build(
        [t.boxes for _, t in det_list], name_of=lambda i: f"{det_names[i]}.boxes", allow_empty=False
    )
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
        kept = batched_tube_nms(det_table, det_video * n_labels + det_label, det_score, nms)
        kept = kept[np.argsort(det_video[kept], kind="stable")]  # videos in order, keep order inside

    # 2. ground-truth tubes of the split
    gt_arrays, gt_video, gt_label = [], [], []
    gt_keys: list[tuple[str, Any, int]] = []  # (video, label key, index in gt.gttubes[video][label])
    for iv, v in enumerate(videos):
        for label, ltubes in gt.gttubes.get(v, {}).items():
            for i, t in enumerate(ltubes):
                gt_arrays.append(np.asarray(t, np.float64))
                gt_keys.append((v, label, i))
                gt_video.append(iv)
                gt_label.append(int(label))
    gt_table = TubeTable.build(gt_arrays, name_of=lambda k: f"ground truth tube {k}", allow_empty=False)
    gt_video_a = np.array(gt_video, np.int64)
    gt_label_a = np.array(gt_label, np.int64)

    names = list(gt.labels)
    without_gt = []
    # ST-IoU of each kept tube with the GT tubes of its video and class, computed once for all thresholds
    per_label = []
    for c in range(n_labels):
        sel = kept[det_label[kept] == c]
        ranked = sel[np.argsort(-det_score[sel])]
        gsel = np.flatnonzero(gt_label_a == c)
        if gsel.size == 0 and ranked.size:
            without_gt.append(names[c])
        gorder = np.argsort(gt_video_a[gsel], kind="stable")
        cand = group_candidates(gt_video_a[gsel][gorder], det_video[ranked])
        ious = np.full(cand.cols.shape, -1.0)  # [D, G]
        if cand.rows.size:
            d_idx = np.broadcast_to(ranked[cand.rows][:, None], cand.cols.shape)[cand.valid]
            g_idx = gsel[gorder][cand.cols[cand.valid]]
            ious[cand.valid] = spatiotemporal_iou_pairs(det_table, d_idx, gt_table, g_idx)
        per_label.append(_LabelCandidates(ranked, cand.rows, cand.group, cand.cols, ious, gsel[gorder]))
    return _Matching(per_label=per_label, det_score=det_score, gt_keys=gt_keys, names=names, without_gt=without_gt)


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
    matching = _prepare_matching(gt, tubes, split=split, nms=nms)
    names, det_score, without_gt = matching.names, matching.det_score, matching.without_gt
    n_labels = len(names)
    per_label = [(m.ranked, m.rows, m.group, m.cols, m.ious, m.gt_ids.size) for m in matching.per_label]
    result_map: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {}
    curves: dict[str, dict[str, PRCurve]] = {}
    counts: dict[str, dict[str, ClassCounts]] = {}
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


@dataclass
class OccludedVideoMAP:
    """Video-mAP restricted to occluded ground-truth tubes (:func:`video_map_occluded`).

    Attributes:
        mAP: threshold name -> mean AP over the labels with at least one occluded tube (NaN if none).
        per_class: threshold name -> label name -> AP (NaN for a label without occluded tubes).
        n_occluded: label name -> number of occluded ground-truth tubes.
        occluded_below: a tube is occluded when its minimum visibility is below this.
    """

    mAP: dict[str, float]
    per_class: dict[str, dict[str, float]]
    n_occluded: dict[str, int]
    occluded_below: float

    def to_json(self) -> dict[str, Any]:
        return {"metric": "video-mAP (occluded tubes)", "occluded_below": self.occluded_below, "mAP": dict(self.mAP),
                "per_class": self.per_class, "n_occluded": self.n_occluded}


def occluded_tube_mask(gt: TubeAnnotations, keys: Sequence[tuple[str, Any, int]], *, occluded_below: float) -> np.ndarray:
    """``(G,)`` bool: the tube ``gt.gttubes[video][label][i]`` of each key has a frame with visibility below
    ``occluded_below``. Raises StadError without visibility or with a visibility list not parallel to a tube."""
    if gt.visibility is None:
        raise StadError("video-mAP on occluded tubes needs ground-truth visibility (gt.visibility is None)")
    out = np.zeros(len(keys), bool)
    for k, (video, label, i) in enumerate(keys):
        try:
            vis = np.asarray(gt.visibility[video][label][i], np.float64)
        except (KeyError, IndexError):
            raise StadError(f"gt.visibility has no entry for tube {i} of label {label} in video {video!r}") from None
        n = len(gt.gttubes[video][label][i])
        if vis.shape != (n,):
            raise StadError(f"gt.visibility[{video!r}][{label}][{i}] has shape {vis.shape}, the tube has {n} frames")
        out[k] = bool(n) and float(vis.min()) < occluded_below
    return out


def video_map_occluded(
    gt: TubeAnnotations,
    tubes: dict[str, list[Tube]],
    *,
    split: int = 1,
    thresholds: Sequence[float | str] = DEFAULT_THRESHOLDS,
    nms: float | None = 0.3,
    occluded_below: float = 0.5,
) -> OccludedVideoMAP:
    """Video-mAP on the ground-truth tubes whose actor is occluded for part of their duration.

    A ground-truth tube is **occluded** when its visibility (``gt.visibility``, the visible fraction of
    the box per frame) drops below ``occluded_below`` on at least one frame. The tubes are ranked and
    matched against *all* ground-truth tubes exactly as :func:`video_map` does (same NMS, same greedy
    matching); then, per label:

    * a detection matched to an occluded tube is a true positive;
    * a detection matched to a non-occluded tube is **ignored** (neither TP nor FP: it found a real actor);
    * an unmatched detection is a false positive;
    * the positives are the label's occluded tubes.

    AP is the ACT trapezoid (:func:`stad.eval.ap.act_ap`); the mAP averages the labels that have occluded
    tubes (others are NaN and left out), and ``"0.5:0.95"`` is the mean over its 10 thresholds.

    Returns:
        :class:`OccludedVideoMAP`.

    Raises:
        StadError: no visibility in ``gt``, or the errors of :func:`video_map`.
    """
    specs = parse_thresholds(thresholds)
    matching = _prepare_matching(gt, tubes, split=split, nms=nms)
    occluded = occluded_tube_mask(gt, matching.gt_keys, occluded_below=occluded_below)
    names = matching.names
    n_occ = {names[c]: int(occluded[m.gt_ids].sum()) for c, m in enumerate(matching.per_label)}
    result: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {}
    for name, ths in specs:
        sums = {n: 0.0 for n in names}
        maps = []
        for th in ths:
            aps = {}
            for c, m in enumerate(matching.per_label):
                n_pos = n_occ[names[c]]
                if n_pos == 0:
                    aps[names[c]] = float("nan")
                    continue
                taken = np.full(m.ranked.size, -1, np.int64)  # matched global gt id per ranked tube
                cols = greedy_rounds(m.group, m.ious, m.cols, n_cols=max(m.gt_ids.size, 1), iou=th)
                hit = cols >= 0
                taken[m.rows[hit]] = m.gt_ids[cols[hit]]
                ignore = (taken >= 0) & ~occluded[np.maximum(taken, 0)]
                tp = (taken >= 0)[~ignore]
                precision, recall = act_curve(tp, n_pos)
                aps[names[c]] = float(np.float32(act_ap_from_curve(precision, recall)))
            vals = [v for v in aps.values() if np.isfinite(v)]
            maps.append(float(np.mean(vals)) if vals else float("nan"))
            for n in names:
                sums[n] += aps[n] / len(ths)
        result[name] = float(np.mean(maps))
        per_class[name] = sums
    return OccludedVideoMAP(mAP=result, per_class=per_class, n_occluded=n_occ, occluded_below=float(occluded_below))
