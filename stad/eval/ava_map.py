"""AVA frame-mAP@0.5, exactly as the official ActivityNet evaluator (2019, with excluded timestamps).

Reproduces ``get_ava_performance.py`` of activitynet/ActivityNet (``Evaluation/``) with its
TF-object-detection ``PascalDetectionEvaluator``; PROTOCOLS.md §B lists the rules. Quirks kept:

* rows whose action id is not in the label map are dropped while reading;
* detections are capped to the 50 best per keyframe over all classes (a heap: a newcomer tied with
  the smallest kept score never enters a full set; on eviction the smallest
  ``(score, action_id, y1, x1, y2, x2)`` tuple leaves); ground truth is not capped;
* excluded keyframes are dropped from ground truth and detections; keyframes with detections and no
  ground truth are evaluated (all false positives);
* detections with ``x1 >= x2`` or ``y1 >= y2`` are dropped silently (after the cap);
* IoU continuous (no +1), float64, on normalized coordinates; VOC matching per keyframe and class in
  the keyframe's score order: each detection takes the ground-truth box of highest IoU among all of its
  class (the first on ties); TP if IoU >= 0.5 and that box is still unmatched, else FP;
* AP: VOC 2010+ all points; a class with ground truth but no detection has AP 0, a class without
  ground truth NaN; mAP is the NaN-mean over the label map's classes;
* order: the reference sorts each keyframe's kept detections with a stable sort by score over the
  heap's array order, and each class's detections (keyframes in order of first appearance in the
  detection file) with NumPy's default ``argsort`` reversed. Ground truth of a keyframe is sorted the
  same way by its "score", which for 8-column ground truth is the person id (descending).

Speed: everything is vectorized over rows (sorting, ``np.unique``, segment reductions). The heap order
decides the result only in rare keyframes: a tie at the 50th score, two same-class detections with the
same score and different boxes where that class has ground truth, or a detection with two ground-truth
boxes at exactly the same best IoU. Only those keyframes are replayed row by row with the reference's
heap (``_replay_keyframe``), so the result equals the official evaluator's, ties included.

Naming: ``N`` detection rows, ``M`` ground-truth rows, ``C`` classes, ``P`` (detection, GT) pairs.
"""

from __future__ import annotations

import heapq
import json
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from stad.data.ava import AVARows, LabelMap
from stad.eval.ap import voc_ap, voc_curve

TOP_K = 50
IOU_THRESHOLD = 0.5


@dataclass
class AVAResult:
    """AVA frame-mAP result over the label map's ``C`` classes.

    Attributes:
        mAP: NaN-mean of ``ap`` (fraction in [0, 1]; NaN when no class has ground truth).
        class_ids: the label map's action ids.
        class_names: display names (unique; see ``LabelMap.display_names``).
        ap: ``(C,)`` float64 per-class AP; NaN for classes without ground truth.
        num_gt: ``(C,)`` int64 ground-truth boxes per class (after class filter and exclusions).
        num_detections: ``(C,)`` int64 evaluated detections per class (after cap and invalid removal).
        precision: per class, ``(D_c,)`` float64 precision after each detection in descending score order
            (empty without detections or ground truth).
        recall: per class, ``(D_c,)`` float64 recall, parallel to ``precision``.
        replayed_keyframes: keyframes whose order was decided by replaying the reference heap.
    """

    mAP: float  # noqa: N815 - the metric's name
    class_ids: list[int]
    class_names: list[str]
    ap: np.ndarray
    num_gt: np.ndarray
    num_detections: np.ndarray
    precision: list[np.ndarray] = field(repr=False)
    recall: list[np.ndarray] = field(repr=False)
    replayed_keyframes: int = 0

    @property
    def per_class(self) -> dict[str, float]:
        """Class name -> AP (NaN for classes without ground truth)."""
        return {name: float(ap) for name, ap in zip(self.class_names, self.ap)}

    def to_dict(self) -> dict:
        """``{"mAP": fraction, "per_class": {name: AP}}`` with NaN written as None (JSON null)."""

        def clean(value: float) -> float | None:
            return None if np.isnan(value) else float(value)

        return {"mAP": clean(self.mAP), "per_class": {name: clean(ap) for name, ap in self.per_class.items()}}

    def to_json(self) -> str:
        """``to_dict()`` as a JSON string."""
        return json.dumps(self.to_dict(), indent=2)

    def format_table(self) -> str:
        """A readable per-class table (id, name, GT, detections, AP in %) and the mAP line."""
        width = max([len(n) for n in self.class_names] + [5])
        lines = [f"{'id':>4}  {'class':<{width}}  {'GT':>7}  {'dets':>8}  {'AP %':>7}"]
        for class_id, name, gt, dets, ap in zip(
            self.class_ids, self.class_names, self.num_gt.tolist(), self.num_detections.tolist(), self.ap.tolist()
        ):
            ap_text = "    n/a" if np.isnan(ap) else f"{100 * ap:7.2f}"
            lines.append(f"{class_id:>4}  {name:<{width}}  {gt:>7}  {dets:>8}  {ap_text}")
        counted = int(np.sum(~np.isnan(self.ap)))
        map_text = "n/a" if np.isnan(self.mAP) else f"{100 * self.mAP:.2f}"
        lines.append(f"frame-mAP@0.5 = {map_text} % over {counted} classes with ground truth")
        return "\n".join(lines)


