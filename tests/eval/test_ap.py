"""AP variants: ACT trapezoid (float32, raw curve from (0, 1)), VOC all-point, VOC07 11-point."""

from __future__ import annotations

import numpy as np
import pytest

from stad.eval.ap import act_ap, act_curve, voc07_ap, voc_ap, voc_curve


def test_act_ap_hand_computed():
    # TP, FP, TP with 2 GT: points (0,1) (.5,1) (.5,.5) (1,2/3)
    assert act_ap([True, False, True], 2) == pytest.approx(0.5 * 2 / 2 + 0 + 0.5 * (0.5 + 2 / 3) / 2, abs=1e-7)
    assert act_ap([True], 1) == 1.0
    assert act_ap([False, True], 1) == pytest.approx(0.25)  # (0,1) (0,0) (1,.5)
    assert act_ap([], 3) == 0.0
    assert act_ap([False, False], 0) == 0.0  # no ground truth: 0, not a division by zero


def test_act_curve_is_float32_and_starts_at_one():
    precision, recall = act_curve(np.array([True, False, True]), 3)
    assert precision.dtype == np.float32 and recall.dtype == np.float32
    assert precision[0] == 1 and recall[0] == 0
    np.testing.assert_array_equal(recall, np.float32([0, 1 / 3, 1 / 3, 2 / 3]))


def test_act_ap_differs_from_voc_on_a_dip():
    tp = [False, True, True]
    p, r = voc_curve(tp, 2)
    # VOC envelope: precision 2/3 for all recall -> 2/3 ; ACT trapezoid from (0,1) through (0,0)
    assert voc_ap(r, p) == pytest.approx(2 / 3)
    assert act_ap(tp, 2) == pytest.approx(0 + 0.5 * (0 + 0.5) / 2 + 0.5 * (0.5 + 2 / 3) / 2, abs=1e-7)


def test_act_ap_matches_reference_float32_sum():
    rng = np.random.default_rng(0)
    tp = rng.random(5000) < 0.3
    n_gt = int(tp.sum()) + 100
    pr = np.empty((tp.size + 1, 2), np.float32)
    pr[0] = (1, 0)
    t = f = 0
    for i, x in enumerate(tp):
        t, f = t + x, f + (not x)
        pr[i + 1] = (t / (t + f), t / n_gt)
    ref = np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5)
    assert act_ap(tp, n_gt) == float(ref)


def test_voc_ap_and_voc07():
    assert voc_ap([], []) == 0.0
    assert voc_ap([0.5, 1.0], [1.0, 1.0]) == 1.0
    assert voc_ap([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # 11-point: recall 0.5 reached at precision 1 -> t=0..0.5 give 1 (6 points), t>0.5 give 0
    assert voc07_ap([0.5], [1.0]) == pytest.approx(6 / 11)
