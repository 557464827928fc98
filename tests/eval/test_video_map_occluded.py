"""Video-mAP on occluded ground-truth tubes: a hand-made case and equality with a loop reference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stad.errors import StadError
from stad.eval.video_map import video_map, video_map_occluded
from stad.structures import Tube
from tests.eval.gt import make_gt
from tests.eval.test_video_map import dtube, gtube, tube_iou


def with_visibility(gt, vis):
    """``vis``: video -> label -> list of per-tube visibility arrays (or a scalar min visibility)."""
    out = {}
    for v, labels in gt.gttubes.items():
        out[v] = {}
        for label, tubes in labels.items():
            out[v][label] = []
            for i, t in enumerate(tubes):
                spec = vis[v][label][i]
                arr = np.ones(len(t), np.float32)
                arr[len(t) // 2] = spec  # one frame at this visibility
                out[v][label].append(arr)
    return replace(gt, visibility=out)


def test_detection_of_a_visible_tube_is_ignored():
    gt = make_gt({"v": {0: [gtube(1, 20, (0, 0, 49, 49)), gtube(1, 20, (100, 100, 149, 149))]}}, labels=("a",), nframes=40)
    gt = with_visibility(gt, {"v": {0: [1.0, 0.3]}})  # tube 0 visible, tube 1 occluded on one frame
    tubes = {"v": [dtube(0, 0.9, 1, 20, (0, 0, 49, 49)),          # matches the visible tube: ignored
                   dtube(0, 0.8, 1, 20, (100, 100, 149, 149)),    # matches the occluded tube: TP
                   dtube(0, 0.7, 1, 20, (200, 200, 230, 230))]}   # nothing: FP after the TP
    res = video_map_occluded(gt, tubes, thresholds=(0.5,))
    assert res.n_occluded == {"a": 1}
    assert res.mAP == {"0.5": 1.0}
    # a false positive ranked first: curve (0, 1) -> (0, 0) -> (1, 0.5): trapezoid 0.25
    tubes["v"][2] = dtube(0, 0.95, 1, 20, (200, 200, 230, 230))
    assert video_map_occluded(gt, tubes, thresholds=(0.5,)).mAP["0.5"] == pytest.approx(0.25)
    # same data, threshold at 0.3: the tube with min visibility 0.3 is not "below", no label has occluded tubes
    none = video_map_occluded(gt, tubes, thresholds=(0.5,), occluded_below=0.3)
    assert none.n_occluded == {"a": 0} and np.isnan(none.mAP["0.5"])


def test_needs_visibility():
    gt = make_gt({"v": {0: [gtube(1, 5, (0, 0, 9, 9))]}}, labels=("a",), nframes=10)
    with pytest.raises(StadError, match="visibility"):
        video_map_occluded(gt, {})


def loop_reference(gt, tubes, th, occluded_below):
    """Plain loops: rank each label's tubes by score, greedy best unmatched GT tube of the video, then
    TP (occluded GT) / ignored (visible GT) / FP; ACT trapezoid AP; mean over labels with occluded tubes."""
    aps = []
    for c, _ in enumerate(gt.labels):
        dets = [(t.score, v, t) for v in sorted(tubes) for t in tubes[v] if t.label == c]
        dets.sort(key=lambda d: -d[0])
        gts = {v: list(zip(gt.gttubes[v].get(c, []), gt.visibility[v].get(c, []))) for v in gt.gttubes}
        n_pos = sum(float(np.min(vis)) < occluded_below for v in gts for _, vis in gts[v])
        if n_pos == 0:
            continue
        used = {v: [False] * len(gts[v]) for v in gts}
        flags = []
        for _, v, t in dets:
            best, best_j = -1.0, -1
            for j, (g, _) in enumerate(gts.get(v, [])):
                if used[v][j]:
                    continue
                iou = tube_iou(t.boxes[:, :5], g)
                if iou > best:
                    best, best_j = iou, j
            if best_j >= 0 and best >= th:
                used[v][best_j] = True
                occluded = float(np.min(gts[v][best_j][1])) < occluded_below
                if occluded:
                    flags.append(True)
                # else: ignored
            else:
                flags.append(False)
        tp = fp = 0
        prec, rec = [1.0], [0.0]
        for f in flags:
            tp, fp = tp + f, fp + (not f)
            prec.append(tp / (tp + fp))
            rec.append(tp / n_pos)
        aps.append(sum((rec[i] - rec[i - 1]) * (prec[i] + prec[i - 1]) / 2 for i in range(1, len(rec))))
    return float(np.mean(aps)) if aps else float("nan")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_loop_reference(seed):
    rng = np.random.default_rng(seed)
    videos = {}
    vis = {}
    for vi in range(5):
        v = f"v{vi}"
        videos[v], vis[v] = {}, {}
        for c in range(2):
            ts, vs = [], []
            for _ in range(rng.integers(0, 3)):
                first = int(rng.integers(1, 15))
                last = first + int(rng.integers(5, 20))
                x, y = rng.uniform(0, 200, 2)
                ts.append(gtube(first, last, (x, y, x + 40, y + 40)))
                vv = np.ones(last - first + 1)
                if rng.random() < 0.5:
                    vv[rng.integers(0, len(vv))] = rng.uniform(0, 0.6)
                vs.append(vv)
            videos[v][c], vis[v][c] = ts, vs
    gt = replace(make_gt(videos, labels=("a", "b"), nframes=40), visibility=vis)
    tubes = {}
    for v in videos:
        tubes[v] = []
        for c in range(2):
            for g in videos[v][c]:  # jittered copies of the ground truth plus random tubes
                if rng.random() < 0.8:
                    cut = int(rng.integers(0, 4))
                    boxes = g[cut:] + np.r_[0, rng.normal(0, 3, 4)]
                    tubes[v].append(Tube(label=c, score=float(rng.random()),
                                         boxes=np.c_[boxes, np.full(len(boxes), 0.5)]))
            for _ in range(2):
                x, y = rng.uniform(0, 200, 2)
                tubes[v].append(dtube(c, float(rng.random()), 3, 12, (x, y, x + 30, y + 30)))
    for th in (0.2, 0.5):
        for below in (0.3, 0.5):
            got = video_map_occluded(gt, tubes, thresholds=(th,), nms=None, occluded_below=below).mAP[f"{th:g}"]
            want = loop_reference(gt, tubes, th, below)
            if np.isnan(want):
                assert np.isnan(got)
            else:
                assert got == pytest.approx(want, abs=1e-6)


def test_all_tubes_occluded_equals_video_map_over_labels_with_gt():
    gt = make_gt({"v": {0: [gtube(1, 20, (0, 0, 49, 49))], 1: [gtube(5, 30, (60, 60, 99, 99))]}}, labels=("a", "b"), nframes=40)
    gt = with_visibility(gt, {"v": {0: [0.1], 1: [0.2]}})
    tubes = {"v": [dtube(0, 0.9, 1, 20, (0, 0, 49, 49)), dtube(1, 0.8, 5, 30, (0, 0, 39, 39)), dtube(1, 0.7, 5, 30, (60, 60, 99, 99))]}
    full = video_map(gt, tubes)
    occ = video_map_occluded(gt, tubes)
    for thr, value in full.mAP.items():
        assert occ.mAP[thr] == pytest.approx(value)


def test_occlusion_metrics_flat_keys_and_a_class_without_ground_truth():
    from stad.eval.diagnostics import occlusion_metrics
    from stad.structures import FrameDetections

    gt = make_gt({"v": {0: [gtube(1, 4, (0, 0, 49, 49))]}}, labels=("a", "b"), nframes=10)
    gt = with_visibility(gt, {"v": {0: [0.2]}})  # frames 1..4 at visibility 1, 1, 0.2, 1
    # label "b" has detections but no ground truth (used to crash the per-band matching)
    dets = FrameDetections(videos=["v"], video=np.zeros(5, int), frame=np.array([1, 2, 3, 4, 1]), label=np.array([0, 0, 0, 0, 1]),
                           score=np.array([0.9, 0.8, 0.7, 0.6, 0.5]), boxes=np.tile([0.0, 0, 49, 49], (5, 1)))
    tubes = {"v": [dtube(0, 0.9, 1, 4, (0, 0, 49, 49)), dtube(1, 0.5, 1, 4, (0, 0, 49, 49))]}
    flat = occlusion_metrics(gt, dets, tubes, video_ious=(0.5,)).flat()
    assert flat == {"frame_mAP/vis0-0.25": 1.0, "frame_mAP/vis0.25-0.75": pytest.approx(float("nan"), nan_ok=True),
                    "frame_mAP/vis0.75-1": 1.0, "video_mAP_occluded@0.5": 1.0}
