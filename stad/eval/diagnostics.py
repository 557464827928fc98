"""Diagnostics beyond mAP, ACT protocol: frame-AP error breakdown, frame-MABO, video classification,
and frame-AP per ground-truth visibility band.

Error breakdown (the ACT release's ``frameAP_error``, also in MOC-Detector). Detections of a class
are ranked and matched exactly as for frame-AP; each false positive gets one cause:

* **localization** (``EL``): its frame has ground truth of this class, but no still-unmatched box
  with IoU >= th (a duplicate of an already matched box counts here);
* **classification** (``EC``): its frame has no ground truth of this class, but a box of another
  class with IoU >= th;
* **time** (``ET``): its frame has no ground truth of any class, but the video contains this
  class at other frames;
* **other** (``EO``): everything else (other-class boxes with IoU < th in the frame, or a video
  without the class).

As in the reference, each error type is reported as the area under its curve "error count /
detections so far" versus recall (trapezoid, like AP), so AP + the four error areas + missed = 1 when
the curve reaches its final recall; **missed** = 1 - final recall.

Frame-MABO (ACT ``frameMABO``): for every ground-truth box of the test videos, the best IoU with any
detection of its frame (any class; 0 if the frame has none); averaged per class, then over the
classes with ground truth.

Video classification accuracy (defined here; ACT reports a per-frame variant): the predicted class of a
test video is the label of its highest-scoring tube; accuracy = fraction of test videos whose
predicted class is one of the classes of its ground-truth tubes (a video without tubes is wrong).

Frame-AP per visibility band (needs ``gt.visibility``): the whole ground truth is matched as for
frame-AP; the positives of a band are the boxes whose visibility lies in it. A detection matched to a
box of *another* band is ignored (neither TP nor FP: it found a real actor, just not one of this
band); unmatched detections stay false positives in every band. Bands are half-open ``[lo, hi)``
except the last, which includes 1.0.

Actor AP (class-agnostic frame-AP, :func:`class_agnostic`, defined here): how well a model finds the actors,
whatever their action. Every ground-truth tube becomes label 0 ("actor"); the detections of each frame are
merged across classes by NMS (+1 IoU above 0.5, the highest score survives, as a class-agnostic detector would output)
and relabelled 0; then frame-AP (and frame-AP per visibility band) is computed as above. On the synthetic
benchmark, whose classes are defined by motion, it separates finding occluded actors from naming the action.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from stad.boxes import box_iou_paired
from stad.errors import StadError
from stad.eval.ap import act_ap_from_curve, act_curve
from stad.eval.frame_map import candidate_ious, group_candidates, match_act, prepare_inputs
from stad.structures import FrameDetections, Tube, TubeAnnotations

DEFAULT_BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.25), (0.25, 0.75), (0.75, 1.0))


@dataclass
class ErrorBreakdown:
    """Per-class frame-AP error analysis (fractions in [0, 1]); ``mean`` holds the class means.

    Attributes:
        ap, localization, classification, time, other, missed: label name -> value.
    """

    ap: dict[str, float]
    localization: dict[str, float]
    classification: dict[str, float]
    time: dict[str, float]
    other: dict[str, float]
    missed: dict[str, float]

    def mean(self) -> dict[str, float]:
        return {k: float(np.mean(np.array(list(getattr(self, k).values()), np.float32))) for k in self._fields()}

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return ("ap", "localization", "classification", "time", "other", "missed")

    def to_json(self) -> dict[str, Any]:
        return {"per_class": {k: getattr(self, k) for k in self._fields()}, "mean": self.mean()}


def frame_ap_errors(gt: TubeAnnotations, dets: FrameDetections, *, split: int = 1, iou: float = 0.5) -> ErrorBreakdown:
    """ACT frame-AP error breakdown (see the module docstring for the definitions).

    Returns:
        :class:`ErrorBreakdown`; its ``ap`` equals :func:`stad.eval.frame_map.frame_map` (``"act"``).
    """
    inputs = prepare_inputs(gt, dets, split=split, act_float32=True)
    table, det_video, keys, scores, boxes = inputs.table, inputs.det_video, inputs.keys, inputs.scores, inputs.boxes
    gt_keys = table.key
    labels_of_video = [set(int(c) for c in gt.gttubes.get(v, {})) for v in inputs.videos]
    out: dict[str, dict[str, float]] = {k: {} for k in ErrorBreakdown._fields()}
    det_label = np.asarray(dets.label, np.int64)
    for c, name in enumerate(gt.labels):
        sel = np.flatnonzero(det_label == c)
        ranked = sel[np.argsort(-scores[sel])]
        gsel = np.flatnonzero(table.label == c)
        matched = match_act(keys[ranked], boxes[ranked], gt_keys[gsel], table.boxes[gsel], iou=iou, plus_one=True)
        tp = matched >= 0
        fp = ~tp
        has_own = np.isin(keys[ranked], gt_keys[gsel])
        # other-class ground truth of the frame: best IoU
        osel = np.flatnonzero(table.label != c)
        best_other = np.full(ranked.size, -1.0)
        if osel.size and ranked.size:
            other = candidate_ious(keys[ranked], boxes[ranked], gt_keys[osel], table.boxes[osel], plus_one=True)
            if other.cand.rows.size:
                best_other[other.cand.rows] = other.ious.max(axis=1)
        has_other = best_other >= 0
        video_has_c = np.array([c in labels_of_video[v] for v in det_video[ranked]], bool)
        el = fp & has_own
        ec = fp & ~has_own & has_other & (best_other >= iou)
        eo_frame = fp & ~has_own & has_other & (best_other < iou)
        et = fp & ~has_own & ~has_other & video_has_c
        eo = eo_frame | (fp & ~has_own & ~has_other & ~video_has_c)
        precision, recall = act_curve(tp, gsel.size)
        out["ap"][name] = act_ap_from_curve(precision, recall)
        n_so_far = np.arange(1, ranked.size + 1, dtype=np.float64)
        for key, flags in (("localization", el), ("classification", ec), ("time", et), ("other", eo)):
            curve = np.empty(ranked.size + 1, np.float32)
            curve[0] = 0.0
            curve[1:] = np.cumsum(flags) / n_so_far
            out[key][name] = act_ap_from_curve(curve, recall)
        out["missed"][name] = float(1.0 - np.float32(recall[-1]))
    return ErrorBreakdown(**out)


def frame_mabo(gt: TubeAnnotations, dets: FrameDetections, *, split: int = 1) -> tuple[float, dict[str, float]]:
    """Frame mean average best overlap ("+1" IoU), see the module docstring.

    Returns:
        ``(mabo, per_class)``: the mean over classes with ground truth, and label -> ABO
        (NaN for a class without test ground truth).
    """
    inputs = prepare_inputs(gt, dets, split=split, act_float32=True)
    table, keys, boxes = inputs.table, inputs.keys, inputs.boxes
    best = np.zeros(table.key.shape[0])
    if len(dets) and table.key.size:
        dorder = np.argsort(keys, kind="stable")
        cand = group_candidates(keys[dorder], table.key)
        gt_idx, cols, valid = cand.rows, cand.cols, cand.valid
        sorted_boxes = boxes[dorder]
        chunk = max(1, 4_000_000 // max(cols.shape[1], 1))
        for lo in range(0, gt_idx.size, chunk):  # bounded memory for frames with many detections
            part = slice(lo, lo + chunk)
            ious = box_iou_paired(table.boxes[gt_idx[part]][:, None, :], sorted_boxes[cols[part]], plus_one=True)
            ious[~valid[part]] = 0.0
            best[gt_idx[part]] = ious.max(axis=1)
    per_class = {}
    for c, name in enumerate(gt.labels):
        m = table.label == c
        per_class[name] = float(best[m].mean()) if m.any() else float("nan")
    vals = [v for v in per_class.values() if np.isfinite(v)]
    return (float(np.mean(vals)) if vals else float("nan")), per_class


def video_classification(gt: TubeAnnotations, tubes: dict[str, list[Tube]], *, split: int = 1) -> float:
    """Fraction of test videos whose highest-scoring tube has one of the video's ground-truth classes."""
    videos = gt.split_videos(split, "test")
    unknown = sorted(set(tubes) - set(videos))
    if unknown:
        raise StadError(f"tubes: video {unknown[0]!r} is not a test video of split {split}")
    if not videos:
        return float("nan")
    correct = 0
    for v in videos:
        vt = tubes.get(v, [])
        if vt:
            top = max(vt, key=lambda t: t.score)
            correct += int(top.label) in {int(c) for c, ts in gt.gttubes.get(v, {}).items() if len(ts)}
    return correct / len(videos)


