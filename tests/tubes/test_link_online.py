"""Online tube linking (ROAD + KORSAL occlusion extension) on hand-made sequences with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from stad.errors import StadError
from stad.structures import FrameDetections
from stad.tubes.link_online import (
    OnlineLinker,
    TrackedTube,
    link_video_online,
    link_videos_online,
    viterbi_action_segments,
)

EMPTY = np.zeros((0, 4))


def moving_box(t: int, *, x0: float, vx: float, y0: float = 20.0, w: float = 40.0, h: float = 60.0) -> np.ndarray:
    """``(4,)`` box of an actor moving horizontally at constant speed, at frame t (from 1)."""
    x = x0 + vx * (t - 1)
    return np.array([x, y0, x + w, y0 + h])


def one_class(box: np.ndarray | None, score: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    if box is None:
        return EMPTY, np.zeros((0, 1))
    return box[None], np.array([[score]])


def run(linker: OnlineLinker, frames: dict[int, tuple[np.ndarray, np.ndarray]], last: int) -> list[TrackedTube]:
    for t in range(1, last + 1):
        boxes, scores = frames.get(t, (EMPTY, np.zeros((0, linker.params.num_classes))))
        linker.update(t, boxes, scores)
    return linker.finish()


def test_short_occlusion_keeps_one_identity_and_fills_the_gap_along_the_motion():
    linker = OnlineLinker(1, max_gap=3, min_length=1)
    missing = {5, 6, 7}  # 3 frames == max_gap
    frames = {t: one_class(None if t in missing else moving_box(t, x0=10, vx=4)) for t in range(1, 13)}
    tubes = run(linker, frames, 12)
    assert len(tubes) == 1
    tube = tubes[0]
    assert tube.track_id == 0 and tube.label == 0
    np.testing.assert_array_equal(tube.boxes[:, 0], np.arange(1, 13))
    expected = np.stack([moving_box(t, x0=10, vx=4) for t in range(1, 13)])
    np.testing.assert_allclose(tube.boxes[:, 1:5], expected)  # the gap follows the constant velocity
    np.testing.assert_array_equal(tube.extrapolated, [t in missing for t in range(1, 13)])
    np.testing.assert_allclose(tube.boxes[:, 5], np.where(tube.extrapolated, 0.0, 0.9))
    assert tube.score == pytest.approx(0.9)


def test_occlusion_longer_than_max_gap_gives_two_tubes_without_invented_ends():
    linker = OnlineLinker(1, max_gap=2, min_length=1)
    missing = {5, 6, 7}  # 3 frames > max_gap
    frames = {t: one_class(None if t in missing else moving_box(t, x0=10, vx=4)) for t in range(1, 13)}
    tubes = run(linker, frames, 12)
    assert [t.track_id for t in tubes] == [0, 1]
    np.testing.assert_array_equal(tubes[0].boxes[:, 0], [1, 2, 3, 4])
    np.testing.assert_array_equal(tubes[1].boxes[:, 0], np.arange(8, 13))
    for tube in tubes:
        assert not tube.extrapolated.any()
        assert (tube.boxes[:, 5] == 0.9).all()


def test_tube_ends_after_max_gap_misses_and_its_extrapolated_tail_is_dropped():
    linker = OnlineLinker(1, max_gap=3, min_length=1)
    for t in range(1, 5):
        live = linker.update(t, *one_class(moving_box(t, x0=0, vx=5)))
    assert [(lt.track_id, lt.extrapolated, lt.misses) for lt in live] == [(0, False, 0)]
    for t in range(5, 8):  # 3 misses: still live, extrapolated
        live = linker.update(t, *one_class(None))
        assert len(live) == 1 and live[0].extrapolated and live[0].misses == t - 4
        np.testing.assert_allclose(live[0].box, moving_box(t, x0=0, vx=5))
    assert linker.pop_finished() == []
    live = linker.update(8, *one_class(None))  # 4th miss: terminated
    assert live == [] and linker.num_live == 0
    (tube,) = linker.pop_finished()
    np.testing.assert_array_equal(tube.boxes[:, 0], [1, 2, 3, 4])
    assert not tube.extrapolated.any()
    assert linker.pop_finished() == [] and linker.finish() == []


def test_max_gap_zero_ends_a_tube_at_its_first_miss():
    linker = OnlineLinker(1, max_gap=0, min_length=1)
    frames = {1: one_class(moving_box(1, x0=0, vx=0)), 3: one_class(moving_box(3, x0=0, vx=0))}
    tubes = run(linker, frames, 3)
    assert [t.boxes[:, 0].tolist() for t in tubes] == [[1.0], [3.0]]


def crossing_frames(occluded: set[int], score_a: float = 0.9) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Actor A (``score_a``) moves right, actor B (0.8) moves left 10 px lower; they cross at frame 11.

    Detections are given in an order that changes over time (B first on odd frames), and B is not
    detected on the ``occluded`` frames while it is behind A.
    """
    frames = {}
    for t in range(1, 21):
        a = moving_box(t, x0=0, vx=8, y0=20)
        b = moving_box(t, x0=152, vx=-8, y0=30)
        boxes, scores = [a], [score_a]
        if t not in occluded:
            boxes, scores = ([b, a], [0.8, score_a]) if t % 2 else ([a, b], [score_a, 0.8])
        frames[t] = (np.stack(boxes), np.array(scores)[:, None])
    return frames