def ava_map(
    gt_rows: AVARows,
    det_rows: AVARows,
    labelmap: LabelMap,
    *,
    excluded: Iterable[tuple[str, int]] = (),
    iou_threshold: float = IOU_THRESHOLD,
    top_k: int | None = TOP_K,
) -> AVAResult:
    """AVA frame-mAP of ``det_rows`` against ``gt_rows`` with the official evaluator's rules.

    Args:
        gt_rows: ground-truth rows (``read_ava_annotations``); boxes ``x1, y1, x2, y2`` normalized.
        det_rows: detection rows (``read_ava_predictions``) with scores.
        labelmap: the evaluated classes (rows of other action ids are dropped).
        excluded: ``(video_id, second)`` keyframes to drop from both (``read_excluded_timestamps``).
        iou_threshold: IoU for a true positive (inclusive), default 0.5.
        top_k: detections kept per keyframe (default 50, as the reference); None keeps all.

    Returns:
        AVAResult with mAP, per-class AP and precision/recall curves.
    """
    num_classes = len(labelmap)
    cap = int(top_k) if top_k else 0
    gt_class = labelmap.index_of(gt_rows.action_id)
    det_class = labelmap.index_of(det_rows.action_id)
    gt_in = np.flatnonzero(gt_class >= 0)
    det_in = np.flatnonzero(det_class >= 0)

    # Keyframe keys: dense ids over both files; excluded keyframes dropped.
    gt_key, det_key, excluded_keys = _keyframe_keys(gt_rows, det_rows, gt_in, det_in, excluded)
    gt_keep = ~np.isin(gt_key, excluded_keys)
    gt_in, gt_key = gt_in[gt_keep], gt_key[gt_keep]
    det_keep = ~np.isin(det_key, excluded_keys)
    det_in, det_key = det_in[det_keep], det_key[det_keep]

    num_gt = np.bincount(gt_class[gt_in], minlength=num_classes).astype(np.int64)
    gt = _ground_truth(gt_rows, gt_in, gt_key, gt_class, num_classes)
    det = _detections(det_rows, det_in, det_key, det_class, cap)
    tp, undecided = _match(det, gt, num_classes, iou_threshold)

    # Keyframes whose result depends on the reference heap's order: replay them exactly.
    same_score = _same_score_ambiguity(det, gt, num_classes)
    replay = np.unique(np.concatenate([det.boundary_tie_keyframes, same_score, undecided]))
    final_kf, final_pos, final_class, final_score, final_tp = _splice_replayed(
        det, tp, replay, gt_rows, det_rows, gt, cap, iou_threshold, labelmap
    )

    # Per class: keyframes in first-appearance order, then the keyframe's order (the reference's concat).
    order = np.lexsort((final_pos, final_kf, final_class))
    final_class, final_score, final_tp = final_class[order], final_score[order], final_tp[order]
    bounds = np.searchsorted(final_class, np.arange(num_classes + 1))
    ap = np.full(num_classes, np.nan)
    precisions: list[np.ndarray] = []
    recalls: list[np.ndarray] = []
    num_detections = np.diff(bounds).astype(np.int64)
    for c in range(num_classes):
        scores_c = final_score[bounds[c] : bounds[c + 1]]
        tp_c = final_tp[bounds[c] : bounds[c + 1]]
        if num_gt[c] == 0:
            precisions.append(np.zeros(0))
            recalls.append(np.zeros(0))
            continue
        precision, recall = _precision_recall(scores_c, tp_c, int(num_gt[c]))
        precisions.append(precision)
        recalls.append(recall)
        ap[c] = voc_ap(recall, precision)
    with np.errstate(invalid="ignore"):
        mean_ap = float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")
    return AVAResult(
        mAP=mean_ap,
        class_ids=list(labelmap.ids),
        class_names=labelmap.display_names(),
        ap=ap,
        num_gt=num_gt,
        num_detections=num_detections,
        precision=precisions,
        recall=recalls,
        replayed_keyframes=int(len(replay)),
    )


