"""Offline tube building (ACT/MOC linking): a loop reference written from the rules, hand-made cases, real GT."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from stad.boxes import xywh_to_xyxy
from stad.errors import StadError
from stad.structures import Tube, Tubelets
from stad.tubes import build_tubes, build_tubes_for_videos, spatiotemporal_iou_matrix
from tests.tubes.reference import iou_plus_one

# ---------------------------------------------------------------------------------------------
# Reference: a straightforward loop version of PROTOCOLS.md §A / MOC-Detector's BuildTubes rules
# ---------------------------------------------------------------------------------------------


_iou = iou_plus_one


def _ref_tubelet_nms(boxes, scores, thr, top_k):
    """Queue-based soft NMS with summed per-frame IoU against thr*K, then top_k by new score."""
    n, K = len(scores), boxes.shape[1]
    queue = sorted(range(n), key=lambda i: (-scores[i], i))
    priority = {i: r for r, i in enumerate(queue)}
    weight = [1.0] * n
    while queue:
        p, rest, queue = queue[0], queue[1:], []
        for j in rest:
            s = 0.0
            for k in range(K):
                s += _iou(boxes[p][k], boxes[j][k])
            if s > thr * K:
                weight[j] = 1.0 - s
            else:
                queue.append(j)
    new = [scores[i] * weight[i] for i in range(n)]
    order = sorted(range(n), key=lambda i: (-new[i], priority[i]))[:top_k]
    return [(boxes[i], new[i]) for i in order]


def _ref_build_tubes(tub: Tubelets, *, num_classes, nframes, nms_threshold=0.6, top_k=10, link_iou=0.5,
                     max_miss=None, min_length=15, min_score=0.005, pick="score"):  # fmt: skip
    K = tub.boxes.shape[1]
    max_miss = max_miss or K
    out = []
    for c in range(num_classes):
        current, finished = [], []  # a tube: {"members": [(start, boxes, score)], "sum", "count"}
        for t in range(1, nframes - K + 2):
            idx = [i for i in range(len(tub.score)) if tub.start[i] == t and tub.label[i] == c]
            cands = _ref_tubelet_nms(tub.boxes[idx], tub.score[idx], nms_threshold, top_k) if idx else []
            current.sort(key=lambda tb: -(tb["sum"] / tb["count"]))  # stable
            available = list(range(len(cands)))
            closed = []
            for it, tb in enumerate(current):
                last_start, last_boxes, _ = tb["members"][-1]
                offset = t - last_start
                valid = []
                for ci in available:
                    cb = cands[ci][0]
                    if offset < K:
                        s = 0.0
                        for k in range(K - offset):
                            s += _iou(cb[k], last_boxes[k + offset])
                        m = s / (K - offset)
                    else:
                        m = _iou(cb[0], last_boxes[K - 1])
                    if m >= link_iou:
                        valid.append((ci, m))
                if valid:
                    if pick == "score":  # published code: valid[np.argmax(scores[valid])]
                        ci = max(valid, key=lambda v: cands[v[0]][1])[0]
                    else:
                        ci = max(valid, key=lambda v: v[1])[0]
                    tb["members"].append((t, cands[ci][0], cands[ci][1]))
                    tb["sum"] += cands[ci][1]
                    tb["count"] += 1
                    available.remove(ci)
                elif offset >= max_miss:
                    closed.append(it)
            finished += [current[it] for it in reversed(closed)]
            current = [tb for it, tb in enumerate(current) if it not in closed]
            for ci in available:
                current.append({"members": [(t, cands[ci][0], cands[ci][1])], "sum": cands[ci][1], "count": 1})
        for tb in finished + current:
            score = tb["sum"] / tb["count"]
            first, last = tb["members"][0][0], tb["members"][-1][0] + K - 1
            if score < min_score or last - first + 1 < min_length:
                continue
            sums = np.zeros((last - first + 1, 5))
            count = np.zeros(last - first + 1)
            for s, bx, sc in tb["members"]:
                for k in range(K):
                    sums[s - first + k, :4] += bx[k]
                    sums[s - first + k, 4] += sc
                    count[s - first + k] += 1
            boxes = np.c_[np.arange(first, last + 1), sums / count[:, None]]
            out.append(Tube(label=c, score=score, boxes=boxes))
    return out


# ---------------------------------------------------------------------------------------------
# Random videos: moving actors with many jittered overlapping tubelets, clutter, gaps
# ---------------------------------------------------------------------------------------------


def _random_tubelets(rng, *, K, nframes, num_classes, n_actors=3, jitter=4.0, max_per_actor=14, gap=0.2):
    rows = []  # (start, label, score, boxes)
    actors = []
    for _ in range(n_actors):
        a0 = int(rng.integers(1, max(2, nframes // 3)))
        a1 = int(rng.integers(min(a0 + K + 2, nframes), nframes + 1))
        pos = rng.uniform(20, 200, 2)
        vel = rng.normal(0, 2.0, 2)
        size = rng.uniform(30, 80, 2)
        actors.append((a0, a1, int(rng.integers(num_classes)), pos, vel, size))
    for t in range(1, nframes - K + 2):
        frames = np.arange(t, t + K)
        for a0, a1, c, pos, vel, size in actors:
            if t < a0 or t + K - 1 > a1 or rng.random() < gap:
                continue
            centre = pos[None, :] + vel[None, :] * frames[:, None]  # [K, 2]
            for _ in range(int(rng.integers(1, max_per_actor + 1))):
                noise = rng.normal(0, jitter, (K, 4))
                boxes = np.c_[centre - size / 2, centre + size / 2] + noise
                label = c if rng.random() < 0.85 else int(rng.integers(num_classes))
                rows.append((t, label, rng.uniform(0.05, 1.0), boxes))
        for _ in range(int(rng.integers(0, 4))):  # clutter
            xy = rng.uniform(0, 250, 2)
            wh = rng.uniform(10, 60, 2)
            boxes = np.tile(np.r_[xy, xy + wh], (K, 1)) + rng.normal(0, 2, (K, 4))
            rows.append((t, int(rng.integers(num_classes)), rng.uniform(0.0, 0.3), boxes))
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    boxes = np.array([r[3] for r in rows], np.float64).reshape(-1, K, 4)
    xs, ys = np.sort(boxes[..., 0::2], axis=-1), np.sort(boxes[..., 1::2], axis=-1)  # noise may flip a box
    return Tubelets(
        start=np.array([r[0] for r in rows], np.int64),
        label=np.array([r[1] for r in rows], np.int64),
        score=np.array([r[2] for r in rows], np.float64),
        boxes=np.stack([xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1]], axis=-1),
    )


def _assert_same_tubes(got: list[Tube], want: list[Tube]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.label == w.label
        assert g.score == w.score
        assert g.boxes.shape == w.boxes.shape
        assert np.array_equal(g.boxes, w.boxes)


@pytest.mark.parametrize("K", [1, 2, 3, 7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_build_tubes_equals_loop_reference(K, seed):
    rng = np.random.default_rng(100 * K + seed)
    nframes, C = int(rng.integers(25, 45)), 3
    tub = _random_tubelets(rng, K=K, nframes=nframes, num_classes=C)
    assert len(tub) > 50
    lengths = []
    for kwargs in (dict(), dict(min_length=1, min_score=-np.inf), dict(min_length=1, min_score=-np.inf, top_k=3)):
        want = _ref_build_tubes(tub, num_classes=C, nframes=nframes, **kwargs)
        got = build_tubes(tub, num_classes=C, nframes=nframes, **kwargs)
        _assert_same_tubes(got, want)
        lengths += [len(t.boxes) for t in got]
    assert max(lengths) >= K + 4  # tubelets were linked, not only started


@pytest.mark.parametrize("kwargs", [dict(pick="iou"), dict(max_miss=1), dict(link_iou=0.3, nms_threshold=0.3)])
def test_build_tubes_options_equal_loop_reference(kwargs):
    rng = np.random.default_rng(7)
    K, nframes, C = 3, 40, 2
    tub = _random_tubelets(rng, K=K, nframes=nframes, num_classes=C, jitter=8.0)
    want = _ref_build_tubes(tub, num_classes=C, nframes=nframes, min_length=1, min_score=-np.inf, **kwargs)
    got = build_tubes(tub, num_classes=C, nframes=nframes, min_length=1, min_score=-np.inf, **kwargs)
    _assert_same_tubes(got, want)


def test_build_tubes_for_videos_equals_per_video():
    rng = np.random.default_rng(3)
    K, C = 3, 4
    per_video, nframes = {}, {}
    for i in range(5):
        nframes[f"v{i}"] = int(rng.integers(20, 50))
        per_video[f"v{i}"] = _random_tubelets(rng, K=K, nframes=nframes[f"v{i}"], num_classes=C)
    per_video["empty"] = Tubelets(np.zeros(0, int), np.zeros(0, int), np.zeros(0), np.zeros((0, K, 4)))
    nframes["empty"] = 30
    want = {v: build_tubes(t, num_classes=C, nframes=nframes[v], min_length=5) for v, t in per_video.items()}
    for workers in (0, 2):
        got = build_tubes_for_videos(per_video, num_classes=C, nframes=nframes, min_length=5, workers=workers)
        assert list(got) == list(per_video)
        for v in per_video:
            _assert_same_tubes(got[v], want[v])
    assert want["empty"] == []
    assert sum(len(t) for t in want.values()) > 5


# ---------------------------------------------------------------------------------------------
# Hand-made cases
# ---------------------------------------------------------------------------------------------


def _actor_tubelets(starts, K, *, label=0, score=0.9, x0=10.0, speed=1.0, window_shift=0.0):
    """One actor moving right by `speed` px/frame; the tubelet starting at s is shifted by s*window_shift."""
    starts = np.asarray(starts, np.int64)
    frames = starts[:, None] + np.arange(K)[None, :]  # [N, K]
    x = x0 + speed * frames + window_shift * starts[:, None]
    boxes = np.stack([x, np.full_like(x, 20.0), x + 40.0, np.full_like(x, 80.0)], axis=-1)  # [N, K, 4]
    n = len(starts)
    return Tubelets(start=starts, label=np.full(n, label), score=np.full(n, float(score)), boxes=boxes)


def _concat(*parts: Tubelets) -> Tubelets:
    return Tubelets(
        start=np.concatenate([p.start for p in parts]),
        label=np.concatenate([p.label for p in parts]),
        score=np.concatenate([p.score for p in parts]),
        boxes=np.concatenate([p.boxes for p in parts]),
    )


def test_one_actor_gives_one_tube_with_averaged_boxes():
    K, T = 5, 30
    starts = np.arange(1, T - K + 2)
    tub = _actor_tubelets(starts, K, window_shift=0.5)  # windows disagree: the tube averages them
    tubes = build_tubes(tub, num_classes=2, nframes=T)
    assert len(tubes) == 1
    tube = tubes[0]
    assert tube.label == 0 and tube.score == pytest.approx(0.9)
    assert tube.boxes[:, 0].tolist() == list(range(1, T + 1))
    for f in (1, 3, 10, T):  # frame f is covered by the windows max(1, f-K+1) .. min(f, T-K+1)
        windows = np.arange(max(1, f - K + 1), min(f, T - K + 1) + 1)
        x1 = np.mean(10.0 + f + 0.5 * windows)
        assert tube.boxes[f - 1, 1:] == pytest.approx([x1, 20.0, x1 + 40.0, 80.0, 0.9])


def test_gap_longer_than_K_closes_the_tube():
    K, T = 4, 60
    # Starts 1..20 then 24 = 20 + K: offset K, the first box touches the last one -> still one tube.
    touching = _concat(_actor_tubelets(np.arange(1, 21), K), _actor_tubelets(np.arange(24, 50), K))
    assert len(build_tubes(touching, num_classes=1, nframes=T)) == 1
    # Starts 1..20 then 25: no tubelet for K start frames -> the first tube is closed, a second starts.
    gap = _concat(_actor_tubelets(np.arange(1, 21), K), _actor_tubelets(np.arange(25, 50), K))
    tubes = build_tubes(gap, num_classes=1, nframes=T)
    assert [(t.boxes[0, 0], t.boxes[-1, 0]) for t in tubes] == [(1, 20 + K - 1), (25, 49 + K - 1)]
    # max_miss=2 closes after 2 missed start frames: a gap of 2 (start 23 after 20) splits too.
    short_gap = _concat(_actor_tubelets(np.arange(1, 21), K), _actor_tubelets(np.arange(23, 50), K))
    assert len(build_tubes(short_gap, num_classes=1, nframes=T)) == 1
    assert len(build_tubes(short_gap, num_classes=1, nframes=T, max_miss=2)) == 2


def test_short_and_low_score_tubes_are_dropped():
    K, T = 3, 40
    short = _actor_tubelets(np.arange(1, 12), K)  # frames 1..13: 13 < 15
    assert build_tubes(short, num_classes=1, nframes=T) == []
    assert len(build_tubes(short, num_classes=1, nframes=T, min_length=13)) == 1
    weak = _actor_tubelets(np.arange(1, 30), K, score=0.004)
    assert build_tubes(weak, num_classes=1, nframes=T) == []
    assert len(build_tubes(weak, num_classes=1, nframes=T, min_score=0.004)) == 1


def test_two_classes_are_linked_independently():
    K, T = 3, 30
    a = _actor_tubelets(np.arange(1, 29), K, label=0, score=0.8)
    b = _actor_tubelets(np.arange(1, 29), K, label=1, score=0.6)
    both = build_tubes(_concat(a, b), num_classes=2, nframes=T)
    only_a = build_tubes(a, num_classes=2, nframes=T)
    assert [t.label for t in both] == [0, 1]
    _assert_same_tubes(both[:1], only_a)
    assert np.array_equal(both[0].boxes[:, :5], both[1].boxes[:, :5])
    assert both[1].score == pytest.approx(0.6)


def test_extension_picks_highest_score_not_highest_iou():
    K, T = 2, 20
    base = _actor_tubelets(np.arange(1, 10), K)
    # At start 10 two candidates: exact continuation (score 0.5) and a shifted one (IoU ~0.7, score 0.95).
    exact = _actor_tubelets([10], K, score=0.5)
    shifted = _actor_tubelets([10], K, score=0.95, x0=18.0)
    tub = _concat(base, exact, shifted)
    by_score = build_tubes(tub, num_classes=1, nframes=T, min_length=1)
    by_iou = build_tubes(tub, num_classes=1, nframes=T, min_length=1, pick="iou")
    long_score = max(by_score, key=lambda t: len(t.boxes))
    long_iou = max(by_iou, key=lambda t: len(t.boxes))
    assert long_score.boxes[-1, 1] == pytest.approx(18.0 + 11)  # the shifted, higher-scored tubelet
    assert long_iou.boxes[-1, 1] == pytest.approx(10.0 + 11)  # the exact continuation


def test_link_threshold_is_inclusive():
    # K = 1: [0, 0, 9, 9] (area 100) then [0, 0, 19, 9] (area 200): +1 IoU exactly 100 / 200 = 0.5.
    boxes = np.array([[[0, 0, 9, 9]], [[0, 0, 19, 9]]], np.float64)
    tub = Tubelets(start=np.array([1, 2]), label=np.array([0, 0]), score=np.array([0.9, 0.8]), boxes=boxes)
    tubes = build_tubes(tub, num_classes=1, nframes=2, min_length=1)
    assert len(tubes) == 1 and tubes[0].boxes[:, 0].tolist() == [1, 2]
    assert tubes[0].score == pytest.approx(0.85)
    assert len(build_tubes(tub, num_classes=1, nframes=2, min_length=1, link_iou=0.5 + 1e-9)) == 2


def test_empty_and_bad_input():
    K = 3
    empty = Tubelets(np.zeros(0, int), np.zeros(0, int), np.zeros(0), np.zeros((0, K, 4)))
    assert build_tubes(empty, num_classes=2, nframes=10) == []
    tub = _actor_tubelets(np.arange(1, 10), K)
    with pytest.raises(StadError, match="label"):
        build_tubes(Tubelets(tub.start, tub.label + 2, tub.score, tub.boxes), num_classes=2, nframes=20)
    with pytest.raises(StadError, match="beyond nframes=8"):
        build_tubes(tub, num_classes=1, nframes=8)
    with pytest.raises(StadError, match="K=4"):
        build_tubes(tub, num_classes=1, nframes=20, K=4)
    with pytest.raises(StadError, match="max_miss"):
        build_tubes(tub, num_classes=1, nframes=20, max_miss=K + 1)
    with pytest.raises(StadError, match="nframes: no frame count for video 'b'"):
        build_tubes_for_videos({"b": tub}, num_classes=1, nframes={"a": 20})
    with pytest.raises(StadError, match="share the tubelet length"):
        other = Tubelets(tub.start, tub.label, tub.score, tub.boxes[:, :2])
        build_tubes_for_videos({"a": tub, "b": other}, num_classes=1, nframes={"a": 20, "b": 20})


# ---------------------------------------------------------------------------------------------
# Real ground truth (UCF101-24): tubelets cut from GT tubes link back into exactly those tubes
# ---------------------------------------------------------------------------------------------


def test_real_ucf_gt_tubes_are_rebuilt_from_their_tubelets(realdata):
    with open(realdata / "ucf101_24" / "pyannot.pkl", "rb") as f:
        db = pickle.load(f, encoding="latin1")
    K = 7
    videos = ["Basketball/v_Basketball_g01_c01", "Basketball/v_Basketball_g12_c01", "Basketball/v_Basketball_g12_c03"]
    for v in videos:
        nframes = int(db[v]["numf"])
        gt = []
        rows = []
        for ann in db[v]["annotations"]:
            boxes = xywh_to_xyxy(ann["boxes"])  # [L, 4], cast before adding (uint8 in the file)
            frames = np.arange(ann["sf"] + 1, ann["ef"] + 1)  # sf 0-based, ef exclusive -> 1-based inclusive
            gt.append(np.c_[frames, boxes])
            for s in range(len(frames) - K + 1):
                rows.append((frames[s], int(ann["label"]), boxes[s : s + K]))
        tub = Tubelets(
            start=np.array([r[0] for r in rows]),
            label=np.array([r[1] for r in rows]),
            score=np.full(len(rows), 0.9),
            boxes=np.array([r[2] for r in rows], np.float64),
        )
        tubes = build_tubes(tub, num_classes=24, nframes=nframes)
        tubes.sort(key=lambda t: t.boxes[0, 0])
        assert len(tubes) == len(gt), v
        for tube, g in zip(tubes, gt):
            assert tube.label == int(db[v]["label"])
            assert np.array_equal(tube.boxes[:, :5], g)
        iou = spatiotemporal_iou_matrix([t.boxes for t in tubes], gt)
        assert np.allclose(iou, np.eye(len(gt)))
