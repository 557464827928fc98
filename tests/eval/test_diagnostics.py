"""Diagnostics: ACT error breakdown, frame-MABO, video classification, visibility bands."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from stad.errors import StadError
from stad.eval.diagnostics import (
    actor_metrics,
    class_agnostic,
    frame_ap_by_visibility,
    frame_ap_errors,
    frame_mabo,
    video_classification,
)
from stad.eval.frame_map import frame_map
from stad.structures import Tube

sys.path.insert(0, str(Path(__file__).parent))
from test_frame_map import make_dets, make_gt, random_case, tube  # noqa: E402


def test_each_error_type_once():
    # video v: class a on frames 1-2, class b on frame 5. video w: class b only.
    gt = make_gt({"v": {0: [tube([1, 2], (0, 0, 9, 9))], 1: [tube([5], (50, 50, 59, 59))]},
                  "w": {1: [tube([1], (0, 0, 9, 9))]}}, labels=("a", "b"))
    rows = [
        ("v", 1, 0, 0.9, 0, 0, 9, 9),      # TP
        ("v", 1, 0, 0.8, 0, 0, 9, 9),      # duplicate -> localization
        ("v", 5, 0, 0.7, 50, 50, 59, 59),  # on a class-b box -> classification
        ("v", 8, 0, 0.6, 0, 0, 9, 9),      # frame without GT, video has a -> time
        ("w", 1, 0, 0.5, 100, 100, 120, 120),  # other-class frame, no overlap -> other
        ("v", 2, 0, 0.4, 0, 0, 9, 9),      # TP
    ]
    dets = make_dets(rows, ["v", "w"])
    err = frame_ap_errors(gt, dets)
    # ranks: TP, L, C, T, O, TP; recall .5 after rank 1 and 1 after rank 6
    # localization fraction over ranks: 0, 1/2, 1/3, 1/4, 1/5, 1/6 ; recall changes only at ranks 1 and 6
    assert err.localization["a"] == pytest.approx(0.5 * (0 + 0) / 2 + 0.5 * (1 / 5 + 1 / 6) / 2, abs=1e-7)
    assert err.classification["a"] == pytest.approx(0.5 * (1 / 5 + 1 / 6) / 2, abs=1e-7)
    assert err.time["a"] == pytest.approx(0.5 * (1 / 5 + 1 / 6) / 2, abs=1e-7)
    assert err.other["a"] == pytest.approx(0.5 * (1 / 5 + 1 / 6) / 2, abs=1e-7)
    assert err.missed["a"] == pytest.approx(0.0)
    assert err.ap["a"] == frame_map(gt, dets).per_class["a"]
    total = err.ap["a"] + err.localization["a"] + err.classification["a"] + err.time["a"] + err.other["a"] + err.missed["a"]
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_error_areas_sum_to_one(seed):
    gt, dets = random_case(seed)
    err = frame_ap_errors(gt, dets)
    res = frame_map(gt, dets)
    for name in gt.labels:
        parts = [getattr(err, k)[name] for k in ("ap", "localization", "classification", "time", "other", "missed")]
        assert sum(parts) == pytest.approx(1.0, abs=1e-5)
        assert err.ap[name] == res.per_class[name]


def test_frame_mabo():
    gt = make_gt({"v": {0: [tube([1, 2], (0, 0, 9, 9))], 1: [tube([1], (0, 0, 9, 4))]}}, labels=("a", "b", "c"))
    dets = make_dets([("v", 1, 2, 0.1, 0, 0, 9, 9)], ["v"])  # any class counts
    mabo, per_class = frame_mabo(gt, dets)
    assert per_class["a"] == pytest.approx(0.5)  # frame 1: 1.0, frame 2: no detection -> 0
    assert per_class["b"] == pytest.approx(0.5)  # +1 areas 50/100
    assert np.isnan(per_class["c"])
    assert mabo == pytest.approx(0.5)


def test_video_classification():
    gt = make_gt({"v": {0: [tube([1], (0, 0, 9, 9))]}, "w": {1: [tube([1], (0, 0, 9, 9))]}, "x": {0: [tube([1], (0, 0, 9, 9))]}},
                 labels=("a", "b"))
    t = lambda c, s: Tube(c, s, np.array([[1, 0, 0, 9, 9, s]], float))  # noqa: E731
    acc = video_classification(gt, {"v": [t(0, 0.9), t(1, 0.5)], "w": [t(0, 0.9), t(1, 0.95)]})
    assert acc == pytest.approx(2 / 3)  # x has no tubes -> wrong
    with pytest.raises(StadError, match="not a test video"):
        video_classification(gt, {"z": []})


def test_visibility_bands():
    gt = make_gt({"v": {0: [tube([1, 2, 3], (0, 0, 9, 9))]}}, labels=("a",))
    with pytest.raises(StadError, match="visibility"):
        frame_ap_by_visibility(gt, make_dets([], ["v"]))
    gt.visibility = {"v": {0: [np.array([0.1, 0.5, 0.9])]}}
    rows = [("v", 1, 0, 0.9, 0, 0, 9, 9), ("v", 3, 0, 0.8, 0, 0, 9, 9), ("v", 4, 0, 0.7, 0, 0, 9, 9)]
    res = frame_ap_by_visibility(gt, make_dets(rows, ["v"]))
    assert set(res) == {"0-0.25", "0.25-0.75", "0.75-1"}
    # band 0-0.25: TP (frame 1), [frame-3 match ignored], FP -> (0,1) (1,1) (1,.5) -> 1
    assert res["0-0.25"]["per_class"]["a"] == pytest.approx(1.0)
    assert res["0.25-0.75"]["per_class"]["a"] == 0.0  # missed; only the FP counts
    # band 0.75-1: [frame 1 ignored], TP, FP -> 1
    assert res["0.75-1"]["mAP"] == pytest.approx(1.0)
    assert res["0.75-1"]["n_gt"] == 1


def test_class_agnostic_merges_labels_and_duplicate_boxes():
    gt = make_gt({"v": {0: [tube([1, 2], (0, 0, 9, 9))], 1: [tube([1, 2], (20, 20, 29, 29))]}}, labels=("a", "b"))
    gt.visibility = {"v": {0: [np.array([1.0, 0.1])], 1: [np.array([1.0, 1.0])]}}
    rows = [
        ("v", 1, 1, 0.9, 0, 0, 9, 9),  # the actor of "a" found with the wrong action: a class-agnostic TP
        ("v", 1, 0, 0.5, 0, 0, 9, 10),  # the same box with another label: merged away by the NMS
        ("v", 1, 0, 0.8, 20, 20, 29, 29),  # actor of "b", wrong action: TP
        ("v", 2, 0, 0.7, 40, 40, 49, 49),  # nobody there: FP
        ("v", 2, 1, 0.6, 0, 0, 9, 9),  # the occluded actor of "a" (visibility 0.1): TP
    ]
    dets = make_dets(rows, ["v"])
    assert frame_map(gt, dets).mAP < 0.1  # most right boxes have the wrong label
    agnostic_gt, agnostic = class_agnostic(gt, dets)
    assert agnostic_gt.labels == ["actor"] and len(agnostic_gt.gttubes["v"][0]) == 2
    assert [len(v) for v in agnostic_gt.visibility["v"][0]] == [2, 2]
    assert sorted(agnostic.score.tolist()) == [0.6, 0.7, 0.8, 0.9] and (agnostic.label == 0).all()
    metrics = actor_metrics(gt, dets)
    # ranked: TP .9, TP .8, FP .7, TP .6 (4 positives): precision/recall (1,.25) (1,.5) (2/3,.5) (.75,.75)
    assert metrics["actor_AP"] == pytest.approx(frame_map(agnostic_gt, agnostic).mAP)
    assert 0.5 < metrics["actor_AP"] < 0.75
    # band 0-0.25 holds only the occluded box (frame 2 of "a"), found at rank 4 after one FP
    assert metrics["actor_AP/vis0-0.25"] > 0 and metrics["actor_AP/vis0.75-1"] > metrics["actor_AP/vis0-0.25"]
    assert "actor_AP/vis0-0.25" not in actor_metrics(gt, dets, by_visibility=False)
