"""Soft NMS of boxes and tubelets, tube NMS and spatio-temporal IoU (ACT rules, +1 areas)."""

from __future__ import annotations

import numpy as np
import pytest

from stad.errors import StadError
from stad.structures import Tube
from stad.tubes.nms import TubeTable, batched_tube_nms, spatiotemporal_iou_pairs
from stad.tubes import (
    batched_frame_soft_nms,
    batched_tubelet_soft_nms,
    frame_soft_nms,
    spatiotemporal_iou,
    spatiotemporal_iou_matrix,
    tube_nms,
    tubelet_soft_nms,
)
from tests.tubes.reference import iou_plus_one

# ---------------------------------------------------------------------------------------------
# Loop references written from the rules (queue-based greedy, as PROTOCOLS.md §A words it)
# ---------------------------------------------------------------------------------------------


_iou = iou_plus_one


def _ref_soft_nms(n, overlap, scores, thr):
    """Greedy soft NMS; overlap(i, j) -> float. Returns weights (n,) and the queue order."""
    queue = sorted(range(n), key=lambda i: (-scores[i], i))
    priority = list(queue)
    weight = np.ones(n)
    while queue:
        p, rest, queue = queue[0], queue[1:], []
        for j in rest:
            o = overlap(p, j)
            if o > thr:
                weight[j] = 1.0 - o
            else:
                queue.append(j)
    return weight, priority


def _ref_frame_soft_nms(boxes, scores, thr=0.6):
    weight, _ = _ref_soft_nms(len(scores), lambda i, j: _iou(boxes[i], boxes[j]), scores, thr)
    return scores * weight


def _ref_tubelet_soft_nms(boxes, scores, thr=0.6, top_k=10):
    K = boxes.shape[1]

    def summed(i, j):
        s = 0.0
        for k in range(K):
            s += _iou(boxes[i, k], boxes[j, k])
        return s

    weight, priority = _ref_soft_nms(len(scores), summed, scores, thr * K)
    new = scores * weight
    rank = {i: r for r, i in enumerate(priority)}
    keep = sorted(range(len(scores)), key=lambda i: (-new[i], rank[i]))[:top_k]
    return np.array(keep, np.int64), new[keep]


def _random_boxes(rng, n, *, clusters=3, spread=4.0):
    centres = rng.uniform(20, 200, (clusters, 2))[rng.integers(clusters, size=n)] + rng.normal(0, spread, (n, 2))
    wh = rng.uniform(20, 50, (n, 2))
    return np.c_[centres - wh / 2, centres + wh / 2]


# ---------------------------------------------------------------------------------------------
# Frame soft NMS
# ---------------------------------------------------------------------------------------------


def test_frame_soft_nms_hand_case():
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 8], [0, 0, 19, 9], [50, 50, 60, 60]], np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    out = frame_soft_nms(boxes, scores)
    # box 1: IoU 90/100 = 0.9 > 0.6 with box 0 -> weight 0.1; box 2: IoU 100/200 = 0.5 stays and is
    # picked next (its IoU with box 1 is 90/200, irrelevant: box 1 already left); box 3 untouched.
    assert out == pytest.approx([0.9, 0.8 * 0.1, 0.7, 0.6])


def test_frame_soft_nms_removed_boxes_do_not_suppress():
    # 0 suppresses 1 (IoU 0.9); 1 would suppress 2 but has left the queue, and 0-2 IoU is 0.5.
    boxes = np.array([[0, 0, 9, 9], [0, 0, 14, 9], [0, 0, 19, 9]], np.float64)
    out = frame_soft_nms(boxes, np.array([0.9, 0.8, 0.7]))
    assert out == pytest.approx([0.9, 0.8 * (1 - 100 / 150), 0.7])


def test_frame_soft_nms_threshold_is_strict():
    boxes = np.array([[0, 0, 9, 9], [0, 0, 19, 9]], np.float64)  # IoU exactly 0.5
    assert frame_soft_nms(boxes, np.array([0.9, 0.8]), threshold=0.5).tolist() == [0.9, 0.8]
    assert frame_soft_nms(boxes, np.array([0.9, 0.8]), threshold=0.49) == pytest.approx([0.9, 0.4])


