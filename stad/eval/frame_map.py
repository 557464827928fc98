"""Frame-mAP of per-frame action detections against ACT-style ground-truth tubes.

Three protocols, on the same inputs (see PROTOCOLS.md §A and docs/evaluation.md):

=====================  ===============================  ===============================  ==============================
rule                   ``"act"`` (default)              ``"voc"`` (MultiSports)          ``"yowo"`` (YOWO family)
=====================  ===============================  ===============================  ==============================
frames evaluated       every frame of every test video  every frame of every test video  only frames with a GT box
                       (detection on a frame without    (same)                           (of any class); detections on
                       GT is a false positive)                                           other frames are left out
ranking                ``np.argsort(-score)`` on the    ``np.argsort(-score)`` (default,  stable descending sort
                       float32 scores (default,         unstable)
                       unstable: ties as the reference)
matching               best IoU among the *still        best IoU among *all* GT of the   as ``"voc"``
                       unmatched* GT of the class in    class in the frame; if that one
                       the frame; TP if IoU >= th       is taken -> FP (VOC)
box IoU                "+1" (inclusive pixels)          continuous (no +1)               "+1" (Padilla's metrics)
AP                     trapezoid on the raw float32     VOC all-point, envelope          VOC all-point, envelope
                       curve from (0, 1)
mean over              all labels of the data set       labels with test GT              labels with test GT
=====================  ===============================  ===============================  ==============================

ACT details reproduced: the reference keeps detections in a float32 array, so scores and boxes
are rounded to float32 before ranking and IoU (the IoU itself is computed in float64, as the
reference does with its float64 ground truth). A label with no test ground truth gets AP 0 and
stays in the ACT mean (the ACT release divides by zero there; its guarded fork yields 0); under
``"voc"``/``"yowo"`` it gets NaN and is left out of the mean.

Naming: ``N`` detections, ``M`` ground-truth boxes, ``G`` ground-truth boxes in one frame.
The greedy matching is vectorized: detections are processed in *rounds*, round ``r`` taking the
``r``-th ranked detection of every (video, frame) group at once (groups never interact).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stad.boxes import box_iou_paired
from stad.errors import StadError
from stad.eval.ap import PRCurve, act_ap_from_curve, act_curve, voc_ap, voc_curve
from stad.structures import FrameDetections, TubeAnnotations

PROTOCOLS = ("act", "voc", "yowo")


@dataclass
class GTFrameTable:
    """All ground-truth boxes of the evaluated videos, flat (``M`` rows).

    Rows are ordered video by video (in ``videos`` order), then label by label, tube by tube and
    frame by frame: within one (video, frame, label) the order is the tube order of the
    ground truth, which is the order the ACT reference matches ties in.

    Attributes:
        videos: evaluated videos; ``video`` indexes this list.
        video: ``(M,)`` int.
        frame: ``(M,)`` int, from 1.
        label: ``(M,)`` int, 0-based.
        boxes: ``(M, 4)`` float64 ``x1, y1, x2, y2``.
        visibility: ``(M,)`` float visible fraction, or ``None`` when the ground truth has none.
        stride: key multiplier, ``key = video * stride + frame``.
    """

    videos: list[str]
    video: np.ndarray
    frame: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    visibility: np.ndarray | None
    stride: int

    @property
    def key(self) -> np.ndarray:
        """``(M,)`` int64 (video, frame) key."""
        return self.video.astype(np.int64) * self.stride + self.frame


def gt_frame_table(gt: TubeAnnotations, videos: list[str]) -> GTFrameTable:
    """Flatten the ground-truth tubes of ``videos`` into a :class:`GTFrameTable`."""
    stride = max([int(gt.nframes[v]) for v in videos], default=0) + 2
    vid, frm, lab, box, vis = [], [], [], [], []
    have_vis = gt.visibility is not None
    for iv, v in enumerate(videos):
        for label, tubes in gt.gttubes.get(v, {}).items():
            for it, tube in enumerate(tubes):
                tube = np.asarray(tube, dtype=np.float64).reshape(-1, 5)
                n = tube.shape[0]
                vid.append(np.full(n, iv, np.int64))
                frm.append(tube[:, 0].astype(np.int64))
                lab.append(np.full(n, int(label), np.int64))
                box.append(tube[:, 1:5])
                if have_vis:
                    try:
                        vis_tube = np.asarray(gt.visibility[v][label][it], np.float64).reshape(-1)
                    except (KeyError, IndexError) as err:
                        raise StadError(f"ground truth visibility: missing for video {v!r} label {label} tube {it}") from err
                    if vis_tube.shape[0] != n:
                        raise StadError(
                            f"ground truth visibility: video {v!r} label {label} tube {it} has {vis_tube.shape[0]} values for {n} boxes"
                        )
                    vis.append(vis_tube)
    if vid:
        return GTFrameTable(
            videos=list(videos),
            video=np.concatenate(vid),
            frame=np.concatenate(frm),
            label=np.concatenate(lab),
            boxes=np.concatenate(box),
            visibility=np.concatenate(vis) if have_vis else None,
            stride=stride,
        )
    return GTFrameTable(
        videos=list(videos),
        video=np.zeros(0, np.int64),
        frame=np.zeros(0, np.int64),
        label=np.zeros(0, np.int64),
        boxes=np.zeros((0, 4)),
        visibility=np.zeros(0) if have_vis else None,
        stride=stride,
    )


def detections_on_split(gt: TubeAnnotations, dets: FrameDetections, videos: list[str]) -> np.ndarray:
    """Check ``dets`` against the evaluated ``videos`` and return their video indices into ``videos``.

    Raises:
        StadError: a detection on a video outside ``videos``, a frame outside 1..T, a label out of
            range, a non-finite score or box, or a box with ``x2 < x1`` / ``y2 < y1``.
    """
    n = len(dets)
    position = {v: i for i, v in enumerate(videos)}
    remap = np.array([position.get(v, -1) for v in dets.videos], dtype=np.int64)
    vid = np.asarray(dets.video, np.int64)
    if n == 0:
        return np.zeros(0, np.int64)
    if vid.min() < 0 or vid.max() >= len(dets.videos):
        bad = int(np.flatnonzero((vid < 0) | (vid >= len(dets.videos)))[0])
        raise StadError(f"detections: row {bad}: video index {vid[bad]} outside 0..{len(dets.videos) - 1}")
    out = remap[vid]
    if (out < 0).any():
        bad = int(np.flatnonzero(out < 0)[0])
        raise StadError(f"detections: row {bad}: video {dets.videos[vid[bad]]!r} is not a test video of the evaluated split")
    nframes = np.array([int(gt.nframes[v]) for v in videos], np.int64)
    frame = np.asarray(dets.frame, np.int64)
    label = np.asarray(dets.label, np.int64)
    checks = [
        ((frame < 1) | (frame > nframes[out]), "frame outside 1..nframes of its video"),
        ((label < 0) | (label >= len(gt.labels)), f"label outside 0..{len(gt.labels) - 1}"),
        (~np.isfinite(dets.score), "score is not finite"),
        (~np.isfinite(dets.boxes).all(axis=1), "box is not finite"),
        ((dets.boxes[:, 2] < dets.boxes[:, 0]) | (dets.boxes[:, 3] < dets.boxes[:, 1]), "box has x2 < x1 or y2 < y1"),
    ]
    for bad_mask, what in checks:
        if bad_mask.any():
            bad = int(np.flatnonzero(bad_mask)[0])
            raise StadError(
                f"detections: row {bad} (video {videos[out[bad]]!r}, frame {frame[bad]}, label {label[bad]}): {what}"
            )
    return out


@dataclass
class Candidates:
    """Query rows (e.g. ranked detections) paired with the key-sorted items (e.g. ground truth) of their key.

    Attributes:
        rows: ``(D,)`` positions in the query of the rows whose key has items.
        group: ``(D,)`` index of that key among the unique item keys.
        cols: ``(D, G)`` indices into the key-sorted items of that key (padded with 0).
        valid: ``(D, G)`` bool, False on padding.
    """

    rows: np.ndarray
    group: np.ndarray
    cols: np.ndarray
    valid: np.ndarray


def group_candidates(keys_sorted: np.ndarray, query_keys: np.ndarray) -> Candidates:
    """Locate each query row's key (e.g. a (video, frame) key) among the sorted item keys.

    Args:
        keys_sorted: ``(M,)`` item keys sorted ascending (stable).
        query_keys: ``(N,)`` keys of the query rows, in their (rank) order.

    Returns:
        :class:`Candidates` of the query rows whose key occurs among the items.
    """
    uk, start, count = np.unique(keys_sorted, return_index=True, return_counts=True)
    pos = np.searchsorted(uk, query_keys)
    pos_c = np.minimum(pos, max(len(uk) - 1, 0))
    has = (pos < len(uk)) & (uk[pos_c] == query_keys) if len(uk) else np.zeros(len(query_keys), bool)
    rows = np.flatnonzero(has)
    grp = pos[rows]
    gmax = int(count[grp].max()) if rows.size else 0
    offs = np.arange(gmax)
    valid = offs[None, :] < count[grp][:, None]  # [D, G]
    cols = np.where(valid, start[grp][:, None] + offs[None, :], 0)  # [D, G]
    return Candidates(rows=rows, group=grp, cols=cols, valid=valid)


@dataclass
class CandidateIoUs:
    """Box IoUs of ranked detections with the ground truth of their (video, frame) key.

    Attributes:
        gt_order: ``(M,)`` stable sort of the ground truth by key; ``cand.cols`` index ``gt_order``.
        cand: :class:`Candidates` of the detections whose frame has ground truth.
        ious: ``(D, G)`` float64 IoU of ``cand.rows[d]`` with its frame's ground truth, -1 on padding.
    """

    gt_order: np.ndarray
    cand: Candidates
    ious: np.ndarray


def candidate_ious(
    det_keys: np.ndarray, det_boxes: np.ndarray, gt_keys: np.ndarray, gt_boxes: np.ndarray, *, plus_one: bool
) -> CandidateIoUs:
    """IoU of each detection with every ground-truth box of its (video, frame) key.

    Args:
        det_keys: ``(N,)`` int keys of the detections, in rank order.
        det_boxes: ``(N, 4)`` ``x1, y1, x2, y2``.
        gt_keys: ``(M,)`` int keys of the ground truth.
        gt_boxes: ``(M, 4)`` ``x1, y1, x2, y2``.
        plus_one: IoU convention.

    Returns:
        :class:`CandidateIoUs`.
    """
    gorder = np.argsort(gt_keys, kind="stable")
    cand = group_candidates(gt_keys[gorder], det_keys)
    ious = box_iou_paired(det_boxes[cand.rows][:, None, :], gt_boxes[gorder][cand.cols], plus_one=plus_one)  # [D, G]
    ious[~cand.valid] = -1.0
    return CandidateIoUs(gt_order=gorder, cand=cand, ious=ious)


def greedy_rounds(grp: np.ndarray, ious: np.ndarray, cols: np.ndarray, *, n_cols: int, iou: float) -> np.ndarray:
    """Exact greedy "best still-unmatched" assignment inside independent groups, round by round.

    Rows are candidates in rank order; each takes, among the columns of its group not yet taken,
    the one with the highest IoU (first on ties) if that IoU >= ``iou``. Round ``r`` handles the
    ``r``-th row of every group at once, so the loop runs over ranks inside a group, not over rows.

    Args:
        grp: ``(D,)`` group id of each row (rows in rank order).
        ious: ``(D, G)`` IoU with the group's columns, -1 where padded.
        cols: ``(D, G)`` global column ids (into ``0..n_cols-1``) of the group's columns.
        n_cols: number of columns overall.
        iou: threshold (inclusive).

    Returns:
        ``(D,)`` int: the column taken by each row, -1 for none.
    """
    out = np.full(grp.shape[0], -1, np.int64)
    if grp.size == 0:
        return out
    # rank of each row inside its group: a stable sort by group keeps the rank order
    by_group = np.argsort(grp, kind="stable")
    g_sorted = grp[by_group]
    first = np.r_[0, np.flatnonzero(g_sorted[1:] != g_sorted[:-1]) + 1]
    run_start = np.repeat(first, np.diff(np.r_[first, g_sorted.size]))
    rank_in_group = np.empty_like(grp)
    rank_in_group[by_group] = np.arange(g_sorted.size) - run_start
    by_round = np.argsort(rank_in_group, kind="stable")
    bounds = np.searchsorted(rank_in_group[by_round], np.arange(int(rank_in_group.max()) + 2))
    taken = np.zeros(n_cols, bool)
    for r in range(len(bounds) - 1):  # loop over match rounds, not over rows
        active = by_round[bounds[r] : bounds[r + 1]]  # [A] rows, one per group
        sub = np.where(taken[cols[active]], -1.0, ious[active])  # [A, G]
        best = np.argmax(sub, axis=1)
        best_iou = sub[np.arange(active.size), best]
        ok = best_iou >= iou
        col = cols[active[ok], best[ok]]
        taken[col] = True  # distinct groups in one round -> distinct columns
        out[active[ok]] = col
    return out


def match_act(
    det_keys: np.ndarray, det_boxes: np.ndarray, gt_keys: np.ndarray, gt_boxes: np.ndarray, *, iou: float, plus_one: bool
) -> np.ndarray:
    """ACT greedy matching of ranked detections to the still-unmatched ground truth of their frame.

    Each detection (in rank order) takes the unmatched ground-truth box of its (video, frame) with
    the highest IoU (the first one on ties, in ground-truth order); it is a TP if that IoU >= ``iou``.

    Args:
        det_keys: ``(N,)`` int (video, frame) keys, in rank order.
        det_boxes: ``(N, 4)`` ``x1, y1, x2, y2``.
        gt_keys: ``(M,)`` keys of the ground truth of the class.
        gt_boxes: ``(M, 4)``.
        iou: TP threshold (inclusive).
        plus_one: IoU convention.

    Returns:
        ``(N,)`` int: index into the ground truth of the matched box, -1 for a false positive.
    """
    matched = np.full(det_keys.shape[0], -1, np.int64)
    c = candidate_ious(det_keys, det_boxes, gt_keys, gt_boxes, plus_one=plus_one)
    if c.cand.rows.size == 0:  # no detection on a frame with ground truth (or nothing at all)
        return matched
    best = greedy_rounds(c.cand.group, c.ious, c.cand.cols, n_cols=gt_keys.shape[0], iou=iou)
    ok = best >= 0
    matched[c.cand.rows[ok]] = c.gt_order[best[ok]]
    return matched


def match_voc(
    det_keys: np.ndarray, det_boxes: np.ndarray, gt_keys: np.ndarray, gt_boxes: np.ndarray, *, iou: float, plus_one: bool
) -> np.ndarray:
    """VOC matching: each ranked detection looks at the best-IoU ground truth of its frame (first on ties);
    TP if IoU >= ``iou`` and that box is not yet taken, else FP.

    Args and Returns: as :func:`match_act`.
    """
    matched = np.full(det_keys.shape[0], -1, np.int64)
    c = candidate_ious(det_keys, det_boxes, gt_keys, gt_boxes, plus_one=plus_one)
    if c.cand.rows.size == 0:  # no detection on a frame with ground truth (or nothing at all)
        return matched
    best = np.argmax(c.ious, axis=1)
    best_iou = c.ious[np.arange(c.cand.rows.size), best]
    hit = np.flatnonzero(best_iou >= iou)  # ascending rank
    gidx = c.cand.cols[hit, best[hit]]
    _, first = np.unique(gidx, return_index=True)  # the first (highest ranked) claimant wins
    winners = hit[first]
    matched[c.cand.rows[winners]] = c.gt_order[c.cand.cols[winners, best[winners]]]
    return matched


@dataclass
class EvalInputs:
    """Ground truth and detections of one split, ready for frame-level matching (``N`` detections).

    Attributes:
        videos: the test videos of the split; ``det_video`` indexes this list.
        table: their ground-truth boxes (:class:`GTFrameTable`).
        det_video: ``(N,)`` int video index of each detection.
        keys: ``(N,)`` int (video, frame) key of each detection, comparable with ``table.key``.
        scores: ``(N,)`` scores (float32 under the ACT rules, else float64).
        boxes: ``(N, 4)`` float64 ``x1, y1, x2, y2`` (rounded to float32 first under the ACT rules).
    """

    videos: list[str]
    table: GTFrameTable
    det_video: np.ndarray
    keys: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray


def prepare_inputs(gt: TubeAnnotations, dets: FrameDetections, *, split: int, act_float32: bool) -> EvalInputs:
    """Check ``dets`` against the test videos of ``split`` and build :class:`EvalInputs`.

    Args:
        gt: ground truth.
        dets: detections on test videos of the split.
        split: 1-based split.
        act_float32: round scores and boxes to float32 as the ACT reference does (its detections
            live in a float32 array); otherwise keep float64.

    Raises:
        StadError: a detection outside the split or with invalid values.
    """
    videos = gt.split_videos(split, "test")
    table = gt_frame_table(gt, videos)
    det_video = detections_on_split(gt, dets, videos)
    keys = det_video * table.stride + np.asarray(dets.frame, np.int64)
    if act_float32:
        scores = np.asarray(dets.score).astype(np.float32)
        boxes = np.asarray(dets.boxes).astype(np.float32).astype(np.float64)
    else:
        scores = np.asarray(dets.score, np.float64)
        boxes = np.asarray(dets.boxes, np.float64)
    return EvalInputs(videos=videos, table=table, det_video=det_video, keys=keys, scores=scores, boxes=boxes)


@dataclass
class ClassCounts:
    """Counts of one class: ``n_gt`` ground-truth boxes, ``n_det`` detections, ``n_tp`` true positives."""

    n_gt: int
    n_det: int
    n_tp: int


@dataclass
class FrameMAPResult:
    """Frame-mAP and its per-class parts.

    Attributes:
        protocol: ``"act"``, ``"voc"`` or ``"yowo"``.
        iou: the IoU threshold.
        mAP: mean AP (fraction in [0, 1]) as the protocol defines the mean.
        per_class: label name -> AP (NaN for a label left out of the mean).
        curves: label name -> precision/recall per ranked detection.
        counts: label name -> :class:`ClassCounts`.
        labels_without_gt: labels with detections but no test ground truth (see module docstring).
    """

    protocol: str
    iou: float
    mAP: float
    per_class: dict[str, float]
    curves: dict[str, PRCurve] = field(repr=False)
    counts: dict[str, ClassCounts]
    labels_without_gt: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable dict: ``mAP``, ``per_class`` (NaN as ``null``), ``counts`` ..."""
        return {
            "metric": "frame-mAP",
            "protocol": self.protocol,
            "iou": self.iou,
            "mAP": _finite_or_none(self.mAP),
            "per_class": {k: _finite_or_none(v) for k, v in self.per_class.items()},
            "counts": {k: vars(c) for k, c in self.counts.items()},
            "labels_without_gt": list(self.labels_without_gt),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def frame_map(
    gt: TubeAnnotations,
    dets: FrameDetections,
    *,
    split: int = 1,
    iou: float = 0.5,
    protocol: str = "act",
) -> FrameMAPResult:
    """Frame-mAP of ``dets`` on the test videos of ``split``.

    Args:
        gt: ground truth; its ``test_videos[split - 1]`` are evaluated (video index order = that list).
        dets: detections, boxes ``x1, y1, x2, y2`` in pixels; must lie on test videos of the split.
        split: 1-based split.
        iou: IoU threshold for a true positive (inclusive), default 0.5.
        protocol: ``"act"`` (default, the ACT/MOC rules), ``"voc"`` (MultiSports) or ``"yowo"``;
            see the module docstring for the differences.

    Returns:
        :class:`FrameMAPResult`.

    Raises:
        StadError: bad protocol, or a detection outside the split / with invalid values.
    """
    if protocol not in PROTOCOLS:
        raise StadError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    inputs = prepare_inputs(gt, dets, split=split, act_float32=protocol == "act")
    table, det_keys_all, scores, boxes = inputs.table, inputs.keys, inputs.scores, inputs.boxes
    det_label = np.asarray(dets.label, np.int64)
    gt_keys_all = table.key
    keep = np.ones(len(dets), bool)
    if protocol == "yowo":
        keep = np.isin(det_keys_all, np.unique(gt_keys_all))

    per_class: dict[str, float] = {}
    curves: dict[str, PRCurve] = {}
    counts: dict[str, ClassCounts] = {}
    without_gt: list[str] = []
    ap_act = []
    for c, name in enumerate(gt.labels):
        sel = np.flatnonzero((det_label == c) & keep)  # file order, as the reference's alldets
        if protocol == "yowo":
            order = np.argsort(-scores[sel], kind="stable")
        else:
            order = np.argsort(-scores[sel])
        ranked = sel[order]
        gsel = np.flatnonzero(table.label == c)
        match = match_act if protocol == "act" else match_voc
        matched = match(
            det_keys_all[ranked], boxes[ranked], gt_keys_all[gsel], table.boxes[gsel], iou=iou, plus_one=protocol != "voc"
        )
        tp = matched >= 0
        n_gt = int(gsel.size)
        counts[name] = ClassCounts(n_gt=n_gt, n_det=int(ranked.size), n_tp=int(tp.sum()))
        if n_gt == 0 and ranked.size > 0:
            without_gt.append(name)
        if protocol == "act":
            precision, recall = act_curve(tp, n_gt)
            ap = act_ap_from_curve(precision, recall)
            ap_act.append(np.float32(ap))
            curves[name] = PRCurve(precision=precision[1:], recall=recall[1:], scores=scores[ranked])
            per_class[name] = ap
        else:
            precision, recall = voc_curve(tp, n_gt)
            curves[name] = PRCurve(precision=precision, recall=recall, scores=scores[ranked])
            per_class[name] = voc_ap(recall, precision) if n_gt > 0 else float("nan")
    if protocol == "act":
        mean = float(np.mean(np.array(ap_act, np.float32))) if ap_act else float("nan")
    else:
        vals = np.array([v for v in per_class.values() if np.isfinite(v)])
        mean = float(vals.mean()) if vals.size else float("nan")
    return FrameMAPResult(
        protocol=protocol,
        iou=float(iou),
        mAP=mean,
        per_class=per_class,
        curves=curves,
        counts=counts,
        labels_without_gt=without_gt,
    )