@pytest.mark.parametrize(
    ("occluded", "score_a"),
    [
        (set(), 0.8),  # equal scores: only the predicted boxes tell the actors apart
        # B hidden behind A: A's tube (higher score) chooses first and B's tube coasts on its
        # prediction. (With equal scores the greedy ROAD order could let B's tube take A's box.)
        ({9, 10, 11}, 0.9),
    ],
)
def test_crossing_actors_keep_their_identities(occluded, score_a):
    linker = OnlineLinker(1, max_gap=5, min_length=1, nms_threshold=None)
    tubes = run(linker, crossing_frames(occluded, score_a), 20)
    assert len(tubes) == 2
    by_start_x = sorted(tubes, key=lambda tube: tube.boxes[0, 1])
    a, b = by_start_x
    np.testing.assert_array_equal(a.boxes[:, 0], np.arange(1, 21))
    np.testing.assert_array_equal(b.boxes[:, 0], np.arange(1, 21))
    np.testing.assert_allclose(a.boxes[:, 1:5], np.stack([moving_box(t, x0=0, vx=8, y0=20) for t in range(1, 21)]))
    np.testing.assert_allclose(b.boxes[:, 1:5], np.stack([moving_box(t, x0=152, vx=-8, y0=30) for t in range(1, 21)]))
    np.testing.assert_array_equal(np.flatnonzero(b.extrapolated) + 1, sorted(occluded))
    assert not a.extrapolated.any()


def test_crossing_needs_the_predicted_box():
    # Sanity check that the scene is hard: at frame 11 each actor's previous box overlaps the
    # *other* actor's detection more than its own, so linking to the last box would swap them,
    # while each tube's constant-velocity prediction is exactly its own detection.
    from stad.boxes import box_iou

    a10, b10 = moving_box(10, x0=0, vx=8, y0=20), moving_box(10, x0=152, vx=-8, y0=30)
    a11, b11 = moving_box(11, x0=0, vx=8, y0=20), moving_box(11, x0=152, vx=-8, y0=30)
    iou = box_iou(np.stack([a10, b10]), np.stack([a11, b11]), plus_one=True)
    assert iou[0, 1] > iou[0, 0] and iou[1, 0] > iou[1, 1]


def test_classes_are_linked_independently():
    linker = OnlineLinker(2, min_length=1)
    for t in range(1, 7):
        box = moving_box(t, x0=0, vx=3)
        if t <= 3:  # one detection scored for both classes
            linker.update(t, box[None], np.array([[0.9, 0.7]]))
        else:  # only class 1 now: class 0's tube must not take it
            linker.update(t, box[None], np.array([[0.0, 0.7]]))
    tubes = linker.finish()
    by_label = {tube.label: tube for tube in tubes}
    assert sorted(by_label) == [0, 1] and len(tubes) == 2
    np.testing.assert_array_equal(by_label[1].boxes[:, 0], np.arange(1, 7))
    assert not by_label[1].extrapolated.any()
    np.testing.assert_array_equal(by_label[0].boxes[:, 0], [1, 2, 3])  # ended, tail dropped
    assert by_label[0].score == pytest.approx(0.9) and by_label[1].score == pytest.approx(0.7)


