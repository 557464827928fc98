"""Temporal trimming (ROAD-style two-state Viterbi) of offline ACT/MOC tubes, shared with the online linker."""

from __future__ import annotations

import numpy as np
import pytest

from stad.errors import StadError
from stad.structures import Tube, Tubelets
from stad.tubes import OnlineLinker, build_tubes, build_tubes_for_videos
from stad.tubes.link_online import viterbi_action_segments as online_viterbi
from stad.tubes.trim import TRIM_PENALTY, TRIM_THRESHOLD, action_segments, viterbi_action_segments
from tests.tubes.test_link_offline import _assert_same_tubes, _random_tubelets

BOX = np.array([10.0, 20.0, 50.0, 80.0])  # x1, y1, x2, y2 pixels


def _static_tubelets(scores, K: int, *, label: int = 0) -> Tubelets:
    """One still actor: the tubelet starting at frame s (from 1) has score ``scores[s - 1]``."""
    n = len(scores)
    return Tubelets(
        start=np.arange(1, n + 1, dtype=np.int64),
        label=np.full(n, label, np.int64),
        score=np.asarray(scores, np.float64),
        boxes=np.tile(BOX, (n, K, 1)),  # [N, K, 4]
    )


def _span(tube: Tube) -> tuple[int, int]:
    return int(tube.boxes[0, 0]), int(tube.boxes[-1, 0])


def _high_on(starts_high: list[range], n_starts: int, *, high: float = 0.9, low: float = 0.01) -> np.ndarray:
    scores = np.full(n_starts, low)
    for r in starts_high:
        scores[np.asarray(r) - 1] = high
    return scores


# --------------------------------------------------------------------------------------------- (a)


def test_tube_high_on_frames_20_to_40_is_cut_to_exactly_those_frames():
    # K = 3, 60 frames: tubelets starting 20..38 (covering frames 20..40) score 0.9, all others 0.01.
    # Frame f averages the tubelets starting f-2..f: 0.307 on frames 20 and 40, 0.603 on 21 and 39,
    # 0.9 in between, 0.01 elsewhere -> only frames 20..40 are above the 0.1 threshold.
    K, T = 3, 60
    scores = _high_on([range(20, 39)], T - K + 1)
    tub = _static_tubelets(scores, K)
    (full,) = build_tubes(tub, num_classes=2, nframes=T)
    assert _span(full) == (1, T)  # untrimmed: the linker follows the actor through all 60 frames
    assert full.boxes[18:41, 5] == pytest.approx([0.01] + [(0.9 + 0.02) / 3, (1.8 + 0.01) / 3] + [0.9] * 17
                                                 + [(1.8 + 0.01) / 3, (0.9 + 0.02) / 3, 0.01])  # fmt: skip

    (cut,) = build_tubes(tub, num_classes=2, nframes=T, trim=True)
    assert cut.label == 0
    assert _span(cut) == (20, 40)
    assert cut.boxes[:, 0].tolist() == list(range(20, 41))
    assert np.array_equal(cut.boxes, full.boxes[19:40])  # boxes and frame scores of the tube, unchanged
    # Score: mean of the tubelets covering a frame of 20..40, i.e. starting 18..40 (19 high, 4 low).
    assert cut.score == pytest.approx((19 * 0.9 + 4 * 0.01) / 23)
    assert full.score == pytest.approx((19 * 0.9 + 39 * 0.01) / 58)


# --------------------------------------------------------------------------------------------- (b)


def test_two_separated_high_segments_give_two_tubes():
    # Tubelets starting 10..25 and 45..60 score 0.9 -> high frames 10..27 and 45..62; the 17 frames
    # between score 0.01: deficit 17 * 0.09 = 1.53 > 2 * penalty (two label changes) -> split.
    K, T = 3, 80
    tub = _static_tubelets(_high_on([range(10, 26), range(45, 61)], T - K + 1), K, label=1)
    (full,) = build_tubes(tub, num_classes=2, nframes=T)
    tubes = build_tubes(tub, num_classes=2, nframes=T, trim=True)
    assert [(t.label, _span(t)) for t in tubes] == [(1, (10, 27)), (1, (45, 62))]
    for t in tubes:
        first, last = _span(t)
        assert np.array_equal(t.boxes, full.boxes[first - 1 : last])
        assert t.score == pytest.approx((16 * 0.9 + 4 * 0.01) / 20)  # tubelets starting first-2 .. last
    # A label change costing 1.0: bridging the gap (1.53) is cheaper than two changes (2.0), and
    # cutting the first 9 frames (0.81) cheaper than one change; the last 18 frames (1.62) are cut.
    (merged,) = build_tubes(tub, num_classes=2, nframes=T, trim=True, trim_penalty=1.0)
    assert _span(merged) == (1, 62)
    # A short segment is dropped like a short tube: min_length 19 keeps neither 18-frame segment.
    assert build_tubes(tub, num_classes=2, nframes=T, trim=True, min_length=19) == []
    assert len(build_tubes(tub, num_classes=2, nframes=T, trim=True, min_length=18)) == 2


