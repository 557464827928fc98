"""Video-mAP (ACT protocol): hand-computed cases and equality with a loop implementation."""

from __future__ import annotations

import numpy as np
import pytest

from stad.boxes import box_iou_paired
from stad.errors import StadError
from stad.eval.video_map import parse_thresholds, video_map
from stad.structures import Tube, TubeAnnotations
from stad.tubes.nms import spatiotemporal_iou
from tests.eval.gt import make_gt as shared_make_gt


def tube_iou(a, b) -> float:
    """Loop reference of the ACT ``iou3dt`` (np.mean of the per-frame "+1" IoUs, as the release)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    tmin, tmax = max(a[0, 0], b[0, 0]), min(a[-1, 0], b[-1, 0])
    if tmax < tmin:
        return 0.0
    inter = tmax - tmin + 1
    union = max(a[-1, 0], b[-1, 0]) - min(a[0, 0], b[0, 0]) + 1
    ra = a[int(tmin - a[0, 0]) : int(tmax - a[0, 0]) + 1, 1:5]
    rb = b[int(tmin - b[0, 0]) : int(tmax - b[0, 0]) + 1, 1:5]
    return float(np.mean(box_iou_paired(ra, rb, plus_one=True)) * (inter / union))


def make_gt(tubes, *, labels=("a", "b"), nframes=40) -> TubeAnnotations:
    return shared_make_gt(tubes, labels=labels, nframes=nframes)


def gtube(first, last, box) -> np.ndarray:
    return np.array([[f, *box] for f in range(first, last + 1)], float)


def dtube(label, score, first, last, box) -> Tube:
    return Tube(label=label, score=score, boxes=np.array([[f, *box, score] for f in range(first, last + 1)], float))


@pytest.mark.parametrize("st_iou", [spatiotemporal_iou, tube_iou])
def test_tube_iou_rule(st_iou):
    a = gtube(1, 10, (0, 0, 9, 9))
    assert st_iou(a, a) == 1.0
    assert st_iou(a, gtube(6, 15, (0, 0, 9, 9))) == pytest.approx(5 / 15)
    assert st_iou(a, gtube(11, 15, (0, 0, 9, 9))) == 0.0
    assert st_iou(a, gtube(1, 10, (0, 0, 9, 4))) == pytest.approx(0.5)  # +1 areas: 50 / 100


def test_perfect_tubes_give_one():
    gt = make_gt({"v": {0: [gtube(1, 20, (0, 0, 49, 49))], 1: [gtube(5, 30, (60, 60, 99, 99))]}})
    tubes = {"v": [dtube(0, 0.9, 1, 20, (0, 0, 49, 49)), dtube(1, 0.8, 5, 30, (60, 60, 99, 99))]}
    res = video_map(gt, tubes)
    assert res.mAP == {"0.2": 1.0, "0.5": 1.0, "0.75": 1.0, "0.5:0.95": 1.0}


def test_tube_covering_half_the_gt_in_time():
    # GT frames 1..20, detection 1..10 exact boxes: ST-IoU = 10/20 = 0.5 -> TP at 0.2 and 0.5, FP at 0.75
    gt = make_gt({"v": {0: [gtube(1, 20, (0, 0, 49, 49))]}}, labels=("a",))
    res = video_map(gt, {"v": [dtube(0, 0.9, 1, 10, (0, 0, 49, 49))]})
    assert res.mAP["0.2"] == 1.0 and res.mAP["0.5"] == 1.0 and res.mAP["0.75"] == 0.0
    # 0.5:0.95 -> only th=0.5 of the ten thresholds is passed -> 0.1
    assert res.mAP["0.5:0.95"] == pytest.approx(0.1)
    assert res.per_class["0.5:0.95"]["a"] == pytest.approx(0.1)


def test_half_point_nine_five_average():
    # ST-IoU 0.8: TP for 0.50 .. 0.80 (7 thresholds: 0.5, .55, .6, .65, .7, .75, .8)
    gt = make_gt({"v": {0: [gtube(1, 10, (0, 0, 9, 9))]}}, labels=("a",))
    res = video_map(gt, {"v": [dtube(0, 0.9, 1, 10, (0, 0, 9, 7))]}, thresholds=["0.5:0.95"])  # 80/100
    assert res.mAP["0.5:0.95"] == pytest.approx(0.7)
    with pytest.raises(StadError, match="0.5:0.95"):
        parse_thresholds(["0.3:0.9"])


def test_nms_removes_overlapping_tube_and_duplicates_are_fp():
    gt = make_gt({"v": {0: [gtube(1, 20, (0, 0, 49, 49))]}}, labels=("a",))
    dup = [dtube(0, 0.9, 1, 20, (0, 0, 49, 49)), dtube(0, 0.8, 1, 20, (1, 1, 50, 50))]
    with_nms = video_map(gt, {"v": dup}, thresholds=[0.5])
    assert with_nms.counts["0.5"]["a"].n_det == 1 and with_nms.mAP["0.5"] == 1.0
    no_nms = video_map(gt, {"v": dup}, thresholds=[0.5], nms=None)
    assert no_nms.counts["0.5"]["a"].n_det == 2
    assert no_nms.mAP["0.5"] == pytest.approx(1.0)  # (0,1) (1,1) (1,.5) -> area 1


def test_false_positive_ranked_first_and_missing_class():
    gt = make_gt({"v": {0: [gtube(1, 20, (0, 0, 49, 49))]}, "w": {0: [gtube(1, 20, (0, 0, 49, 49))]}})
    tubes = {"v": [dtube(0, 0.9, 1, 20, (100, 100, 149, 149)), dtube(0, 0.8, 1, 20, (0, 0, 49, 49))],
             "w": [dtube(0, 0.7, 1, 20, (0, 0, 49, 49))]}
    res = video_map(gt, tubes, thresholds=[0.5])
    # class a: (0,1) (0,0) (.5,.5) (1,2/3); class b: no GT, no tube -> 0, in the mean
    ap_a = 0.5 * 0.5 / 2 + 0.5 * (0.5 + 2 / 3) / 2
    assert res.per_class["0.5"]["a"] == pytest.approx(ap_a, abs=1e-7)
    assert res.mAP["0.5"] == pytest.approx(ap_a / 2, abs=1e-7)


def test_bad_input():
    gt = make_gt({"v": {0: [gtube(1, 20, (0, 0, 49, 49))]}}, labels=("a",))
    with pytest.raises(StadError, match="not a test video"):
        video_map(gt, {"x": []})
    with pytest.raises(StadError, match="label"):
        video_map(gt, {"v": [dtube(3, 0.5, 1, 5, (0, 0, 9, 9))]})
    with pytest.raises(StadError, match="outside 1..40"):
        video_map(gt, {"v": [dtube(0, 0.5, 30, 45, (0, 0, 9, 9))]})


# -- loop implementation of the reference (nms3dt + videoAP) ------------------------------------------
def loop_video_ap(gt, tubes, th, nms=0.3):
    vlist = gt.test_videos[0]
    aps = []
    for c in range(len(gt.labels)):
        dets = []
        for v in vlist:
            lt = [(t.boxes, np.float32(t.score)) for t in tubes.get(v, []) if t.label == c]
            if lt:
                order = np.argsort([s for _, s in lt])
                keep = []
                while order.size:
                    i = order[-1]
                    keep.append(i)
                    ious = np.array([tube_iou(lt[ii][0], lt[i][0]) for ii in order[:-1]])
                    order = order[np.where(ious <= nms)[0]]
                dets += [(v, lt[i][1], lt[i][0]) for i in keep]
        gtd = {v: list(gt.gttubes[v].get(c, [])) for v in vlist if gt.gttubes[v].get(c)}
        n_gt = sum(len(g) for g in gtd.values())
        pr = np.empty((len(dets) + 1, 2), np.float32)
        pr[0] = (1, 0)
        tp = fp = 0
        for i, j in enumerate(np.argsort(-np.array([d[1] for d in dets], np.float32))):
            v, _, t = dets[j]
            ok = False
            if v in gtd:
                ious = [tube_iou(g, t) for g in gtd[v]]
                a = int(np.argmax(ious))
                if ious[a] >= th:
                    ok = True
                    del gtd[v][a]
                    if not gtd[v]:
                        del gtd[v]
            tp, fp = tp + ok, fp + (not ok)
            pr[i + 1] = (tp / (tp + fp), tp / n_gt) if n_gt else (0, 0)
        aps.append(np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5))
    return float(np.mean(np.array(aps, np.float32)))


def random_tubes(seed):
    rng = np.random.default_rng(seed)
    videos = [f"v{i}" for i in range(4)]
    gts, dets = {}, {}
    for v in videos:
        gts[v] = {}
        for _ in range(rng.integers(1, 3)):
            c = int(rng.integers(0, 2))
            s = int(rng.integers(1, 20))
            e = int(rng.integers(s + 5, 41))
            x, y = rng.integers(0, 80, 2)
            gts[v].setdefault(c, []).append(np.array([[f, x, y, x + 40 + f % 3, y + 40] for f in range(s, e + 1)], float))
        dets[v] = []
        for _ in range(rng.integers(0, 12)):
            c = int(rng.integers(0, 2))
            s = int(rng.integers(1, 25))
            e = int(rng.integers(s, 41))
            x, y = rng.integers(0, 80, 2)
            score = float(rng.integers(0, 8)) / 8
            if gts[v] and rng.random() < 0.6:  # a jittered copy of part of a ground-truth tube
                c = int(rng.choice(list(gts[v])))
                g = gts[v][c][rng.integers(len(gts[v][c]))]
                a = int(rng.integers(0, len(g) // 2))
                b = int(rng.integers(a + 1, len(g) + 1))
                rows = g[a:b].copy()
                rows[:, 1:5] += rng.integers(-4, 5, 4)
                dets[v].append(Tube(c, score, np.concatenate([rows, np.full((len(rows), 1), score)], axis=1)))
                continue
            dets[v].append(Tube(c, score, np.array([[f, x, y, x + 42, y + 41, score] for f in range(s, e + 1)], float)))
    return make_gt(gts), dets


@pytest.mark.parametrize("seed", range(8))
def test_vectorized_equals_loop_implementation(seed):
    gt, dets = random_tubes(seed)
    res = video_map(gt, dets, thresholds=[0.1, 0.2, 0.3, 0.5])
    for th in (0.1, 0.2, 0.3, 0.5):
        assert res.mAP[f"{th:g}"] == loop_video_ap(gt, dets, th)


def test_evaluator_accumulates_videos():
    from stad.eval.evaluator import VideoMAPEvaluator

    gt, dets = random_tubes(5)
    ev = VideoMAPEvaluator(gt, thresholds=[0.2])
    for v, ts in dets.items():
        ev.process(v, ts[:2])
        ev.process(v, ts[2:])
    assert ev.evaluate().mAP == video_map(gt, dets, thresholds=[0.2]).mAP


def test_non_consecutive_tube_frames_raise():
    gt = make_gt({"v": {0: [gtube(1, 20, (0, 0, 49, 49))]}}, labels=("a",))
    t = Tube(0, 0.5, np.array([[1, 0, 0, 9, 9, 0.5], [3, 0, 0, 9, 9, 0.5]], float))
    with pytest.raises(StadError, match=r"\['v'\]\[0\].boxes: frames must be consecutive"):
        video_map(gt, {"v": [t]})