def test_labels_with_one_score_per_detection():
    linker = OnlineLinker(3, min_length=1)
    for t in range(1, 5):
        boxes = np.stack([moving_box(t, x0=0, vx=2), moving_box(t, x0=200, vx=-2)])
        linker.update(t, boxes, np.array([0.6, 0.5]), np.array([2, 0]))
    tubes = linker.finish()
    assert sorted((tube.label, len(tube.boxes)) for tube in tubes) == [(0, 4), (2, 4)]


def test_higher_scored_tube_chooses_first_and_cost_score_is_road():
    # Two tubes of one class compete for one detection at frame 3; the tube with the higher score wins.
    def scene(cost: str) -> list[TrackedTube]:
        linker = OnlineLinker(1, min_length=1, nms_threshold=None, cost=cost, max_gap=0)
        left, right = np.array([0.0, 0, 40, 60]), np.array([30.0, 0, 70, 60])
        linker.update(1, np.stack([left, right]), np.array([[0.5], [0.9]]))
        linker.update(2, np.stack([left, right]), np.array([[0.5], [0.9]]))
        middle = np.array([10.0, 0, 50, 60])  # IoU with left 0.6 > with right 0.36
        far_right = np.array([34.0, 0, 74, 60])  # only reachable by the right tube
        linker.update(3, np.stack([middle, far_right]), np.array([[0.9], [0.2]]))
        return linker.finish()

    # score_iou: the right tube (score 0.9) picks first: middle 0.9 + 0.36 > far_right 0.2 + 0.82;
    # the left tube then has nothing left and ends.
    tubes = {int(t.boxes[0, 1]): t for t in scene("score_iou")}
    np.testing.assert_allclose(tubes[30].boxes[-1, 1:5], [10, 0, 50, 60])
    assert tubes[0].boxes[-1, 0] == 2
    # ROAD's cost is the detection score alone: same winner here, and far_right starts a new tube.
    tubes_road = scene("score")
    assert len(tubes_road) == 3
    # track ids follow the candidate order at birth: right (0.9) is 0, left 1, far_right 2
    assert [t.boxes[:, 0].tolist() for t in tubes_road] == [[1.0, 2.0, 3.0], [1.0, 2.0], [3.0]]
    np.testing.assert_allclose(tubes_road[0].boxes[-1, 1:5], [10, 0, 50, 60])


def test_iou_threshold_is_inclusive_and_blocks_far_detections():
    linker = OnlineLinker(1, min_length=1, max_gap=0, iou_threshold=0.5, plus_one=False)
    linker.update(1, np.array([[0.0, 0, 10, 10]]), np.array([[0.9]]))
    linker.update(2, np.array([[0.0, 0, 10, 10]]), np.array([[0.9]]))
    linker.update(3, np.array([[0.0, 0, 10, 5]]), np.array([[0.9]]))  # IoU exactly 0.5 -> linked
    linker.update(4, np.array([[0.0, 0, 10, 2]]), np.array([[0.9]]))  # IoU 0.4 -> new tube
    assert [t.boxes[:, 0].tolist() for t in linker.finish()] == [[1.0, 2.0, 3.0], [4.0]]


def test_per_class_nms_and_top_k_select_the_candidates():
    linker = OnlineLinker(2, min_length=1, nms_threshold=0.45, top_k=2)
    boxes = np.array([[0.0, 0, 40, 40], [2, 0, 42, 40], [100, 0, 140, 40], [200, 0, 240, 40]])
    scores = np.array([[0.9, 0.1], [0.8, 0.0], [0.7, 0.0], [0.6, 0.0]])
    live = linker.update(1, boxes, scores)
    # class 0: box 1 suppressed by box 0, then top 2 = boxes 0 and 2; class 1: box 0 only (0.0 < min_score)
    got = sorted((lt.label, lt.box[0]) for lt in live)
    assert got == [(0, 0.0), (0, 100.0), (1, 0.0)]
    assert [lt.track_id for lt in live] == [0, 1, 2]