def test_segments_pass_the_min_score_filter_and_weak_tubes_may_hold_a_segment():
    # One strong burst in a long weak tube: the tube's mean score (0.0041) is below min_score 0.005,
    # so it is dropped untrimmed, but its action segment scores 0.3 and is kept with trim.
    K, T = 1, 200
    scores = np.full(T, 0.0001)
    scores[99:115] = 0.05  # frames 100..115
    tub = _static_tubelets(scores, K)
    assert build_tubes(tub, num_classes=1, nframes=T) == []
    (cut,) = build_tubes(tub, num_classes=1, nframes=T, trim=True, trim_threshold=0.01, trim_penalty=0.1)
    assert _span(cut) == (100, 115) and cut.score == pytest.approx(0.05)
    assert build_tubes(tub, num_classes=1, nframes=T, trim=True, trim_threshold=0.01, trim_penalty=0.1,
                       min_score=0.051) == []  # fmt: skip


# --------------------------------------------------------------------------------------------- (c)


@pytest.mark.parametrize("K", [1, 3])
def test_trim_off_is_the_untrimmed_builder(K):
    rng = np.random.default_rng(11 + K)
    C, T = 3, 40
    tub = _random_tubelets(rng, K=K, nframes=T, num_classes=C, gap=0.05)
    want = build_tubes(tub, num_classes=C, nframes=T, min_length=6)  # ACT/MOC (test_link_offline checks it)
    assert len(want) >= 2
    got = build_tubes(tub, num_classes=C, nframes=T, min_length=6, trim=False, trim_threshold=0.9, trim_penalty=0.0)
    _assert_same_tubes(got, want)
    got = build_tubes_for_videos({"v": tub}, num_classes=C, nframes={"v": T}, min_length=6, trim=False)["v"]
    _assert_same_tubes(got, want)
    (full,) = build_tubes(_static_tubelets(_high_on([range(20, 39)], 58), 3), num_classes=1, nframes=60, trim=False)
    assert _span(full) == (1, 60)


@pytest.mark.parametrize("K", [1, 2, 3])
def test_trim_with_every_frame_action_keeps_every_tube_exactly(K):
    # Threshold 0 and positive tubelet scores: every frame is "action", each tube is one segment that
    # spans it, and the segment's score must be bit-identical to the tube's (same order, same filter).
    rng = np.random.default_rng(5 + K)
    C, T = 3, 45
    tub = _random_tubelets(rng, K=K, nframes=T, num_classes=C, n_actors=4)
    want = build_tubes(tub, num_classes=C, nframes=T, nms_threshold=0.999, min_length=5)  # no suppression here
    assert all((t.boxes[:, 5] > 0).all() for t in want) and len(want) >= 3
    got = build_tubes(tub, num_classes=C, nframes=T, nms_threshold=0.999, min_length=5, trim=True, trim_threshold=0.0)
    _assert_same_tubes(got, want)


@pytest.mark.parametrize("K", [1, 3, 5])
def test_trimmed_tubes_are_the_action_segments_of_the_untrimmed_tubes(K):
    # Reference: cut every untrimmed tube (no score filter) with action_segments, in output order.
    rng = np.random.default_rng(30 + K)
    C, T = 2, 60
    tub = _random_tubelets(rng, K=K, nframes=T, num_classes=C, gap=0.1)
    kwargs = dict(num_classes=C, nframes=T, min_length=4, min_score=-np.inf)
    threshold, penalty = 0.45, 0.3
    want = []
    for tube in build_tubes(tub, **kwargs):
        for s, e in action_segments(tube.boxes[:, 5], threshold=threshold, penalty=penalty).tolist():
            if e - s >= 4:
                want.append((tube.label, tube.boxes[s:e]))
    got = build_tubes(tub, **kwargs, trim=True, trim_threshold=threshold, trim_penalty=penalty)
    assert len(got) == len(want) >= 2
    for tube, (label, boxes) in zip(got, want):
        assert tube.label == label and np.array_equal(tube.boxes, boxes)
    if K == 1:  # each frame is one tubelet: the score is the mean frame score of the segment
        for tube in got:
            assert tube.score == pytest.approx(tube.boxes[:, 5].mean(), rel=1e-12)
    # The segments are what trimming a tube means: at least one tube was actually cut.
    assert sum(len(t.boxes) for t in got) < sum(len(t.boxes) for t in build_tubes(tub, **kwargs))


# --------------------------------------------------------------------------------------------- (d)


def test_tube_with_only_low_scores_is_dropped():
    K, T = 3, 60
    tub = _static_tubelets(np.full(T - K + 1, 0.08), K)  # every frame below the 0.1 threshold
    assert len(build_tubes(tub, num_classes=1, nframes=T)) == 1
    assert build_tubes(tub, num_classes=1, nframes=T, trim=True) == []
    assert build_tubes_for_videos({"v": tub}, num_classes=1, nframes={"v": T}, trim=True) == {"v": []}
    # ... but kept whole when the threshold is below its scores.
    (kept,) = build_tubes(tub, num_classes=1, nframes=T, trim=True, trim_threshold=0.05)
    assert _span(kept) == (1, T)


