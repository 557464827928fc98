"""Frame-mAP: hand-computed cases and equality with a straightforward loop implementation."""

from __future__ import annotations

import numpy as np
import pytest

from stad.errors import StadError
from stad.eval.frame_map import frame_map
from stad.structures import FrameDetections, TubeAnnotations
from tests.eval.gt import make_gt as shared_make_gt


def make_gt(tubes, *, labels=("a", "b", "c"), nframes=10) -> TubeAnnotations:
    return shared_make_gt(tubes, labels=labels, nframes=nframes)


def tube(frames, box) -> np.ndarray:
    return np.array([[f, *box] for f in frames], float)


def make_dets(rows, videos) -> FrameDetections:
    """rows: (video, frame, label, score, x1, y1, x2, y2)."""
    rows = list(rows)
    if not rows:
        return FrameDetections.empty(videos)
    return FrameDetections(
        videos=list(videos),
        video=np.array([videos.index(r[0]) for r in rows]),
        frame=np.array([r[1] for r in rows]),
        label=np.array([r[2] for r in rows]),
        score=np.array([r[3] for r in rows], float),
        boxes=np.array([r[4:8] for r in rows], float),
    )


# -- a straightforward loop implementation of the ACT rules (the reference's structure) ----------
def _iou_plus_one(gts: np.ndarray, box: np.ndarray) -> np.ndarray:
    xmin = np.maximum(gts[:, 0], box[0])
    ymin = np.maximum(gts[:, 1], box[1])
    xmax = np.minimum(gts[:, 2] + 1, box[2] + 1)
    ymax = np.minimum(gts[:, 3] + 1, box[3] + 1)
    ov = np.maximum(0, xmax - xmin) * np.maximum(0, ymax - ymin)
    area = lambda b: (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)  # noqa: E731
    return ov / (area(gts) + area(box) - ov)


def loop_act_frame_map(gt: TubeAnnotations, dets: FrameDetections, th: float = 0.5) -> tuple[float, list[float]]:
    vlist = gt.test_videos[0]
    alldets = np.zeros((len(dets), 8), np.float32)
    if len(dets):
        alldets[:, 0] = [vlist.index(dets.videos[i]) for i in dets.video]
        alldets[:, 1] = dets.frame
        alldets[:, 2] = dets.label
        alldets[:, 3] = dets.score
        alldets[:, 4:8] = dets.boxes
    aps = []
    for ilabel in range(len(gt.labels)):
        detections = alldets[alldets[:, 2] == ilabel, :]
        gtd: dict = {}
        for iv, v in enumerate(vlist):
            for t in gt.gttubes[v].get(ilabel, []):
                for row in t:
                    gtd.setdefault((iv, int(row[0])), []).append(row[1:5].tolist())
        gtd = {k: np.array(g) for k, g in gtd.items()}
        n_gt = sum(g.shape[0] for g in gtd.values())
        pr = np.empty((detections.shape[0] + 1, 2), np.float32)
        pr[0] = (1.0, 0.0)
        tp = fp = 0
        for i, j in enumerate(np.argsort(-detections[:, 3])):
            k = (int(detections[j, 0]), int(detections[j, 1]))
            ok = False
            if k in gtd:
                ious = _iou_plus_one(gtd[k], detections[j, 4:8])
                amax = np.argmax(ious)
                if ious[amax] >= th:
                    ok = True
                    gtd[k] = np.delete(gtd[k], amax, 0)
                    if gtd[k].size == 0:
                        del gtd[k]
            tp, fp = tp + ok, fp + (not ok)
            pr[i + 1, 0] = tp / (tp + fp)
            pr[i + 1, 1] = tp / n_gt if n_gt else 0.0
            if not n_gt:
                pr[i + 1, 0] = 0.0
        aps.append(np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5))
    return float(np.mean(np.array(aps, np.float32))), [float(a) for a in aps]