def test_start_score_and_min_length_filter():
    linker = OnlineLinker(1, start_score=0.5, min_length=3)
    live = linker.update(1, np.array([[0.0, 0, 10, 10], [50, 0, 60, 10]]), np.array([[0.9], [0.3]]))
    assert len(live) == 1  # the 0.3 detection starts no tube
    linker.update(2, np.array([[0.0, 0, 10, 10]]), np.array([[0.2]]))  # below start_score but extends
    tubes = linker.finish()
    assert tubes == []  # 2 frames < min_length 3
    linker = OnlineLinker(1, min_length=2)
    linker.update(1, np.array([[0.0, 0, 10, 10]]), np.array([[0.9]]))
    linker.update(2, np.array([[0.0, 0, 10, 10]]), np.array([[0.2]]))
    (tube,) = linker.finish()
    assert tube.score == pytest.approx(0.55)


def test_live_score_is_the_mean_of_the_last_real_scores():
    linker = OnlineLinker(1, score_window=2, min_length=1)
    box = np.array([[0.0, 0, 10, 10]])
    for t, s in enumerate([0.9, 0.1, 0.3], start=1):
        live = linker.update(t, box, np.array([[s]]))
    assert live[0].score == pytest.approx(0.2)
    live = linker.update(4, EMPTY, np.zeros((0, 1)))  # a miss does not change it
    assert live[0].score == pytest.approx(0.2)
    assert linker.finish()[0].score == pytest.approx((0.9 + 0.1 + 0.3) / 3)


def test_extrapolation_is_clipped_to_the_image():
    linker = OnlineLinker(1, image_size=(100, 50), min_length=1, max_gap=5)
    for t in range(1, 4):
        linker.update(t, moving_box(t, x0=0, vx=6, y0=10, w=20, h=20)[None], np.array([[0.9]]))
    for t in range(4, 9):
        live = linker.update(t, EMPTY, np.zeros((0, 1)))
    box = live[0].box
    np.testing.assert_allclose(box, [42, 10, 49, 30])  # x2 = 62 clipped to width - 1


def test_empty_streams_frames_and_skipped_frames():
    assert OnlineLinker(4).finish() == [] and OnlineLinker(4).pop_finished() == []
    linker = OnlineLinker(4)
    assert linker.update(1, [], []) == []
    assert linker.update(2, EMPTY, np.zeros((0, 4))) == []
    assert linker.finish() == [] and linker.frame is None
    linker = OnlineLinker(1, min_length=1)
    linker.update(1, np.array([[0.0, 0, 10, 10]]), np.array([[0.9]]))
    linker.update(2, np.array([[2.0, 0, 12, 10]]), np.array([[0.9]]))
    linker.update(5, np.array([[8.0, 0, 18, 10]]), np.array([[0.9]]))  # 3, 4 skipped: treated as empty
    (tube,) = linker.finish()
    np.testing.assert_array_equal(tube.boxes[:, 0], [1, 2, 3, 4, 5])
    np.testing.assert_allclose(tube.boxes[2:4, 1], [4.0, 6.0])
    np.testing.assert_array_equal(tube.extrapolated, [False, False, True, True, False])


