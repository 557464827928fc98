"""AVA frame-mAP: hand-computed cases, agreement with a loop implementation of the official rules,
and the real MMAction2 / AVA files (``realdata`` fixture)."""

from __future__ import annotations

import heapq
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from stad.cli import main as cli_main
from stad.data.ava import (
    AVARows,
    LabelMap,
    read_ava_annotations,
    read_ava_predictions,
    read_excluded_timestamps,
    read_labelmap,
    write_ava_annotations,
    write_ava_predictions,
    write_labelmap,
)
from stad.errors import StadError
from stad.eval.ava_map import ava_map

# --------------------------------------------------------------------------------------------------
# An independent, deliberately simple implementation, written from the rules in PROTOCOLS.md §B and
# the reference's data flow (dicts in insertion order, a heap per keyframe, a loop per detection).
# --------------------------------------------------------------------------------------------------


def loop_ava_map(gt_lines, det_lines, class_ids, excluded=(), cap=50):
    """gt_lines/det_lines: lists of CSV field lists (strings). Returns (mAP, {class_id: AP})."""
    whitelist = set(class_ids)
    excluded = {f"{v},{int(t):04d}" for v, t in excluded}

    def read(lines, capacity):
        entries = {}
        for row in lines:
            action = int(row[6])
            if action not in whitelist:
                continue
            key = f"{row[0]},{int(row[1]):04d}"
            x1, y1, x2, y2 = (float(v) for v in row[2:6])
            score = float(row[7]) if len(row) == 8 else 1.0
            heap = entries.setdefault(key, [])
            item = (score, action, y1, x1, y2, x2)
            if capacity < 1 or len(heap) < capacity:
                heapq.heappush(heap, item)
            elif score > heap[0][0]:
                heapq.heapreplace(heap, item)
        return {key: sorted(heap, key=lambda item: -item[0]) for key, heap in entries.items()}

    gt = read(gt_lines, 0)
    dets = read(det_lines, cap)
    num_gt = defaultdict(int)
    for key, items in gt.items():
        if key in excluded:
            continue
        for item in items:
            num_gt[item[1]] += 1
    scores = defaultdict(list)
    labels = defaultdict(list)
    for key, items in dets.items():
        if key in excluded:
            continue
        items = [it for it in items if it[2] < it[4] and it[3] < it[5]]
        gt_items = gt.get(key, []) if key not in excluded else []
        for c in sorted(whitelist):
            d_c = [it for it in items if it[1] == c]
            g_c = [it for it in gt_items if it[1] == c]
            taken = [False] * len(g_c)
            for d in d_c:
                best, best_j = -math.inf, -1
                for j, g in enumerate(g_c):
                    ih = max(0.0, min(d[4], g[4]) - max(d[2], g[2]))
                    iw = max(0.0, min(d[5], g[5]) - max(d[3], g[3]))
                    inter = ih * iw
                    union = (d[4] - d[2]) * (d[5] - d[3]) + (g[4] - g[2]) * (g[5] - g[3]) - inter
                    iou = inter / union if union != 0 else math.nan  # numpy gives NaN for 0/0
                    if math.isnan(best):
                        continue  # numpy's argmax stops at the first NaN
                    if math.isnan(iou) or iou > best:  # strictly greater: the first box wins ties
                        best, best_j = iou, j
                is_tp = best_j >= 0 and best >= 0.5 and not taken[best_j]
                if is_tp:
                    taken[best_j] = True
                scores[c].append(d[0])
                labels[c].append(is_tp)
    aps = {}
    for c in class_ids:
        if num_gt[c] == 0:
            aps[c] = float("nan")
            continue
        if not scores[c]:
            aps[c] = 0.0
            continue
        order = np.argsort(np.array(scores[c], dtype=float))[::-1]
        tp = fp = 0
        precision, recall = [], []
        for i in order:
            tp += labels[c][i]
            fp += not labels[c][i]
            precision.append(tp / (tp + fp))
            recall.append(tp / num_gt[c])
        r = [0.0] + recall + [1.0]
        p = [0.0] + precision + [0.0]
        for i in range(len(p) - 2, -1, -1):
            p[i] = max(p[i], p[i + 1])
        aps[c] = sum((r[i] - r[i - 1]) * p[i] for i in range(1, len(r)) if r[i] != r[i - 1])
    valid = [ap for ap in aps.values() if not math.isnan(ap)]
    return (sum(valid) / len(valid) if valid else float("nan")), aps