@pytest.mark.parametrize("seed", range(6))
def test_batched_frame_soft_nms_equals_loop_per_group(seed):
    rng = np.random.default_rng(seed)
    n = 120
    boxes = _random_boxes(rng, n, clusters=4, spread=3.0 + seed)
    scores = rng.uniform(0, 1, n)
    scores[:10] = scores[10:20]  # ties: the earlier row wins
    boxes[20:30] = boxes[30:40] + rng.normal(0, 0.2, (10, 4))  # near duplicates
    groups = rng.integers(0, 5, n) * 7 - 3  # arbitrary integer keys
    groups[20:30] = groups[30:40]
    thr = [0.6, 0.3, 0.0, 0.9, 0.6, 0.5][seed]
    got = batched_frame_soft_nms(boxes, scores, groups, thr)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        assert np.array_equal(got[idx], _ref_frame_soft_nms(boxes[idx], scores[idx], thr))
    assert (got < scores).sum() > (10 if thr <= 0.6 else 2)  # suppression happened


def test_frame_soft_nms_empty_and_bad_input():
    assert frame_soft_nms(np.zeros((0, 4)), np.zeros(0)).shape == (0,)
    with pytest.raises(StadError, match=r"boxes must have shape \[N, 4\]"):
        frame_soft_nms(np.zeros((3, 5)), np.zeros(3))
    with pytest.raises(StadError, match="scores must have shape"):
        frame_soft_nms(np.zeros((3, 4)), np.zeros(2))
    with pytest.raises(StadError, match="finite"):
        frame_soft_nms(np.full((1, 4), np.nan), np.zeros(1))
    with pytest.raises(StadError, match=r"threshold must be in \[0, 1\)"):
        frame_soft_nms(np.zeros((1, 4)), np.zeros(1), threshold=1.0)


# ---------------------------------------------------------------------------------------------
# Tubelet soft NMS
# ---------------------------------------------------------------------------------------------


def test_tubelet_soft_nms_hand_case_negative_weight():
    K = 3
    a = np.tile([0.0, 0.0, 9.0, 9.0], (K, 1))
    b = a.copy()
    b[0] = [0, 0, 9, 8]  # IoUs 0.9, 1, 1: sum 2.9 > 0.6 * 3 -> weight 1 - 2.9 = -1.9
    c = a + 100.0
    result = tubelet_soft_nms(np.stack([a, b, c]), np.array([0.9, 0.8, 0.5]))
    assert result.keep.tolist() == [0, 2, 1]  # the suppressed tubelet ranks last with a negative score
    assert result.scores == pytest.approx([0.9, 0.5, 0.8 * (1 - 2.9)])
    top = tubelet_soft_nms(np.stack([a, b, c]), np.array([0.9, 0.8, 0.5]), top_k=2)
    assert top.keep.tolist() == [0, 2]


def test_tubelet_soft_nms_uses_the_sum_not_each_frame():
    # Frame IoUs 1.0 and 0.25 (sum 1.25 > 1.2): suppressed, although one frame is far below 0.6.
    a = np.array([[0, 0, 9, 9], [0, 0, 9, 9]], np.float64)
    b = np.array([[0, 0, 9, 9], [0, 0, 9, 9]], np.float64)
    b[1] = [0, 0, 9, 39]  # area 400, inter 100 -> 0.25
    r = tubelet_soft_nms(np.stack([a, b]), np.array([0.9, 0.8]))
    assert r.scores == pytest.approx([0.9, 0.8 * (1 - 1.25)])