def loop_voc_frame_map(gt, dets, th=0.5, *, plus_one: bool, annotated_only: bool, stable: bool):
    vlist = gt.test_videos[0]
    annotated = {(v, int(r[0])) for v in vlist for ts in gt.gttubes[v].values() for t in ts for r in t}
    aps = []
    for c in range(len(gt.labels)):
        gtd = {}
        for v in vlist:
            for t in gt.gttubes[v].get(c, []):
                for r in t:
                    gtd.setdefault((v, int(r[0])), []).append(r[1:5])
        n_gt = sum(len(g) for g in gtd.values())
        if n_gt == 0:
            continue
        rows = [i for i in range(len(dets)) if dets.label[i] == c
                and (not annotated_only or (dets.videos[dets.video[i]], int(dets.frame[i])) in annotated)]
        s = np.array([dets.score[i] for i in rows], float)
        order = np.argsort(-s, kind="stable") if stable else np.argsort(-s)
        used = set()
        tps = []
        for j in order:
            i = rows[j]
            k = (dets.videos[dets.video[i]], int(dets.frame[i]))
            ok = False
            if k in gtd:
                g = np.array(gtd[k])
                b = dets.boxes[i]
                one = 1.0 if plus_one else 0.0
                iw = np.maximum(0, np.minimum(g[:, 2], b[2]) - np.maximum(g[:, 0], b[0]) + one)
                ih = np.maximum(0, np.minimum(g[:, 3], b[3]) - np.maximum(g[:, 1], b[1]) + one)
                inter = iw * ih
                ua = (g[:, 2] - g[:, 0] + one) * (g[:, 3] - g[:, 1] + one) + (b[2] - b[0] + one) * (b[3] - b[1] + one) - inter
                ious = inter / ua
                a = int(np.argmax(ious))
                if ious[a] >= th and (k, a) not in used:
                    used.add((k, a))
                    ok = True
            tps.append(ok)
        tp = np.cumsum(tps)
        prec = tp / np.arange(1, len(tps) + 1)
        rec = tp / n_gt
        r = np.concatenate([[0], rec, [1]])
        p = np.concatenate([[0], prec, [0]])
        for i in range(len(p) - 2, -1, -1):
            p[i] = max(p[i], p[i + 1])
        idx = np.where(r[1:] != r[:-1])[0] + 1
        aps.append(float(np.sum((r[idx] - r[idx - 1]) * p[idx])))
    return float(np.mean(aps))


def random_case(seed: int, *, n_videos=3, nframes=12, n_dets=300, n_labels=3):
    rng = np.random.default_rng(seed)
    videos = [f"v{i}" for i in range(n_videos)]
    tubes = {}
    for v in videos:
        tubes[v] = {}
        for _ in range(rng.integers(1, 4)):
            c = int(rng.integers(0, n_labels))
            s = int(rng.integers(1, nframes - 3))
            e = int(rng.integers(s, nframes + 1))
            x, y = rng.integers(0, 60, 2)
            base = np.array([x, y, x + 40, y + 40], float)
            t = np.array([[f, *(base + rng.integers(-3, 4, 4))] for f in range(s, e + 1)], float)
            tubes[v].setdefault(c, []).append(t)
    gt = make_gt(tubes, labels=[f"l{i}" for i in range(n_labels)], nframes=nframes)
    gt_rows = [(v, int(r[0]), c, r[1:5]) for v in videos for c, ts in tubes[v].items() for t in ts for r in t]
    rows = []
    for _ in range(n_dets):
        score = float(rng.integers(0, 20)) / 20.0  # many ties on purpose
        if rng.random() < 0.6:  # near a ground-truth box (often several candidates per frame)
            v, f, c, box = gt_rows[rng.integers(len(gt_rows))]
            if rng.random() < 0.2:
                c = int(rng.integers(n_labels))
            x1, y1, x2, y2 = box + rng.integers(-8, 9, 4)
            rows.append((v, f, c, score, x1, y1, max(x1, x2), max(y1, y2)))
            continue
        v = videos[rng.integers(n_videos)]
        x, y = rng.integers(0, 60, 2)
        w = rng.integers(30, 50)
        rows.append((v, int(rng.integers(1, nframes + 1)), int(rng.integers(n_labels)), score, x, y, x + w, y + w))
    return gt, make_dets(rows, videos)