def random_stream(seed: int, num_classes: int, frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(10, 60, (n, 2))
        out.append((np.c_[xy, xy + wh], rng.uniform(0, 1, (n, num_classes))))
    return out


def test_finish_returns_every_detection_exactly_once_and_pops_lose_nothing():
    stream = random_stream(0, 3, 40)
    everything = dict(min_length=1, nms_threshold=None, top_k=100, min_score=0.0, start_score=0.0)
    linker = OnlineLinker(3, **everything)
    for t, (boxes, scores) in enumerate(stream, start=1):
        linker.update(t, boxes, scores)
    tubes = linker.finish()
    real = np.concatenate([np.c_[t.boxes[~t.extrapolated], np.full((~t.extrapolated).sum(), t.label)] for t in tubes])
    expected = np.concatenate(
        [np.c_[np.full((len(b), 1), t), b, s[:, c], np.full(len(b), c)]
         for t, (b, s) in enumerate(stream, start=1) for c in range(3)]
    )  # fmt: skip
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(key(real), key(expected))
    for tube in tubes:  # consecutive frames, real first and last rows
        np.testing.assert_array_equal(np.diff(tube.boxes[:, 0]), 1)
        assert not tube.extrapolated[0] and not tube.extrapolated[-1]
    assert len({t.track_id for t in tubes}) == len(tubes)

    popped = []
    linker = OnlineLinker(3, **everything)
    for t, (boxes, scores) in enumerate(stream, start=1):
        linker.update(t, boxes, scores)
        if t % 7 == 0:
            popped += linker.pop_finished()
    popped += linker.finish()
    assert sorted(t.track_id for t in popped) == sorted(t.track_id for t in tubes)
    ref = {t.track_id: t for t in tubes}
    for tube in popped:
        np.testing.assert_array_equal(tube.boxes, ref[tube.track_id].boxes)


def test_deterministic_and_reusable_after_finish():
    stream = random_stream(1, 4, 60)

    def go(linker: OnlineLinker) -> list[tuple]:
        for t, (boxes, scores) in enumerate(stream, start=1):
            linker.update(t, boxes, scores)
        return [(t.track_id, t.label, t.score, t.boxes.tobytes()) for t in linker.finish()]

    linker = OnlineLinker(4, min_length=2)
    first = go(linker)
    assert first  # the scene does produce tubes
    assert go(linker) == first  # same linker after finish(): reset, ids from 0 again
    assert go(OnlineLinker(4, min_length=2)) == first


def test_viterbi_action_segments():
    np.testing.assert_array_equal(
        viterbi_action_segments(np.array([-1, -1, 2, 2, 2, -1, -1.0]), 0.5), [0, 0, 1, 1, 1, 0, 0]
    )
    # a short dip costs less than two label changes: stays one segment
    np.testing.assert_array_equal(viterbi_action_segments(np.array([1, -0.2, 1.0]), 0.5), [1, 1, 1])
    np.testing.assert_array_equal(viterbi_action_segments(np.array([1, -3, 1.0]), 0.5), [1, 0, 1])
    assert viterbi_action_segments(np.zeros(0), 1.0).shape == (0,)


def test_trim_splits_a_tube_at_a_low_scoring_stretch():
    linker = OnlineLinker(1, min_length=2, trim=True, trim_threshold=0.5, trim_penalty=0.2)
    box = np.array([[0.0, 0, 20, 20]])
    scores = [0.9, 0.9, 0.9, 0.05, 0.05, 0.05, 0.8, 0.8]
    for t, s in enumerate(scores, start=1):
        linker.update(t, box, np.array([[s]]))
    tubes = linker.finish()
    assert [t.boxes[:, 0].tolist() for t in tubes] == [[1.0, 2.0, 3.0], [7.0, 8.0]]
    assert [t.track_id for t in tubes] == [0, 0]
    assert [t.score for t in tubes] == pytest.approx([0.9, 0.8])


def test_link_video_online_from_frame_detections():
    rows = []  # (video, frame, label, score, box)
    for t in range(1, 11):
        if t not in (5, 6):
            rows.append((1, t, 0, 0.8, moving_box(t, x0=0, vx=3)))
        rows.append((0, t, 1, 0.7, moving_box(t, x0=100, vx=-3)))
    rows = rows[::-1]  # any row order
    det = FrameDetections(
        videos=["a", "b"],
        video=np.array([r[0] for r in rows]),
        frame=np.array([r[1] for r in rows]),
        label=np.array([r[2] for r in rows]),
        score=np.array([r[3] for r in rows]),
        boxes=np.stack([r[4] for r in rows]),
    )
    (tube,) = link_video_online(det, num_classes=2, video="b", min_length=1, nframes=12)
    assert tube.label == 0
    np.testing.assert_array_equal(np.flatnonzero(tube.extrapolated) + 1, [5, 6])
    every = link_videos_online(det, num_classes=2, min_length=1)
    assert sorted(every) == ["a", "b"] and [t.label for t in every["a"]] == [1]
    with pytest.raises(StadError, match="name the one"):
        link_video_online(det, num_classes=2)
    with pytest.raises(StadError, match="frame 10 outside 1..8"):
        link_video_online(det, num_classes=2, video="a", nframes=8)
    with pytest.raises(StadError, match="'c'"):
        link_video_online(det, num_classes=2, video="c")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda lk: lk.update(0, EMPTY, np.zeros((0, 2))), "frame must be >= 1"),
        (lambda lk: lk.update(1, np.zeros((2, 3)), np.zeros((2, 2))), r"boxes must have shape \[N, 4\]"),
        (lambda lk: lk.update(1, np.zeros((2, 4)), np.zeros((2, 3))), r"\[N, C\] = \[2, 2\]"),
        (lambda lk: lk.update(1, np.zeros((1, 4)), np.zeros(1)), "labels are required"),
        (lambda lk: lk.update(1, np.zeros((1, 4)), np.zeros(1), np.array([2])), "detection 0: label 2 not in"),
        (lambda lk: lk.update(1, np.zeros((1, 4)), np.zeros((1, 2)), np.array([0])), "labels must be None"),
        (lambda lk: lk.update(1, np.array([[0, 0, 5, 5], [5, 0, 1, 5]]), np.ones((2, 2))), "detection 1: box"),
        (lambda lk: lk.update(1, np.array([[0, 0, np.nan, 5]]), np.ones((1, 2))), "non-finite box"),
        (lambda lk: lk.update(1, np.zeros((1, 4)), np.array([[0.5, np.nan]])), "non-finite score"),
    ],
)
def test_bad_input_is_reported(call, match):
    with pytest.raises(StadError, match=match):
        call(OnlineLinker(2))