@pytest.mark.parametrize("K", [1, 2, 3, 7])
@pytest.mark.parametrize("seed", range(3))
def test_batched_tubelet_soft_nms_equals_loop_per_group(K, seed):
    rng = np.random.default_rng(10 * K + seed)
    n = 80
    first = _random_boxes(rng, n, clusters=3, spread=2.0 + 2 * seed)  # [n, 4]
    boxes = first[:, None, :] + np.cumsum(rng.normal(0, 1.0, (n, K, 4)), axis=1)  # drift over K frames
    scores = rng.uniform(0, 1, n)
    groups = rng.integers(0, 4, n)
    top_k = [10, 3, None][seed]
    got = batched_tubelet_soft_nms(boxes, scores, groups, top_k=top_k)
    offset = 0
    for g in np.unique(groups):  # the result lists groups in ascending key order
        idx = np.flatnonzero(groups == g)
        keep, new = _ref_tubelet_soft_nms(boxes[idx], scores[idx], 0.6, top_k or n)
        m = len(keep)
        assert np.array_equal(got.keep[offset : offset + m], idx[keep])
        assert np.array_equal(got.scores[offset : offset + m], new)
        offset += m
    assert offset == len(got.keep)
    if top_k is None:  # suppression happened; for K >= 2 the weights 1 - sum are negative
        assert (got.scores < 0).any() if K > 1 else (got.scores < scores[got.keep]).any()