# -- hand-computed cases ----------------------------------------------------------------------------
def test_perfect_detections_give_one():
    gt = make_gt({"v": {0: [tube(range(1, 6), (10, 10, 50, 50))], 1: [tube(range(3, 9), (100, 20, 150, 90))]}},
                 labels=("a", "b"))
    rows = [("v", f, 0, 0.9, 10, 10, 50, 50) for f in range(1, 6)] + [("v", f, 1, 0.8, 100, 20, 150, 90) for f in range(3, 9)]
    for protocol in ("act", "voc", "yowo"):
        res = frame_map(gt, make_dets(rows, ["v"]), protocol=protocol)
        assert res.mAP == pytest.approx(1.0)
        assert res.per_class == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}


def test_one_false_positive_ranked_first():
    # 2 GT boxes of class a; ranks: FP (0.9), TP (0.8), TP (0.7)
    gt = make_gt({"v": {0: [tube([1, 2], (0, 0, 9, 9))]}}, labels=("a",))
    rows = [("v", 3, 0, 0.9, 0, 0, 9, 9), ("v", 1, 0, 0.8, 0, 0, 9, 9), ("v", 2, 0, 0.7, 0, 0, 9, 9)]
    res = frame_map(gt, make_dets(rows, ["v"]))
    # curve (0,1) (0,0) (.5,.5) (1,2/3): trapezoid = .5*(0+.5)/2 + .5*(.5+2/3)/2
    assert res.per_class["a"] == pytest.approx(0.125 + 0.5 * (0.5 + 2 / 3) / 2, abs=1e-7)
    # VOC envelope: precision 2/3 over recall 0..1 -> 2/3
    assert frame_map(gt, make_dets(rows, ["v"]), protocol="voc").mAP == pytest.approx(2 / 3)
    # yowo: frame 3 has no GT -> the FP is not evaluated -> 1.0
    assert frame_map(gt, make_dets(rows, ["v"]), protocol="yowo").mAP == pytest.approx(1.0)


def test_duplicates_are_false_positives():
    gt = make_gt({"v": {0: [tube([1], (0, 0, 9, 9))]}}, labels=("a",))
    rows = [("v", 1, 0, 0.9, 0, 0, 9, 9), ("v", 1, 0, 0.8, 0, 0, 9, 9)]
    res = frame_map(gt, make_dets(rows, ["v"]))
    # (0,1) (1,1) (1,.5): AP = 1*(1+1)/2 + 0 = 1
    assert res.per_class["a"] == pytest.approx(1.0)
    assert res.counts["a"].n_tp == 1 and res.counts["a"].n_det == 2


def test_two_gt_boxes_in_a_frame_act_vs_voc_matching():
    # GT A=(0,0,9,9), B=(5,0,14,9) in the same frame. Det1 (0.9) overlaps A best; det2 (0.8) also overlaps
    # A best, but B still >= 0.5 -> ACT: TP on B; VOC: A taken -> FP.
    gt = make_gt({"v": {0: [tube([1], (0, 0, 9, 9)), tube([1], (2, 0, 11, 9))]}}, labels=("a",))
    rows = [("v", 1, 0, 0.9, 0, 0, 9, 9), ("v", 1, 0, 0.8, 1, 0, 10, 9)]
    act = frame_map(gt, make_dets(rows, ["v"]), protocol="act")
    voc = frame_map(gt, make_dets(rows, ["v"]), protocol="yowo")
    assert act.per_class["a"] == pytest.approx(1.0)  # (0,1) (.5,1) (1,1)
    assert voc.per_class["a"] == pytest.approx(0.5)
    assert act.counts["a"].n_tp == 2 and voc.counts["a"].n_tp == 1


def test_class_without_detections_and_class_without_gt():
    gt = make_gt({"v": {0: [tube([1], (0, 0, 9, 9))], 1: [tube([2], (0, 0, 9, 9))]}}, labels=("a", "b", "c"))
    rows = [("v", 1, 0, 0.9, 0, 0, 9, 9), ("v", 1, 2, 0.5, 0, 0, 9, 9)]
    act = frame_map(gt, make_dets(rows, ["v"]))
    assert act.per_class == {"a": pytest.approx(1.0), "b": 0.0, "c": 0.0}
    assert act.mAP == pytest.approx(1 / 3)  # ACT: mean over all labels
    assert act.labels_without_gt == ["c"]
    voc = frame_map(gt, make_dets(rows, ["v"]), protocol="voc")
    assert np.isnan(voc.per_class["c"]) and voc.per_class["b"] == 0.0
    assert voc.mAP == pytest.approx(0.5)  # mean over labels with GT
    assert voc.to_json()["per_class"]["c"] is None