def rows_from_lines(lines, *, predictions):
    """AVARows from CSV field lists, through the public reader (via a temporary in-memory table)."""
    n = len(lines)
    last = [row[7] if len(row) == 8 else None for row in lines]
    return AVARows.from_arrays(
        video=[row[0] for row in lines],
        timestamp=[int(row[1]) for row in lines],
        boxes=np.array([[float(v) for v in row[2:6]] for row in lines], dtype=np.float64).reshape(n, 4),
        action_id=[int(row[6]) for row in lines],
        person_id=None if predictions else [int(v) if v is not None else -1 for v in last],
        score=[float(v) if v is not None else 1.0 for v in last] if predictions else None,
    )


def labelmap_of(ids, names=None):
    return LabelMap(ids=list(ids), names=list(names or [f"c{i}" for i in ids]), label_types=[None] * len(ids))


def evaluate(gt_lines, det_lines, ids, excluded=(), **kwargs):
    return ava_map(
        rows_from_lines(gt_lines, predictions=False),
        rows_from_lines(det_lines, predictions=True),
        labelmap_of(ids),
        excluded=excluded,
        **kwargs,
    )


def g(video, ts, box, action, person=0):
    return [video, ts, *[str(v) for v in box], str(action), str(person)]


def d(video, ts, box, action, score):
    return [video, ts, *[str(v) for v in box], str(action), str(score)]


A = (0.1, 0.1, 0.5, 0.5)
B = (0.5, 0.5, 0.9, 0.9)
A_SHIFT = (0.15, 0.1, 0.55, 0.5)  # IoU with A = 0.35/0.45 = 0.777...
FAR = (0.6, 0.0, 0.7, 0.1)


# --------------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------------


def test_perfect_detections_give_one():
    gt = [g("v", "0902", A, 1, 0), g("v", "0902", B, 2, 1), g("v", "0903", B, 1, 0)]
    det = [d("v", "0902", A, 1, 0.9), d("v", "0902", B, 2, 0.8), d("v", "0903", B, 1, 0.7)]
    result = evaluate(gt, det, [1, 2])
    assert result.mAP == 1.0
    assert result.per_class == {"c1": 1.0, "c2": 1.0}


def test_false_positive_ranked_first():
    # Ranked: FP (0.9), TP (0.8), TP (0.7); 2 GT. Precision after each: 0, 1/2, 2/3; envelope: 2/3 at r=0.5 and 1.
    gt = [g("v", "0902", A, 1), g("v", "0903", A, 1)]
    det = [d("v", "0902", FAR, 1, 0.9), d("v", "0902", A, 1, 0.8), d("v", "0903", A, 1, 0.7)]
    result = evaluate(gt, det, [1])
    assert result.ap[0] == pytest.approx(2 / 3, abs=1e-12)
    np.testing.assert_allclose(result.precision[0], [0, 0.5, 2 / 3])
    np.testing.assert_allclose(result.recall[0], [0, 0.5, 1.0])


def test_duplicate_detection_is_false_positive():
    # The duplicate on the first GT box is FP; ranked TP, FP, TP over 2 GT: P = 1, 1/2, 2/3 at
    # R = 1/2, 1/2, 1 -> AP = 0.5 * 1 + 0.5 * 2/3.
    gt = [g("v", "0902", A, 1), g("v", "0903", A, 1)]
    det = [
        d("v", "0902", A, 1, 0.9),
        d("v", "0902", A_SHIFT, 1, 0.8),
        d("v", "0903", A, 1, 0.7),
    ]
    result = evaluate(gt, det, [1])
    assert result.ap[0] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)