def ava_map_by_visibility(
    gt_rows: AVARows,
    det_rows: AVARows,
    labelmap: LabelMap,
    visibility: np.ndarray,
    *,
    bands: Sequence[tuple[float, float]] = ((0.0, 0.25), (0.25, 0.75), (0.75, 1.0)),
    excluded: Iterable[tuple[str, int]] = (),
    iou_threshold: float = IOU_THRESHOLD,
    top_k: int | None = TOP_K,
) -> dict[str, dict[str, Any]]:
    """AVA frame-mAP per ground-truth visibility band (stad's diagnostic, as the ACT one of
    :func:`stad.eval.diagnostics.frame_ap_by_visibility`).

    The positives of a band are the ground-truth rows whose ``visibility`` lies in it (half-open ``[lo, hi)``, the
    last band includes ``hi``). A detection whose best same-class ground-truth box of its keyframe (continuous IoU
    >= ``iou_threshold``) belongs to another band is ignored (it found a real actor, just not one of this band);
    the other detections are scored against the band's rows by :func:`ava_map` (cap, exclusions, matching as there).

    Args:
        visibility: ``(M,)`` visible fraction of each ground-truth row.

    Returns:
        band name ``"lo-hi"`` -> ``{"mAP", "per_class": name -> AP (NaN without ground truth), "n_gt": rows}``.
    """
    visibility = np.asarray(visibility, np.float64)
    if visibility.shape != (len(gt_rows),):
        raise ValueError(f"visibility must give one value per ground-truth row ({len(gt_rows)}), got {visibility.shape}")
    gt_class, det_class = labelmap.index_of(gt_rows.action_id), labelmap.index_of(det_rows.action_id)
    # (video, second, class) groups shared by both files: dense codes over the concatenation
    keys = np.concatenate([np.char.add(np.char.add(gt_rows.video.astype(str), "|"), gt_rows.timestamp.astype(str)),
                           np.char.add(np.char.add(det_rows.video.astype(str), "|"), det_rows.timestamp.astype(str))])
    _, codes = np.unique(keys, return_inverse=True)
    codes = codes.reshape(-1) * (len(labelmap) + 1) + np.concatenate([gt_class, det_class]) + 1
    gt_code, det_code = codes[: len(gt_rows)], codes[len(gt_rows):]
    best_gt = np.full(len(det_rows), -1, np.int64)  # the same-class ground-truth row each detection overlaps most
    gt_by_code = _groups(gt_code)
    for code, dets in _groups(det_code).items():
        gts = gt_by_code.get(code)
        if gts is None or det_class[dets[0]] < 0:
            continue
        iou = iou_matrix(det_rows.boxes[dets], gt_rows.boxes[gts])  # [n, m]
        j = np.argmax(iou, axis=1)
        hit = iou[np.arange(len(dets)), j] >= iou_threshold
        best_gt[dets[hit]] = gts[j[hit]]
    out: dict[str, dict[str, Any]] = {}
    for i, (lo, hi) in enumerate(bands):
        in_band = (visibility >= lo) & ((visibility <= hi) if i == len(bands) - 1 else (visibility < hi))
        ignored = (best_gt >= 0) & ~in_band[np.maximum(best_gt, 0)]
        result = ava_map(gt_rows.select(in_band), det_rows.select(~ignored), labelmap, excluded=excluded,
                         iou_threshold=iou_threshold, top_k=top_k)
        in_map = gt_class[in_band] >= 0
        out[f"{lo:g}-{hi:g}"] = {"mAP": result.mAP, "per_class": result.per_class, "n_gt": int(in_map.sum())}
    return out