def test_frames_must_increase_and_parameters_are_checked():
    linker = OnlineLinker(1)
    linker.update(3, EMPTY, np.zeros((0, 1)))
    with pytest.raises(StadError, match="got frame 3 after frame 3"):
        linker.update(3, EMPTY, np.zeros((0, 1)))
    with pytest.raises(StadError, match="motion_window must be >= 2"):
        OnlineLinker(1, motion_window=1)
    with pytest.raises(StadError, match="max_gap must be >= 0"):
        OnlineLinker(1, max_gap=-1)
    with pytest.raises(StadError, match="cost must be"):
        OnlineLinker(1, cost="iou")  # type: ignore[arg-type]


def reference_link(stream, *, C, iou_th, max_gap, S, W, min_score, start_score, nms, top_k, size, cost):
    """The rules of the module docstring, written as plain sequential loops (no vectorization)."""
    from stad.boxes import box_iou_paired

    def iou(a, b):
        return float(box_iou_paired(np.asarray(a), np.asarray(b), plus_one=True))

    tubes, live, next_id = {}, [], 0
    for t, (boxes, scores) in enumerate(stream, start=1):
        cands = []  # (label, score, box) by class, then rank
        for c in range(C):
            above = [i for i in range(len(boxes)) if scores[i, c] >= min_score]
            order = sorted(above, key=lambda i: (-scores[i, c], i))
            kept = []
            for i in order:
                if len(kept) < top_k and all(iou(boxes[i], boxes[k]) <= nms for k in kept):
                    kept.append(i)
            cands += [(c, scores[i, c], boxes[i]) for i in kept]
        preds = {}
        for tid in live:
            real = [r for r in tubes[tid]["rows"] if r[2]][-W:]
            (f0, b0), (f1, b1) = (real[0][0], real[0][1]), (real[-1][0], real[-1][1])
            c0, c1 = (b0[:2] + b0[2:]) / 2, (b1[:2] + b1[2:]) / 2
            v = (c1 - c0) / (f1 - f0) if f1 > f0 else np.zeros(2)
            centre, half = c1 + v * (t - f1), (b1[2:] - b1[:2]) / 2
            p = np.r_[centre - half, centre + half]
            p[0::2], p[1::2] = np.clip(p[0::2], 0, size[1] - 1), np.clip(p[1::2], 0, size[0] - 1)
            preds[tid] = p

        def live_score(tid):
            s = [r[3] for r in tubes[tid]["rows"] if r[2]][-S:]
            return sum(s) / len(s)

        taken = set()
        for tid in sorted(live, key=lambda k: (tubes[k]["label"], -live_score(k), k)):
            best, best_edge = None, -np.inf
            for q, (c, s, b) in enumerate(cands):
                if q in taken or c != tubes[tid]["label"]:
                    continue
                o = iou(preds[tid], b)
                edge = s + o if cost == "score_iou" else s
                if o >= iou_th and edge > best_edge:
                    best, best_edge = q, edge
            tube = tubes[tid]
            if best is not None:
                taken.add(best)
                tube["rows"].append((t, cands[best][2], True, cands[best][1]))
                tube["misses"] = 0
            else:
                tube["misses"] += 1
                if tube["misses"] > max_gap:
                    live.remove(tid)
                else:
                    tube["rows"].append((t, preds[tid], False, 0.0))
        for q, (c, s, b) in enumerate(cands):
            if q not in taken and s >= start_score:
                tubes[next_id] = {"label": c, "rows": [(t, b, True, s)], "misses": 0}
                live.append(next_id)
                next_id += 1
    out = {}
    for tid, tube in tubes.items():
        rows = tube["rows"]
        while not rows[-1][2]:
            rows = rows[:-1]
        real_scores = [r[3] for r in rows if r[2]]
        out[tid] = (tube["label"], sum(real_scores) / len(real_scores), np.array([[r[0], *r[1], r[3]] for r in rows]))
    return out