def test_two_gt_in_a_keyframe_voc_semantics():
    # Both detections' best GT is A (IoU 1 and 0.78): the second is FP even though it overlaps
    # nothing else; two GT boxes of the class -> recall 1/2, AP = 0.5.
    gt = [g("v", "0902", A, 1, 0), g("v", "0902", B, 1, 1)]
    det = [d("v", "0902", A, 1, 0.9), d("v", "0902", A_SHIFT, 1, 0.8)]
    result = evaluate(gt, det, [1])
    assert result.ap[0] == pytest.approx(0.5, abs=1e-12)
    # "First on ties" follows the reference's GT order, which sorts 8-column GT by descending person id.
    left, right, wide = (0.0, 0.0, 0.5, 0.5), (0.25, 0.0, 0.75, 0.5), (0.0, 0.0, 0.75, 0.5)  # IoU(wide, each) = 2/3
    det2 = [d("v", "0902", left, 1, 0.9), d("v", "0902", wide, 1, 0.8)]
    # left (person 1) comes first: det `left` takes it, `wide` ties on both and takes `left` again -> FP.
    result2 = evaluate([g("v", "0902", left, 1, 1), g("v", "0902", right, 1, 0)], det2, [1])
    assert result2.ap[0] == pytest.approx(0.5, abs=1e-12)
    assert result2.replayed_keyframes == 1
    # right (person 1) comes first: `wide` takes right -> TP, AP 1.
    result3 = evaluate([g("v", "0902", left, 1, 0), g("v", "0902", right, 1, 1)], det2, [1])
    assert result3.ap[0] == 1.0
    # 7-column GT: the order is the reference's heap array, not the file: (1.0, 1, y1, x1=0.0, ...) is the
    # smaller tuple and sifts to the front, so `left` is first although `right` comes first in the file.
    gt7 = [g("v", "0902", right, 1)[:7], g("v", "0902", left, 1)[:7]]
    result4 = evaluate(gt7, det2, [1])
    assert result4.ap[0] == pytest.approx(0.5, abs=1e-12)
    assert loop_ava_map(gt7, det2, [1])[0] == pytest.approx(0.5, abs=1e-12)


def test_class_without_detections_counts_zero_and_class_without_gt_is_nan():
    gt = [g("v", "0902", A, 1), g("v", "0902", B, 2)]
    det = [d("v", "0902", A, 1, 0.9), d("v", "0902", B, 3, 0.9)]
    result = evaluate(gt, det, [1, 2, 3])
    assert result.per_class["c1"] == 1.0
    assert result.per_class["c2"] == 0.0
    assert math.isnan(result.per_class["c3"])
    assert result.mAP == pytest.approx(0.5)  # (1 + 0) / 2: class 3 left out
    assert result.to_dict() == {"mAP": 0.5, "per_class": {"c1": 1.0, "c2": 0.0, "c3": None}}


def test_excluded_timestamps_drop_gt_and_detections():
    gt = [g("v", "0902", A, 1), g("v", "0903", A, 1)]
    det = [d("v", "0902", A, 1, 0.9), d("v", "0903", FAR, 1, 0.95)]
    assert evaluate(gt, det, [1]).ap[0] == pytest.approx(0.5 * 0.5)  # FP first then TP: P=1/2 at r=1/2
    result = evaluate(gt, det, [1], excluded={("v", 903)})
    assert result.ap[0] == 1.0
    assert result.num_gt.tolist() == [1]


def test_keyframe_without_gt_counts_false_positives():
    gt = [g("v", "0902", A, 1)]
    det = [d("v", "0902", A, 1, 0.5), d("w", "0902", A, 1, 0.9)]
    assert evaluate(gt, det, [1]).ap[0] == pytest.approx(0.5)


def test_classes_outside_the_label_map_are_dropped():
    gt = [g("v", "0902", A, 1), g("v", "0902", A, 7)]
    det = [d("v", "0902", A, 1, 0.5)] + [d("v", "0902", B, 7, 0.9 - i / 1000) for i in range(60)]
    result = evaluate(gt, det, [1])
    # Class 7 rows are dropped while reading, before the top-50 cap: the class-1 detection survives.
    assert result.ap[0] == 1.0
    assert result.class_ids == [1]


def test_top50_cap_with_ties():
    gt = [g("v", "0902", A, 1)]
    fillers = [d("v", "0902", FAR, 2, 0.5) for _ in range(50)]
    # A tied newcomer never enters a full set: the TP with score 0.5 arrives 51st and is not kept.
    assert evaluate(gt, fillers + [d("v", "0902", A, 1, 0.5)], [1, 2]).ap[0] == 0.0
    # Arriving first it is kept (the set is not full yet) and never evicted by ties.
    assert evaluate(gt, [d("v", "0902", A, 1, 0.5)] + fillers, [1, 2]).ap[0] == 1.0
    # A higher score enters and evicts the smallest tuple: (0.5, action 1, ...) < (0.5, action 2, ...).
    evict = [d("v", "0902", A, 1, 0.5)] + fillers + [d("v", "0902", FAR, 2, 0.6)]
    assert evaluate(gt, evict, [1, 2]).ap[0] == 0.0
    # Without the cap (top_k=None) every row is kept.
    assert evaluate(gt, fillers + [d("v", "0902", A, 1, 0.5)], [1, 2], top_k=None).ap[0] == 1.0