def frame_ap_by_visibility(
    gt: TubeAnnotations,
    dets: FrameDetections,
    *,
    split: int = 1,
    iou: float = 0.5,
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
) -> dict[str, dict[str, Any]]:
    """ACT frame-mAP per ground-truth visibility band (rules in the module docstring).

    Returns:
        band name ``"lo-hi"`` -> ``{"mAP": mean over classes with ground truth in the band,
        "per_class": label -> AP (NaN without ground truth in the band), "n_gt": int}``.

    Raises:
        StadError: the ground truth has no visibility.
    """
    if gt.visibility is None:
        raise StadError("frame-AP per visibility band needs ground-truth visibility (gt.visibility is None)")
    inputs = prepare_inputs(gt, dets, split=split, act_float32=True)
    table, keys, scores, boxes = inputs.table, inputs.keys, inputs.scores, inputs.boxes
    vis = table.visibility
    det_label = np.asarray(dets.label, np.int64)
    matches = []
    for c in range(len(gt.labels)):
        sel = np.flatnonzero(det_label == c)
        ranked = sel[np.argsort(-scores[sel])]
        gsel = np.flatnonzero(table.label == c)
        m = match_act(keys[ranked], boxes[ranked], table.key[gsel], table.boxes[gsel], iou=iou, plus_one=True)
        gidx = np.full(m.shape, -1, np.int64)  # matched ground-truth row per ranked detection
        gidx[m >= 0] = gsel[m[m >= 0]]  # (a class without ground truth has no matches)
        matches.append((ranked, gidx, gsel))
    out: dict[str, dict[str, Any]] = {}
    for i, (lo, hi) in enumerate(bands):
        last = i == len(bands) - 1
        in_band = (vis >= lo) & ((vis <= hi) if last else (vis < hi))
        per_class = {}
        for c, name in enumerate(gt.labels):
            ranked, gidx, gsel = matches[c]
            n_gt = int(in_band[gsel].sum())
            matched = gidx >= 0
            ignore = matched & ~in_band[np.maximum(gidx, 0)]
            tp = matched[~ignore]
            precision, recall = act_curve(tp, n_gt)
            per_class[name] = act_ap_from_curve(precision, recall) if n_gt else float("nan")
        vals = [v for v in per_class.values() if np.isfinite(v)]
        out[f"{lo:g}-{hi:g}"] = {
            "mAP": float(np.mean(vals)) if vals else float("nan"),
            "per_class": per_class,
            "n_gt": int(in_band.sum()),
        }
    return out