def test_iou_threshold_is_inclusive_with_plus_one_areas():
    # GT (0,0,9,9) area 100; det (0,0,9,4) area 50 -> IoU exactly 0.5 with +1, 0.444 without
    gt = make_gt({"v": {0: [tube([1], (0, 0, 9, 9))]}}, labels=("a",))
    dets = make_dets([("v", 1, 0, 0.9, 0, 0, 9, 4)], ["v"])
    assert frame_map(gt, dets).mAP == pytest.approx(1.0)
    assert frame_map(gt, dets, iou=0.51).mAP == 0.0
    assert frame_map(gt, dets, protocol="voc").mAP == 0.0  # continuous areas: 36 / 81 < 0.5


def test_empty_detections():
    gt = make_gt({"v": {0: [tube([1], (0, 0, 9, 9))]}}, labels=("a",))
    res = frame_map(gt, FrameDetections.empty(["v"]))
    assert res.mAP == 0.0 and res.counts["a"].n_gt == 1


def test_bad_detections_raise():
    gt = make_gt({"v": {0: [tube([1], (0, 0, 9, 9))]}}, labels=("a",))
    with pytest.raises(StadError, match="not a test video"):
        frame_map(gt, make_dets([("w", 1, 0, 0.9, 0, 0, 9, 9)], ["w"]))
    with pytest.raises(StadError, match="frame outside"):
        frame_map(gt, make_dets([("v", 11, 0, 0.9, 0, 0, 9, 9)], ["v"]))
    with pytest.raises(StadError, match="label outside"):
        frame_map(gt, make_dets([("v", 1, 3, 0.9, 0, 0, 9, 9)], ["v"]))
    with pytest.raises(StadError, match="protocol"):
        frame_map(gt, FrameDetections.empty(["v"]), protocol="coco")


@pytest.mark.parametrize("seed", range(6))
def test_vectorized_equals_loop_implementation(seed):
    gt, dets = random_case(seed)
    res = frame_map(gt, dets)
    mean, aps = loop_act_frame_map(gt, dets)
    assert [res.per_class[n] for n in gt.labels] == aps  # bit-identical
    assert res.mAP == mean
    for th in (0.3, 0.7):
        assert frame_map(gt, dets, iou=th).mAP == loop_act_frame_map(gt, dets, th)[0]
    voc = frame_map(gt, dets, protocol="voc")
    assert voc.mAP == pytest.approx(loop_voc_frame_map(gt, dets, plus_one=False, annotated_only=False, stable=False), abs=1e-12)
    yowo = frame_map(gt, dets, protocol="yowo")
    assert yowo.mAP == pytest.approx(loop_voc_frame_map(gt, dets, plus_one=True, annotated_only=True, stable=True), abs=1e-12)


def test_evaluator_accumulates_batches_like_one_call():
    from stad.eval.evaluator import FrameMAPEvaluator

    gt, dets = random_case(3)
    ev = FrameMAPEvaluator(gt)
    for iv, v in enumerate(dets.videos):  # one process() call per video, in video order
        m = dets.video == iv
        ev.process(video=v, frame=dets.frame[m], label=dets.label[m], score=dets.score[m], boxes=dets.boxes[m])
    stable = np.argsort(dets.video, kind="stable")
    reordered = FrameDetections(dets.videos, dets.video[stable], dets.frame[stable], dets.label[stable],
                                dets.score[stable], dets.boxes[stable])
    assert ev.evaluate().per_class == frame_map(gt, reordered).per_class
    ev.reset()
    assert ev.evaluate().mAP == 0.0
    with pytest.raises(StadError, match="lengths differ"):
        ev.process(video="v0", frame=[1, 2], label=[0], score=[0.5], boxes=[[0, 0, 1, 1]])