def test_invalid_detections_are_neither_tp_nor_fp():
    gt = [g("v", "0902", A, 1)]
    det = [d("v", "0902", (0.5, 0.1, 0.5, 0.5), 1, 0.99), d("v", "0902", (0.1, 0.6, 0.5, 0.2), 1, 0.98)]
    det.append(d("v", "0902", A, 1, 0.1))
    result = evaluate(gt, det, [1])
    assert result.ap[0] == 1.0
    assert result.num_detections.tolist() == [1]


def test_padded_and_unpadded_timestamps_are_one_keyframe(tmp_path: Path):
    (tmp_path / "gt.csv").write_text("v,0902,0.1,0.1,0.5,0.5,1,0\n")
    (tmp_path / "det.csv").write_text("v,902,0.1,0.1,0.5,0.5,1,0.9\nv,0902,0.5,0.5,0.9,0.9,1,0.8\n")
    result = ava_map(
        read_ava_annotations(tmp_path / "gt.csv"), read_ava_predictions(tmp_path / "det.csv"), labelmap_of([1])
    )
    assert result.ap[0] == 1.0
    assert result.num_detections.tolist() == [2]  # both rows are one keyframe (one TP, one FP after it)


def test_empty_detections_and_empty_gt():
    gt = [g("v", "0902", A, 1)]
    result = evaluate(gt, [], [1, 2])
    assert result.ap[0] == 0.0 and math.isnan(result.ap[1]) and result.mAP == 0.0
    result = evaluate([], [d("v", "0902", A, 1, 0.9)], [1])
    assert math.isnan(result.mAP)


# --------------------------------------------------------------------------------------------------
# Agreement with the loop implementation on random inputs full of ties
# --------------------------------------------------------------------------------------------------


def random_case(rng: np.random.Generator, *, videos=3, seconds=4, max_gt=4, max_det=70):
    grid = np.array([0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.6, 0.75, 0.8, 1.0])
    scores = np.array([0.1, 0.25, 0.3, 0.5, 0.5, 0.75, 0.9])
    gt_lines, det_lines = [], []

    def box():
        x = np.sort(rng.choice(grid, 2))
        y = np.sort(rng.choice(grid, 2))
        if rng.random() < 0.05:
            x = x[::-1]  # invalid (or degenerate) now and then
        return [f"{x[0]:g}", f"{y[0]:g}", f"{x[1]:g}", f"{y[1]:g}"]

    for v in range(videos):
        for s in range(seconds):
            ts = 902 + s
            ts_text = f"{ts:04d}" if rng.random() < 0.5 else str(ts)
            gt_boxes = [box() for _ in range(rng.integers(0, max_gt + 1))]
            for person, b in enumerate(gt_boxes):
                for action in rng.choice([1, 2, 3, 4], size=rng.integers(1, 3), replace=False):
                    gt_lines.append([f"vid{v}", ts_text, *b, str(action), str(rng.integers(0, 3))])
            for _ in range(rng.integers(0, max_det + 1)):
                if gt_boxes and rng.random() < 0.6:
                    b = gt_boxes[rng.integers(len(gt_boxes))]
                    if rng.random() < 0.4:
                        b = box()
                else:
                    b = box()
                action = rng.choice([1, 2, 3, 4, 9])
                det_lines.append([f"vid{v}", ts_text, *b, str(action), f"{rng.choice(scores):g}"])
    det_lines = [det_lines[i] for i in rng.permutation(len(det_lines))]
    excluded = {(f"vid{rng.integers(videos)}", 902 + int(rng.integers(seconds)))}
    return gt_lines, det_lines, excluded


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_loop_implementation_on_random_ties(seed):
    rng = np.random.default_rng(seed)
    gt_lines, det_lines, excluded = random_case(rng)
    ids = [1, 2, 3, 4]
    expected_map, expected_ap = loop_ava_map(gt_lines, det_lines, ids, excluded)
    result = evaluate(gt_lines, det_lines, ids, excluded)
    for c, ap in zip(ids, result.ap):
        if math.isnan(expected_ap[c]):
            assert math.isnan(ap)
        else:
            assert ap == pytest.approx(expected_ap[c], abs=1e-9)
    assert result.mAP == pytest.approx(expected_map, abs=1e-9)