def test_trim_handles_no_tubelets():
    empty = Tubelets(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 3, 4)))
    assert build_tubes(empty, num_classes=2, nframes=10, trim=True) == []


# --------------------------------------------------------------------------------------------- (e)


@pytest.mark.parametrize("threshold, penalty", [(TRIM_THRESHOLD, TRIM_PENALTY), (0.5, 0.2), (0.3, 1.5)])
def test_online_and_offline_trimming_agree(threshold, penalty):
    rng = np.random.default_rng(int(threshold * 100 + penalty * 10))
    T = 90
    frame_scores = np.clip(rng.uniform(0.0, 0.25, T) + np.repeat(rng.uniform(0.0, 0.8, 9), 10), 0.01, 1.0)
    expected = action_segments(frame_scores, threshold=threshold, penalty=penalty)  # [S, 2]
    assert len(expected) >= 1
    spans = [(s + 1, e) for s, e in expected.tolist()]  # frames from 1, inclusive
    # Offline, K = 1: each frame's score is its tubelet's.
    offline = build_tubes(_static_tubelets(frame_scores, 1), num_classes=1, nframes=T, min_length=1,
                          trim=True, trim_threshold=threshold, trim_penalty=penalty)  # fmt: skip
    # Online: one detection per frame on the same still box.
    linker = OnlineLinker(1, min_length=1, trim=True, trim_threshold=threshold, trim_penalty=penalty)
    for t, s in enumerate(frame_scores, start=1):
        linker.update(t, BOX[None], np.array([s]), np.array([0]))
    online = linker.finish()
    assert [_span(t) for t in offline] == spans
    assert [_span(t) for t in online] == spans
    for a, b in zip(offline, online):
        assert a.score == pytest.approx(b.score, rel=1e-12)
        assert np.array_equal(a.boxes, b.boxes)


def test_one_viterbi_shared_by_both_linkers():
    assert online_viterbi is viterbi_action_segments
    np.testing.assert_array_equal(
        action_segments(np.array([0.0] * 6 + [0.9] * 3 + [0.0] * 6), threshold=0.1, penalty=0.5), [[6, 9]]
    )
    # ends whose deficit (2 x 0.1) is below one label change (0.5) are not worth cutting
    np.testing.assert_array_equal(action_segments(np.array([0.0] * 2 + [0.9] * 3 + [0.0] * 2)), [[0, 7]])
    assert action_segments(np.zeros(0)).shape == (0, 2)
    assert action_segments(np.full(5, 0.1), threshold=0.1).shape == (0, 2)  # ties favour background


# --------------------------------------------------------------------------------------------- (f)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(trim_penalty=-0.1), "trim_penalty must be >= 0"),
        (dict(trim_penalty=float("inf")), "trim_penalty"),
        (dict(trim_threshold=1.5), r"trim_threshold must be in \[0, 1\].*1\.5"),
        (dict(trim_threshold=-0.2), r"trim_threshold must be in \[0, 1\].*-0\.2"),
        (dict(trim_threshold=float("nan")), "trim_threshold"),
        (dict(trim="yes"), "trim must be True or False"),
    ],
)
def test_bad_trim_parameters(kwargs, match):
    tub = _static_tubelets(np.full(20, 0.5), 3)
    with pytest.raises(StadError, match=match):
        build_tubes(tub, num_classes=1, nframes=22, **{"trim": True, **kwargs})
    if "trim" not in kwargs:  # checked even when trimming is off, and by the online linker
        with pytest.raises(StadError, match=match):
            build_tubes_for_videos({"v": tub}, num_classes=1, nframes={"v": 22}, **kwargs)
        with pytest.raises(StadError, match=match):
            OnlineLinker(1, trim=True, **kwargs)


# --------------------------------------------------------------------------------------------- config


def test_eval_options_turn_trimming_on_in_both_families():
    from stad.config import config_from_dict
    from stad.engine.families.frame import online_link_options
    from stad.engine.families.tubelet import LinkConfig, link_config

    assert (LinkConfig().trim, LinkConfig().trim_threshold, LinkConfig().trim_penalty) == (
        False, TRIM_THRESHOLD, TRIM_PENALTY)  # fmt: skip
    options = {"trim": True, "trim_threshold": 0.2, "trim_penalty": 1}
    link = link_config(config_from_dict({"eval": {"options": options}}))
    assert (link.trim, link.trim_threshold, link.trim_penalty) == (True, 0.2, 1.0)
    assert link_config(config_from_dict({"eval": {"options": {}}})) == LinkConfig()
    assert online_link_options(options) == options  # the same keys reach OnlineLinker
    OnlineLinker(2, **online_link_options(options))
    for bad, match in (({"trim": "false"}, "eval.options.trim must be true or false"),
                       ({"trim_threshold": 2.0}, "trim_threshold"), ({"trim_penalty": -1}, "trim_penalty")):  # fmt: skip
        with pytest.raises(StadError, match=match):
            link_config(config_from_dict({"eval": {"options": bad}}))
        with pytest.raises(StadError, match=match):
            online_link_options(bad)