def test_tubelet_soft_nms_empty_and_bad_input():
    r = tubelet_soft_nms(np.zeros((0, 5, 4)), np.zeros(0))
    assert r.keep.shape == (0,) and r.scores.shape == (0,)
    with pytest.raises(StadError, match=r"\[N, K, 4\]"):
        tubelet_soft_nms(np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(StadError, match="top_k"):
        tubelet_soft_nms(np.zeros((1, 2, 4)), np.zeros(1), top_k=0)
    with pytest.raises(StadError, match="groups"):
        batched_tubelet_soft_nms(np.zeros((2, 2, 4)), np.zeros(2), np.zeros(3, int))


# ---------------------------------------------------------------------------------------------
# Spatio-temporal IoU and tube NMS
# ---------------------------------------------------------------------------------------------


def _tube(first, last, box, score_col=True):
    frames = np.arange(first, last + 1, dtype=np.float64)
    rows = np.c_[frames, np.tile(np.asarray(box, np.float64), (len(frames), 1))]
    return np.c_[rows, np.ones(len(frames))] if score_col else rows


def _ref_st_iou(a, b) -> float:
    """Loop reference of the ACT ``iou3dt``: temporal IoU times the mean per-frame +1 IoU."""
    lo, hi = max(a[0, 0], b[0, 0]), min(a[-1, 0], b[-1, 0])
    if hi < lo:
        return 0.0
    frames = range(int(lo), int(hi) + 1)
    ious = [_iou(a[int(f - a[0, 0]), 1:5], b[int(f - b[0, 0]), 1:5]) for f in frames]
    return float(np.mean(ious)) * (hi - lo + 1) / (max(a[-1, 0], b[-1, 0]) - min(a[0, 0], b[0, 0]) + 1)


def _ref_nms3dt(tubes, scores, threshold):
    """Loop reference of the ACT ``nms3dt``: keep the last of ``np.argsort(scores)``, drop ST-IoU > threshold."""
    order = np.argsort(scores)
    keep = []
    while order.size:
        i = order[-1]
        keep.append(int(i))
        ious = np.array([_ref_st_iou(tubes[j], tubes[i]) for j in order[:-1]])
        order = order[np.flatnonzero(ious <= threshold)]
    return keep


def _random_tubes(rng, n):
    tubes = []
    for _ in range(n):
        first = int(rng.integers(1, 30))
        length = int(rng.integers(1, 25))
        frames = np.arange(first, first + length)
        xy = rng.uniform(0, 20, 2) + np.cumsum(rng.normal(0, 2, (length, 2)), axis=0)
        tubes.append(np.c_[frames, xy, xy + 30, rng.uniform(0, 1, length)])
    return tubes


def test_spatiotemporal_iou_hand_case():
    a = _tube(1, 10, [0, 0, 9, 9])
    b = _tube(6, 15, [0, 0, 19, 9], score_col=False)  # 5 overlapping frames of 15; per-frame IoU 0.5
    assert spatiotemporal_iou(a, b) == pytest.approx(5 / 15 * 0.5)
    assert spatiotemporal_iou(b, a) == pytest.approx(5 / 15 * 0.5)
    assert spatiotemporal_iou(a, a) == pytest.approx(1.0)
    assert spatiotemporal_iou(a, _tube(11, 20, [0, 0, 9, 9])) == 0.0  # disjoint spans
    # A tube touching at one frame: 1 frame of 20, IoU 1.
    assert spatiotemporal_iou(a, _tube(10, 29, [0, 0, 9, 9])) == pytest.approx(1 / 29)
    with pytest.raises(StadError, match="consecutive"):
        spatiotemporal_iou(np.array([[1, 0, 0, 9, 9], [3, 0, 0, 9, 9]]), a)
    with pytest.raises(StadError, match=r"\[L, >=5\]"):
        spatiotemporal_iou(np.zeros((3, 4)), a)


def test_spatiotemporal_iou_matrix_equals_pairwise():
    rng = np.random.default_rng(0)
    tubes = []
    for _ in range(12):
        first = int(rng.integers(1, 40))
        length = int(rng.integers(1, 30))
        frames = np.arange(first, first + length)
        xy = rng.uniform(0, 30, 2) + np.cumsum(rng.normal(0, 2, (length, 2)), axis=0)
        tubes.append(np.c_[frames, xy, xy + 30, rng.uniform(0, 1, length)])
    m = spatiotemporal_iou_matrix(tubes[:7], tubes[4:])
    assert m.shape == (7, 8)
    want = np.array([[spatiotemporal_iou(a, b) for b in tubes[4:]] for a in tubes[:7]])
    assert np.allclose(m, want, rtol=1e-12, atol=1e-15)
    loop = np.array([[_ref_st_iou(a, b) for b in tubes[4:]] for a in tubes[:7]])
    assert np.allclose(m, loop, rtol=1e-12, atol=1e-15)
    assert (m > 0).sum() > 5 and (m == 0).sum() > 0
    assert spatiotemporal_iou_matrix([], tubes).shape == (0, 12)
    assert spatiotemporal_iou_matrix(tubes[:2], []).shape == (2, 0)


def test_tube_nms():
    t = [
        Tube(label=0, score=0.5, boxes=_tube(1, 20, [0, 0, 9, 9])),
        Tube(label=0, score=0.9, boxes=_tube(1, 20, [0, 0, 9, 8])),  # ST-IoU 0.9 with the first
        Tube(label=0, score=0.7, boxes=_tube(1, 20, [0, 0, 19, 9])),  # 0.5 / 0.45: removed by 0.9 tube
        Tube(label=1, score=0.1, boxes=_tube(1, 20, [0, 0, 9, 9])),  # other label: kept
        Tube(label=0, score=0.6, boxes=_tube(15, 40, [0, 0, 9, 9])),  # 6 of 40 frames: ST-IoU 0.135
    ]
    kept = tube_nms(t, threshold=0.3)
    assert [k.score for k in kept] == [0.9, 0.6, 0.1]
    assert kept[0] is t[1]
    assert [k.score for k in tube_nms(t, threshold=0.95)] == [0.9, 0.7, 0.6, 0.5, 0.1]
    assert tube_nms([]) == []


def test_tube_nms_ties_follow_the_reference_argsort():
    # Two identical tubes with equal scores: the reference keeps the one its argsort puts last.
    t = [Tube(label=0, score=0.5, boxes=_tube(1, 20, [0, 0, 9, 9])) for _ in range(2)]
    want = int(np.argsort(np.array([0.5, 0.5]))[-1])
    kept = tube_nms(t)
    assert len(kept) == 1 and kept[0] is t[want]
    # float32 scores are sorted as float32 (the dtype NumPy gives the list of scores)
    t32 = [Tube(label=0, score=np.float32(0.5), boxes=_tube(1, 20, [0, 0, 9, 9])) for _ in range(2)]
    assert tube_nms(t32)[0] is t32[int(np.argsort(np.array([0.5, 0.5], np.float32))[-1])]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(3))