def test_agrees_without_ties_and_without_replay():
    rng = np.random.default_rng(100)
    gt_lines, det_lines, excluded = random_case(rng, max_det=30)
    for row in det_lines:
        row[7] = repr(float(rng.random()))  # distinct scores
    ids = [1, 2, 3, 4]
    expected_map, _ = loop_ava_map(gt_lines, det_lines, ids, excluded)
    assert evaluate(gt_lines, det_lines, ids, excluded).mAP == pytest.approx(expected_map, abs=1e-9)


# --------------------------------------------------------------------------------------------------
# Real files
# --------------------------------------------------------------------------------------------------


def _csv_lines(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines() if line.strip()]


def test_mmaction2_eval_detection_samples(realdata: Path):
    folder = realdata / "ava" / "mmaction2_tests_eval_detection"
    labelmap = read_labelmap(folder / "action_list.txt")
    result = ava_map(read_ava_annotations(folder / "gt.csv"), read_ava_predictions(folder / "pred.csv"), labelmap)
    expected_map, expected_ap = loop_ava_map(_csv_lines(folder / "gt.csv"), _csv_lines(folder / "pred.csv"), labelmap.ids)
    assert result.mAP == pytest.approx(expected_map, abs=1e-12)
    assert result.ap.tolist() == pytest.approx([expected_ap[c] for c in labelmap.ids], abs=1e-12)
    assert result.num_gt.sum() == 12
    # MMAction2's own test of these files (tests/evaluation/.../test_ava_detection) asserts 0.09385522.
    assert result.mAP == pytest.approx(0.09385522, abs=5e-9)