def class_agnostic(gt: TubeAnnotations, dets: FrameDetections, *, nms_iou: float = 0.5) -> tuple[TubeAnnotations, FrameDetections]:
    """The class-agnostic view of ground truth and detections (module docstring, "Actor AP"): one label
    ``"actor"``; the detections of each frame merged across classes by NMS at ``nms_iou`` (ACT "+1" IoU)."""
    from stad.tubes.nms import batched_frame_soft_nms

    merged_gt = replace(gt.class_agnostic("actor"), name=gt.name)
    if len(dets) == 0:
        return merged_gt, dets
    frame_key = dets.video.astype(np.int64) * (int(dets.frame.max()) + 1) + dets.frame.astype(np.int64)
    scores = np.asarray(dets.score, np.float64)
    # The soft NMS keeps weight exactly 1 for the boxes that no better box overlaps above the threshold and
    # lowers every other one: those boxes are the ones a hard NMS keeps.
    keep = np.flatnonzero(batched_frame_soft_nms(dets.boxes, scores, frame_key, threshold=nms_iou) == scores)
    merged = FrameDetections(
        videos=dets.videos, video=dets.video[keep], frame=dets.frame[keep], label=np.zeros(keep.size, dets.label.dtype),
        score=dets.score[keep], boxes=dets.boxes[keep],
    )
    return merged_gt, merged