def test_batched_tube_nms_equals_loop_nms3dt_per_group(seed, dtype):
    rng = np.random.default_rng(seed)
    tubes = _random_tubes(rng, 70)
    scores = (rng.integers(0, 4, len(tubes)) / 4).astype(dtype)  # many ties
    groups = rng.integers(0, 3, len(tubes)) * 7  # sparse group ids, one group larger than 16
    keep = batched_tube_nms(TubeTable.build(tubes), groups, scores, 0.3)
    want = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        want += [int(members[k]) for k in _ref_nms3dt([tubes[i] for i in members], scores[members], 0.3)]
    assert keep.tolist() == want
    assert 0 < len(want) < len(tubes)
    # tube_nms: the same kept tubes, ordered by descending score
    objs = [Tube(label=int(g), score=float(s), boxes=b) for g, s, b in zip(groups, scores, tubes)]
    kept = tube_nms(objs, 0.3)
    position = {id(o): i for i, o in enumerate(objs)}
    assert sorted(position[id(k)] for k in kept) == sorted(want)
    assert all(a.score >= b.score for a, b in zip(kept, kept[1:]))


def test_tube_table_checks_and_empty_tubes():
    good = _tube(1, 5, [0, 0, 9, 9])
    with pytest.raises(StadError, match=r"tubes_b\[1\]: frames must be consecutive and increasing"):
        spatiotemporal_iou_matrix([good], [good, np.array([[1, 0, 0, 9, 9], [3, 0, 0, 9, 9]])])
    with pytest.raises(StadError, match="tube 0 has no rows"):
        TubeTable.build([np.zeros((0, 5))], allow_empty=False)
    with pytest.raises(StadError, match=r"x\[1\] must have shape \[L, >=5\]"):
        TubeTable.build([good, np.zeros((3, 4))], name_of=lambda i: f"x[{i}]")
    # an empty tube overlaps nothing, and a tube after it is still checked and named correctly
    m = spatiotemporal_iou_matrix([good, np.zeros((0, 5)), good], [good])
    assert m.tolist() == [[1.0], [0.0], [1.0]]
    with pytest.raises(StadError, match=r"tubes_a\[2\]: frames"):
        spatiotemporal_iou_matrix([good, np.zeros((0, 5)), good[::-1]], [good])
    assert spatiotemporal_iou_pairs(TubeTable.build([good]), [], TubeTable.build([good]), []).shape == (0,)
    with pytest.raises(StadError, match="scores must be numbers"):
        tube_nms([Tube(label=0, score="high", boxes=good)])
    assert batched_tube_nms(TubeTable.build([]), np.zeros(0, np.int64), np.zeros(0), 0.3).shape == (0,)


@pytest.mark.parametrize("fraction", [0.0, 2.0])
def test_both_soft_nms_stages_alone_give_the_same_result(monkeypatch, fraction):
    # 0.0: pick rounds until every box is decided; 2.0: one round, then the overlap-graph stage.
    import stad.tubes.nms as nms

    monkeypatch.setattr(nms, "_MIN_ROUND_FRACTION", fraction)
    rng = np.random.default_rng(42)
    boxes = _random_boxes(rng, 150, clusters=5, spread=4.0)
    scores = rng.uniform(0, 1, 150)
    groups = rng.integers(0, 3, 150)
    got = batched_frame_soft_nms(boxes, scores, groups)
    for g in range(3):
        idx = np.flatnonzero(groups == g)
        assert np.array_equal(got[idx], _ref_frame_soft_nms(boxes[idx], scores[idx]))
    tubelets = boxes[:, None, :] + np.cumsum(rng.normal(0, 1.0, (150, 3, 4)), axis=1)
    result = batched_tubelet_soft_nms(tubelets, scores, groups, top_k=None)
    offset = 0
    for g in range(3):
        idx = np.flatnonzero(groups == g)
        keep, new = _ref_tubelet_soft_nms(tubelets[idx], scores[idx], 0.6, len(idx))
        assert np.array_equal(result.keep[offset : offset + len(keep)], idx[keep])
        assert np.array_equal(result.scores[offset : offset + len(keep)], new)
        offset += len(keep)