def actor_ap(gt_rows: AVARows, det_rows: AVARows, labelmap: LabelMap, *, excluded: Iterable[tuple[str, int]] = (),
             iou_threshold: float = IOU_THRESHOLD, top_k: int | None = TOP_K) -> AVAResult:
    """Class-agnostic AVA AP ("actor AP", stad's diagnostic): how well the actors are found, whatever their actions.

    Rows of the label map's classes only. Ground truth: one row per distinct (keyframe, box). Detections: rows with
    the same keyframe and box (a keyframe detector gives one box all its class scores) become one row with their
    highest score. Then :func:`ava_map` with the single class ``actor``.
    """
    def merged(rows: AVARows, keep_max_score: bool) -> AVARows:
        rows = rows.select(labelmap.index_of(rows.action_id) >= 0)
        if len(rows) == 0:
            return rows
        keys = np.char.add(np.char.add(rows.video.astype(str), "|"), rows.timestamp.astype(str))
        _, key_code = np.unique(keys, return_inverse=True)
        table = np.column_stack([key_code.reshape(-1).astype(np.float64), rows.boxes])
        order = np.lexsort((-rows.score, *table.T[::-1])) if keep_max_score else np.arange(len(rows))
        _, first = np.unique(table[order], axis=0, return_index=True)
        pick = np.sort(order[first])  # file order of the kept rows
        return AVARows.from_arrays(video=rows.video[pick], timestamp=rows.timestamp[pick], boxes=rows.boxes[pick],
                                   action_id=np.ones(len(pick), np.int64), score=rows.score[pick], path=rows.path)

    actor = LabelMap(ids=[1], names=["actor"], label_types=[None])
    return ava_map(merged(gt_rows, False), merged(det_rows, True), actor, excluded=excluded,
                   iou_threshold=iou_threshold, top_k=top_k)


def _groups(codes: np.ndarray) -> dict[int, np.ndarray]:
    """Row indices of each distinct code (rows in file order)."""
    order = np.argsort(codes, kind="stable")
    distinct = np.unique(codes)
    return dict(zip(distinct.tolist(), np.split(order, np.searchsorted(codes[order], distinct)[1:])))