def actor_metrics(
    gt: TubeAnnotations, dets: FrameDetections, *, split: int = 1, iou: float = 0.5, by_visibility: bool = True
) -> dict[str, float]:
    """``{"actor_AP": ..., "actor_AP/vis<lo>-<hi>": ...}``: class-agnostic frame-AP (module docstring), per
    visibility band too when ``by_visibility`` and the ground truth has visibility (fractions)."""
    from stad.eval.frame_map import frame_map

    agnostic_gt, agnostic_dets = class_agnostic(gt, dets)
    out = {"actor_AP": float(frame_map(agnostic_gt, agnostic_dets, split=split, iou=iou).mAP)}
    if by_visibility and gt.visibility is not None:
        bands = frame_ap_by_visibility(agnostic_gt, agnostic_dets, split=split, iou=iou)
        out.update({f"actor_AP/vis{band}": float(v["mAP"]) for band, v in bands.items()})
    return out


@dataclass
class OcclusionReport:
    """Occlusion-aware metrics of one set of predictions (needs ground-truth visibility).

    Attributes:
        frame_by_band: :func:`frame_ap_by_visibility`'s result (band ``"lo-hi"`` -> mAP, per class, n_gt).
        video_occluded: :func:`stad.eval.video_map.video_map_occluded`'s result.
    """

    frame_by_band: dict[str, dict[str, Any]]
    video_occluded: Any  # stad.eval.video_map.OccludedVideoMAP

    def flat(self) -> dict[str, float]:
        """``{"frame_mAP/vis<lo>-<hi>": ..., "video_mAP_occluded@<thr>": ...}`` (fractions, NaN allowed)."""
        out = {f"frame_mAP/vis{band}": float(v["mAP"]) for band, v in self.frame_by_band.items()}
        out.update({f"video_mAP_occluded@{thr}": float(v) for thr, v in self.video_occluded.mAP.items()})
        return out

    def to_json(self) -> dict[str, Any]:
        return {"frame_by_visibility": self.frame_by_band, "video_occluded": self.video_occluded.to_json()}

    def markdown(self) -> str:
        """Two Markdown tables: frame-mAP per visibility band, video-mAP on occluded tubes per threshold."""
        lines = ["| visibility band | GT boxes | frame-mAP |", "|---|---:|---:|"]
        for band, v in self.frame_by_band.items():
            lines.append(f"| {band} | {v['n_gt']} | {100 * v['mAP']:.2f} |")
        occ = self.video_occluded
        lines += ["", f"Video-mAP on ground-truth tubes with visibility < {occ.occluded_below:g} on some frame "
                  f"({sum(occ.n_occluded.values())} tubes; detections of other tubes ignored):", "",
                  "| threshold | video-mAP (occluded) |", "|---|---:|"]
        lines += [f"| {thr} | {100 * v:.2f} |" for thr, v in occ.mAP.items()]
        return "\n".join(lines)


def occlusion_metrics(
    gt: TubeAnnotations,
    dets: FrameDetections,
    tubes: dict[str, list[Tube]],
    *,
    split: int = 1,
    frame_iou: float = 0.5,
    video_ious: Sequence[Any] = (0.2, 0.5, 0.75, "0.5:0.95"),
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
    occluded_below: float = 0.5,
) -> OcclusionReport:
    """Frame-mAP per visibility band and video-mAP on occluded tubes (rules: :func:`frame_ap_by_visibility`,
    :func:`stad.eval.video_map.video_map_occluded`).

    Raises:
        StadError: ``gt`` has no visibility.
    """
    from stad.eval.video_map import video_map_occluded

    return OcclusionReport(
        frame_by_band=frame_ap_by_visibility(gt, dets, split=split, iou=frame_iou, bands=bands),
        video_occluded=video_map_occluded(gt, tubes, split=split, thresholds=video_ious, occluded_below=occluded_below),
    )