def test_real_val_gt_with_noisy_predictions(realdata: Path):
    ava = realdata / "ava"
    labelmap = read_labelmap(ava / "ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt")
    excluded = read_excluded_timestamps(ava / "ava_val_excluded_timestamps_v2.1.csv")
    gt_lines = _csv_lines(ava / "ava_val_v2.1_head27163.csv")[:6000]
    rng = np.random.default_rng(0)
    det_lines = []
    for row in gt_lines:
        box = np.array([float(v) for v in row[2:6]]) + rng.normal(0, 0.03, 4)
        action = row[6] if rng.random() < 0.7 else str(rng.integers(1, 81))
        det_lines.append([row[0], row[1], *[f"{v:.3f}" for v in box], action, f"{rng.random():.2f}"])
        if rng.random() < 0.5:  # extra boxes with tied 2-decimal scores
            det_lines.append([row[0], row[1], *[f"{v:.3f}" for v in np.sort(rng.random(4))], row[6], f"{rng.random():.2f}"])
    expected_map, expected_ap = loop_ava_map(gt_lines, det_lines, labelmap.ids, excluded)
    result = evaluate(gt_lines, det_lines, labelmap.ids, excluded)
    assert result.mAP == pytest.approx(expected_map, abs=1e-9)
    for c, ap in zip(labelmap.ids, result.ap):
        assert (math.isnan(ap) and math.isnan(expected_ap[c])) or ap == pytest.approx(expected_ap[c], abs=1e-9)
    assert 0.2 < result.mAP < 0.95
    # The GT against itself (score 1.0 for every row) is perfect for every class with ground truth.
    perfect = evaluate(gt_lines, [row[:7] for row in gt_lines], labelmap.ids, excluded, top_k=None)
    assert perfect.mAP == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def test_cli_eval_ava_writes_table_and_json(tmp_path: Path, capsys):
    gt = AVARows.from_arrays(
        video=["v", "v"], timestamp=[902, 902], boxes=[A, B], action_id=[1, 2], person_id=[0, 1]
    )
    det = AVARows.from_arrays(
        video=["v", "v"], timestamp=[902, 902], boxes=[A, A], action_id=[1, 2], score=[0.9, 0.8]
    )
    write_ava_annotations(tmp_path / "gt.csv", gt)
    write_ava_predictions(tmp_path / "det.csv", det)
    write_labelmap(tmp_path / "map.pbtxt", labelmap_of([1, 2], ["walk", "run"]))
    (tmp_path / "excl.csv").write_text("")
    code = cli_main(
        [
            "eval", "ava", "--gt", str(tmp_path / "gt.csv"), "--labelmap", str(tmp_path / "map.pbtxt"),
            "--exclusions", str(tmp_path / "excl.csv"), "--detections", str(tmp_path / "det.csv"),
            "--json", str(tmp_path / "out.json"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "walk" in out and "run" in out and "50.00" in out
    assert json.loads((tmp_path / "out.json").read_text()) == {"mAP": 0.5, "per_class": {"walk": 1.0, "run": 0.0}}


def test_cli_eval_ava_bad_row_is_one_line_error(tmp_path: Path, capsys):
    (tmp_path / "gt.csv").write_text("v,0902,0.1,0.1,0.5,0.5,1,0\n")
    (tmp_path / "det.csv").write_text("v,0902,0.1,0.1,0.5,0.5,1,0.9\nv,0902,0.1,oops,0.5,0.5,1,0.9\n")
    write_labelmap(tmp_path / "map.pbtxt", labelmap_of([1]))
    code = cli_main(
        ["eval", "ava", "--gt", str(tmp_path / "gt.csv"), "--labelmap", str(tmp_path / "map.pbtxt"),
         "--detections", str(tmp_path / "det.csv")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "det.csv line 2" in err and "y1" in err


def test_ava_map_by_visibility_ignores_detections_of_other_bands(tmp_path):
    from stad.data.ava import read_actor_visibility
    from stad.eval.ava_map import ava_map_by_visibility

    labelmap = LabelMap(ids=[1], names=["a"], label_types=[None])
    visible, hidden = [0.0, 0.0, 0.4, 0.4], [0.6, 0.6, 1.0, 1.0]
    gt = AVARows.from_arrays(video=["v", "v"], timestamp=[1, 1], boxes=[visible, hidden], action_id=[1, 1], person_id=[0, 1])
    dets = AVARows.from_arrays(video=["v"] * 3, timestamp=[1] * 3, boxes=[hidden, visible, [0.5, 0.0, 0.55, 0.05]],
                               action_id=[1, 1, 1], score=[0.95, 0.9, 0.7])
    bands = ava_map_by_visibility(gt, dets, labelmap, np.array([0.9, 0.1]))
    assert bands["0.75-1"]["mAP"] == pytest.approx(1.0)  # the hidden actor's detection is ignored, not a FP
    assert bands["0-0.25"]["mAP"] == pytest.approx(1.0)
    assert np.isnan(bands["0.25-0.75"]["mAP"]) and bands["0.25-0.75"]["n_gt"] == 0
    assert ava_map(gt.select(np.array([True, False])), dets, labelmap).mAP == pytest.approx(0.5)  # without ignoring
    with pytest.raises(ValueError, match="one value per ground-truth row"):
        ava_map_by_visibility(gt, dets, labelmap, np.array([0.5]))
    path = tmp_path / "vis.csv"
    path.write_text("v,0001,0,0.9\nv,1,1,1.5\n")
    with pytest.raises(StadError, match=r"vis.csv line 2: visibility must be in \[0, 1\]"):
        read_actor_visibility(path)
    path.write_text("v,0001,0,0.9\n")
    assert read_actor_visibility(path) == {("v", 1, 0): 0.9}


def test_actor_ap_merges_the_classes_of_a_box():
    from stad.eval.ava_map import actor_ap

    labelmap = LabelMap(ids=[1, 2], names=["a", "b"], label_types=[None, None])
    box, other = [0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]
    gt = AVARows.from_arrays(video=["v", "v"], timestamp=[1, 1], boxes=[box, box], action_id=[1, 2], person_id=[0, 0])
    # the right box under the wrong class still finds the actor; the false box scores below it once merged
    dets = AVARows.from_arrays(video=["v"] * 4, timestamp=[1] * 4, boxes=[other, box, box, other],
                               action_id=[1, 2, 1, 7], score=[0.3, 0.2, 0.9, 0.95])
    result = actor_ap(gt, dets, labelmap)
    assert result.num_gt.tolist() == [1] and result.num_detections.tolist() == [2]  # id 7 is not in the map
    assert result.mAP == pytest.approx(1.0)