def _precision_recall(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision/recall after each detection, ranked by NumPy's default argsort of ``scores`` reversed
    (the reference's tie order; ``scores`` must be in the reference's concatenation order)."""
    ranked = np.argsort(scores)[::-1]
    return voc_curve(tp[ranked], num_gt)


def iou_matrix(det_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Continuous IoU ``(N, M)`` of ``x1, y1, x2, y2`` boxes, float64, with the reference's arithmetic
    (no guard: a zero union gives NaN, as there)."""
    return _paired_iou(det_boxes[:, None, :], gt_boxes[None, :, :])


def _paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of broadcastable ``(..., 4)`` ``x1, y1, x2, y2`` boxes in the reference's order of operations."""
    heights = np.maximum(0.0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]))
    widths = np.maximum(0.0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]))
    inter = heights * widths
    area_a = (a[..., 3] - a[..., 1]) * (a[..., 2] - a[..., 0])
    area_b = (b[..., 3] - b[..., 1]) * (b[..., 2] - b[..., 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a + area_b - inter)


# --------------------------------------------------------------------------------------------------
# Vectorized stages
# --------------------------------------------------------------------------------------------------


@dataclass
class _GT:
    """Ground truth sorted by (keyframe, class, reference order); ``M`` rows."""

    rows: np.ndarray  # (M,) row index into gt_rows
    key: np.ndarray  # (M,) dense keyframe id
    cls: np.ndarray  # (M,) class index
    group: np.ndarray  # (M,) key * C + cls, sorted
    boxes: np.ndarray  # (M, 4)


@dataclass
class _Det:
    """Kept, valid detections in (keyframe first appearance, score desc, file order); ``N`` rows."""

    rows: np.ndarray  # (N,) row index into det_rows
    key: np.ndarray  # (N,) dense keyframe id
    kf_order: np.ndarray  # (N,) rank of the keyframe's first appearance in the detection file
    pos: np.ndarray  # (N,) position in the keyframe's sorted list (before invalid removal)
    cls: np.ndarray  # (N,) class index
    score: np.ndarray  # (N,)
    boxes: np.ndarray  # (N, 4)
    boundary_tie_keyframes: np.ndarray  # dense keyframe ids with a tie at the cap
    kf_order_of_key: dict[int, int]  # dense keyframe id -> kf_order (for replayed keyframes)
    filtered_key: np.ndarray  # (N_in,) keyframe id of every class-filtered, non-excluded row (file order)
    filtered_rows: np.ndarray  # (N_in,) their row indices into det_rows (replay only)


def _keyframe_keys(
    gt_rows: AVARows, det_rows: AVARows, gt_in: np.ndarray, det_in: np.ndarray, excluded: Iterable[tuple[str, int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense int64 keyframe ids ``(video, second)`` for the selected rows of both files and the exclusions."""
    excluded = list(excluded)
    ex_video = np.asarray([v for v, _ in excluded], dtype=str)
    ex_ts = np.asarray([int(t) for _, t in excluded], dtype=np.int64)
    gt_video_codes, det_video_codes, ex_codes = _video_codes(
        [gt_rows.video[gt_in], det_rows.video[det_in], ex_video]
    )
    all_ts = np.concatenate([gt_rows.timestamp[gt_in], det_rows.timestamp[det_in], ex_ts])
    ts_min = int(all_ts.min()) if all_ts.size else 0
    span = (int(all_ts.max()) - ts_min + 1) if all_ts.size else 1
    gt_key = gt_video_codes * span + (gt_rows.timestamp[gt_in] - ts_min)
    det_key = det_video_codes * span + (det_rows.timestamp[det_in] - ts_min)
    ex_key = ex_codes * span + (ex_ts - ts_min)
    return gt_key.astype(np.int64), det_key.astype(np.int64), ex_key.astype(np.int64)


def _video_codes(videos_per_source: list[np.ndarray]) -> list[np.ndarray]:
    """Integer codes of video ids shared across sources; fast when equal ids come in runs (AVA files)."""
    heads_list, run_lengths = [], []
    for videos in videos_per_source:
        if videos.size == 0:
            heads_list.append(videos.astype(str))
            run_lengths.append(np.zeros(0, np.int64))
            continue
        change = np.concatenate([[True], videos[1:] != videos[:-1]])
        starts = np.flatnonzero(change)
        heads_list.append(videos[starts].astype(str))
        run_lengths.append(np.diff(np.concatenate([starts, [len(videos)]])))
    all_heads = np.concatenate(heads_list) if heads_list else np.zeros(0, str)
    _, inverse = np.unique(all_heads, return_inverse=True)
    out, offset = [], 0
    for heads, lengths in zip(heads_list, run_lengths):
        codes_of_runs = inverse[offset : offset + len(heads)].astype(np.int64)
        offset += len(heads)
        out.append(np.repeat(codes_of_runs, lengths))
    return out


def _ground_truth(gt_rows: AVARows, gt_in: np.ndarray, gt_key: np.ndarray, gt_class: np.ndarray, C: int) -> _GT:
    """Ground truth per (keyframe, class) in the reference's order: descending "score" (the person id
    for 8-column files, 1.0 for 7 columns), file order on ties (exact ties are replayed when they matter)."""
    cls = gt_class[gt_in]
    person = gt_rows.person_id[gt_in]
    sort_score = np.where(person >= 0, person.astype(np.float64), 1.0)
    group = gt_key * C + cls
    order = np.lexsort((gt_in, -sort_score, group))
    rows = gt_in[order]
    return _GT(rows=rows, key=gt_key[order], cls=cls[order], group=group[order], boxes=gt_rows.boxes[rows])


def _detections(det_rows: AVARows, det_in: np.ndarray, det_key: np.ndarray, det_class: np.ndarray, cap: int) -> _Det:
    """Top-``cap`` detections per keyframe in descending score (file order on ties), invalid boxes removed."""
    uniq_keys, first_index, inverse = np.unique(det_key, return_index=True, return_inverse=True)
    kf_rank = np.empty(len(uniq_keys), np.int64)
    kf_rank[np.argsort(first_index, kind="stable")] = np.arange(len(uniq_keys))
    kf_order = kf_rank[inverse]
    score = det_rows.score[det_in]
    order = np.lexsort((-score, kf_order))  # [N_in] keyframe, score desc; stable, so file order on ties
    kf_sorted = kf_order[order]
    starts = np.flatnonzero(np.concatenate([[True], kf_sorted[1:] != kf_sorted[:-1]])[: len(order)])
    counts = np.diff(np.concatenate([starts, [len(order)]]))
    pos = np.arange(len(order)) - np.repeat(starts, counts)
    boundary = np.zeros(0, np.int64)
    keep = np.ones(len(order), bool)
    if cap:
        keep = pos < cap
        over = np.flatnonzero(counts > cap)
        sorted_score = score[order]
        tied = sorted_score[starts[over] + cap - 1] == sorted_score[starts[over] + cap]
        boundary = det_key[order][starts[over[tied]]]
    rows = det_in[order][keep]
    boxes = det_rows.boxes[rows]
    valid = (boxes[:, 1] < boxes[:, 3]) & (boxes[:, 0] < boxes[:, 2])
    sel = np.flatnonzero(keep)[valid]
    kf_order_of_key = dict(zip(uniq_keys.tolist(), kf_rank.tolist()))
    return _Det(
        rows=det_in[order][sel],
        key=det_key[order][sel],
        kf_order=kf_sorted[sel],
        pos=pos[sel],
        cls=det_class[det_in[order][sel]],
        score=score[order][sel],
        boxes=boxes[valid],
        boundary_tie_keyframes=boundary.astype(np.int64),
        kf_order_of_key=kf_order_of_key,
        filtered_key=det_key,
        filtered_rows=det_in,
    )


def _same_score_ambiguity(det: _Det, gt: _GT, C: int) -> np.ndarray:
    """Keyframes where two kept detections share class and score but not the box, and that class has
    ground truth there: the reference's heap order (not file order) then decides which one is matched."""
    if len(det.rows) < 2:
        return np.zeros(0, np.int64)
    # Detections are sorted by (keyframe, descending score): equal scores of a keyframe are adjacent.
    tied = (det.key[1:] == det.key[:-1]) & (det.score[1:] == det.score[:-1])
    in_tie = np.zeros(len(det.rows), bool)
    in_tie[1:] |= tied
    in_tie[:-1] |= tied
    sub = np.flatnonzero(in_tie)
    if len(sub) < 2:
        return np.zeros(0, np.int64)
    b = det.boxes[sub]
    order = np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], det.score[sub], det.cls[sub], det.key[sub]))
    key, cls, score, boxes = det.key[sub][order], det.cls[sub][order], det.score[sub][order], b[order]
    same_group = (key[1:] == key[:-1]) & (cls[1:] == cls[:-1]) & (score[1:] == score[:-1])
    different_box = np.any(boxes[1:] != boxes[:-1], axis=1)
    hit = np.flatnonzero(same_group & different_box)
    with_gt = np.isin(key[hit] * C + cls[hit], gt.group)
    return np.unique(key[hit][with_gt]).astype(np.int64)