@pytest.mark.parametrize(("seed", "cost"), [(0, "score_iou"), (1, "score_iou"), (2, "score_iou"), (3, "score")])
def test_vectorized_linker_matches_a_sequential_reference(seed, cost):
    rng = np.random.default_rng(seed)
    stream = []
    centres = rng.uniform(40, 200, (4, 2))
    for t in range(30):  # 4 drifting actors with jittered duplicates + clutter, 3 classes
        boxes, scores = [], []
        for a in range(4):
            if rng.random() < 0.8:
                k = int(rng.integers(1, 4))
                c = centres[a] + 3 * t * np.array([(-1) ** a, 0.5]) + rng.normal(0, 4, (k, 2))
                boxes.append(np.c_[c - 20, c + 20])
                scores.append(rng.uniform(0, 1, (k, 3)))
        n = int(rng.integers(0, 4))
        xy = rng.uniform(0, 250, (n, 2))
        boxes.append(np.c_[xy, xy + 30])
        scores.append(rng.uniform(0, 0.3, (n, 3)))
        stream.append((np.concatenate(boxes), np.concatenate(scores)))
    params = dict(iou_threshold=0.1, max_gap=2, score_window=3, motion_window=3, min_score=0.05,
                  start_score=0.3, nms_threshold=0.45, top_k=3, image_size=(240, 320))  # fmt: skip
    linker = OnlineLinker(3, min_length=1, cost=cost, **params)
    for t, (boxes, scores) in enumerate(stream, start=1):
        linker.update(t, boxes, scores)
    got = linker.finish()
    ref = reference_link(stream, C=3, iou_th=0.1, max_gap=2, S=3, W=3, min_score=0.05, start_score=0.3,
                         nms=0.45, top_k=3, size=(240, 320), cost=cost)  # fmt: skip
    assert sorted(t.track_id for t in got) == sorted(ref)
    assert sum(len(t.boxes) for t in got) > 3 * len(got)  # the scene does link
    for tube in got:
        label, score, boxes = ref[tube.track_id]
        assert tube.label == label and tube.score == pytest.approx(score)
        np.testing.assert_allclose(tube.boxes, boxes, atol=1e-9)


def test_labelled_detections_equal_one_hot_dense_scores():
    rng = np.random.default_rng(5)
    stream = []
    for t in range(25):
        n = int(rng.integers(0, 8))
        xy = rng.uniform(0, 150, (n, 2)) + 2 * t
        stream.append((np.c_[xy, xy + 40], rng.uniform(0.01, 1, n), rng.integers(0, 3, n)))
    dense_linker, label_linker = OnlineLinker(3, min_length=2), OnlineLinker(3, min_length=2)
    for t, (boxes, score, label) in enumerate(stream, start=1):
        dense = np.zeros((len(score), 3))
        dense[np.arange(len(score)), label] = score
        dense_linker.update(t, boxes, dense)
        label_linker.update(t, boxes, score, label)
    a, b = dense_linker.finish(), label_linker.finish()
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert (x.track_id, x.label, x.score) == (y.track_id, y.label, y.score)
        np.testing.assert_array_equal(x.boxes, y.boxes)