def _match(det: _Det, gt: _GT, C: int, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """VOC matching of every detection at once. Returns TP ``(N,)`` bool and the keyframes with a
    detection whose best IoU is shared by several ground-truth boxes (decided by replay)."""
    n = len(det.rows)
    tp = np.zeros(n, bool)
    if n == 0 or len(gt.rows) == 0:
        return tp, np.zeros(0, np.int64)
    group = det.key * C + det.cls
    first = np.searchsorted(gt.group, group, side="left")
    num_pairs = np.searchsorted(gt.group, group, side="right") - first  # [N] GT of its keyframe and class
    has_gt = np.flatnonzero(num_pairs > 0)
    if len(has_gt) == 0:
        return tp, np.zeros(0, np.int64)
    counts = num_pairs[has_gt]
    pair_starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    offsets = np.arange(counts.sum()) - np.repeat(pair_starts, counts)  # [P] index within the GT group
    gt_index = np.repeat(first[has_gt], counts) + offsets  # [P]
    iou = _paired_iou(det.boxes[np.repeat(has_gt, counts)], gt.boxes[gt_index])  # [P]
    best = np.maximum.reduceat(iou, pair_starts)  # NaN propagates: the reference's argmax takes a NaN, never a TP
    is_best = iou == np.repeat(best, counts)
    best_offset = np.minimum.reduceat(np.where(is_best, offsets, np.iinfo(np.int64).max), pair_starts)
    num_best = np.add.reduceat(is_best.astype(np.int64), pair_starts)
    candidate = best >= iou_threshold  # [has_gt]
    matched_gt = first[has_gt] + best_offset
    cand_rows = has_gt[candidate]
    # The first detection (keyframe order) taking a GT box with IoU >= threshold is the TP; later ones are FP.
    _, first_taker = np.unique(matched_gt[candidate], return_index=True)
    tp[cand_rows[first_taker]] = True
    undecided = np.unique(det.key[has_gt[candidate & (num_best > 1)]]).astype(np.int64)
    return tp, undecided


# --------------------------------------------------------------------------------------------------
# Exact replay of the reference for the few keyframes where its heap order matters
# --------------------------------------------------------------------------------------------------


def _splice_replayed(
    det: _Det,
    tp: np.ndarray,
    replay: np.ndarray,
    gt_rows: AVARows,
    det_rows: AVARows,
    gt: _GT,
    cap: int,
    iou_threshold: float,
    labelmap: LabelMap,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(keyframe order, position, class, score, TP) of all evaluated detections, with replayed keyframes."""
    if len(replay) == 0:
        return det.kf_order, det.pos, det.cls, det.score, tp
    fast = ~np.isin(det.key, replay)
    all_key, all_rows = det.filtered_key, det.filtered_rows
    sel = np.isin(all_key, replay)
    order = np.argsort(all_key[sel], kind="stable")
    det_rows_of = _split_by_key(all_key[sel][order], all_rows[sel][order])
    gt_sel = np.isin(gt.key, replay)
    gt_order = np.argsort(gt.rows[gt_sel], kind="stable")  # file order inside each keyframe
    gt_rows_of = _split_by_key(gt.key[gt_sel][gt_order], gt.rows[gt_sel][gt_order])
    class_of_id = dict(zip(labelmap.ids, range(len(labelmap))))
    parts = {
        "kf": [det.kf_order[fast]],
        "pos": [det.pos[fast]],
        "cls": [det.cls[fast]],
        "score": [det.score[fast]],
        "tp": [tp[fast]],
    }
    for key in replay.tolist():
        out = _replay_keyframe(
            det_rows, det_rows_of.get(key, np.zeros(0, np.int64)), gt_rows, gt_rows_of.get(key, np.zeros(0, np.int64)),
            cap, iou_threshold, class_of_id,
        )
        parts["kf"].append(np.full(len(out[0]), det.kf_order_of_key[key], np.int64))
        parts["pos"].append(out[0])
        parts["cls"].append(out[1])
        parts["score"].append(out[2])
        parts["tp"].append(out[3])
    kf, pos, cls, score, is_tp = (np.concatenate(parts[name]) for name in ("kf", "pos", "cls", "score", "tp"))
    return kf, pos, cls, score, is_tp


def _split_by_key(keys: np.ndarray, values: np.ndarray) -> dict[int, np.ndarray]:
    uniq, starts = np.unique(keys, return_index=True)
    ends = np.concatenate([starts[1:], [len(keys)]])
    return {int(k): values[s:e] for k, s, e in zip(uniq, starts, ends)}


def _reference_sorted(rows: AVARows, indices: np.ndarray, scores: np.ndarray, cap: int) -> list[int]:
    """Row indices of one keyframe as the reference's reader leaves them: heap of
    ``(score, action_id, y1, x1, y2, x2)`` fed in file order (capped at ``cap``), then a stable sort
    by descending score over the heap array."""
    heap: list[tuple] = []
    by_tuple: dict[tuple, deque] = defaultdict(deque)
    for i, score in zip(indices.tolist(), scores.tolist()):
        x1, y1, x2, y2 = rows.boxes[i].tolist()
        entry = (score, int(rows.action_id[i]), y1, x1, y2, x2)
        by_tuple[entry].append(i)
        if cap < 1 or len(heap) < cap:
            heapq.heappush(heap, entry)
        elif score > heap[0][0]:
            heapq.heapreplace(heap, entry)
    ordered = sorted(heap, key=lambda entry: -entry[0])
    # Equal tuples are indistinguishable to the evaluator; hand out their rows in file order.
    return [by_tuple[entry].popleft() for entry in ordered]


def _replay_keyframe(
    det_rows: AVARows,
    det_indices: np.ndarray,
    gt_rows: AVARows,
    gt_indices: np.ndarray,
    cap: int,
    iou_threshold: float,
    class_of_id: dict[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate one keyframe in the reference's exact order; returns (position, class, score, TP) of
    its kept valid detections."""
    det_order = _reference_sorted(det_rows, det_indices, det_rows.score[det_indices], cap)
    gt_person = gt_rows.person_id[gt_indices]
    gt_score = np.where(gt_person >= 0, gt_person.astype(np.float64), 1.0)
    gt_order = np.asarray(_reference_sorted(gt_rows, gt_indices, gt_score, 0), dtype=np.int64)
    det_order_arr = np.asarray(det_order, dtype=np.int64)
    boxes = det_rows.boxes[det_order_arr].reshape(-1, 4)
    valid = (boxes[:, 1] < boxes[:, 3]) & (boxes[:, 0] < boxes[:, 2])
    position = np.flatnonzero(valid)
    det_idx = det_order_arr[valid]
    det_cls = np.asarray([class_of_id[int(a)] for a in det_rows.action_id[det_idx]], dtype=np.int64)
    gt_cls = np.asarray([class_of_id[int(a)] for a in gt_rows.action_id[gt_order]], dtype=np.int64)
    tp = np.zeros(len(det_idx), bool)
    for c in np.unique(det_cls).tolist():
        d_sel = np.flatnonzero(det_cls == c)
        g_boxes = gt_rows.boxes[gt_order[gt_cls == c]].reshape(-1, 4)
        if len(g_boxes) == 0:
            continue
        iou = iou_matrix(det_rows.boxes[det_idx[d_sel]], g_boxes)  # [n_c, m_c]
        taken = np.zeros(len(g_boxes), bool)
        for row, (j, g) in enumerate(zip(d_sel.tolist(), np.argmax(iou, axis=1).tolist())):
            if iou[row, g] >= iou_threshold and not taken[g]:
                tp[j] = True
                taken[g] = True
    return position.astype(np.int64), det_cls, det_rows.score[det_idx], tp


__all__ = ["AVAResult", "ava_map", "iou_matrix"]
