"""Tubelets -> frame detections (ACT rule), the tubelet file format, and `stad tubelets-to-frames`."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from stad.cli import main as stad_main
from stad.errors import StadError
from stad.structures import Tubelets
from stad.tubes import load_tubelets, save_tubelets, tubelets_to_frame_detections, validate_tubelets
from tests.tubes.reference import iou_plus_one


_iou = iou_plus_one


def _ref_frame_detections(per_video: dict[str, Tubelets], videos: list[str], thr=0.6):
    """Loop version: {(video, frame, label): sorted list of (score, x1, y1, x2, y2)}."""
    out = {}
    for v, tub in per_video.items():
        K = tub.boxes.shape[1]
        cells: dict[tuple, list] = {}
        for i in range(len(tub.score)):
            for k in range(K):
                key = (videos.index(v), int(tub.start[i]) + k, int(tub.label[i]))
                cells.setdefault(key, []).append((float(tub.score[i]), tub.boxes[i, k]))
        for key, items in cells.items():
            queue = sorted(range(len(items)), key=lambda j: (-items[j][0], j))
            weight = [1.0] * len(items)
            while queue:
                p, rest, queue = queue[0], queue[1:], []
                for j in rest:
                    o = _iou(items[p][1], items[j][1])
                    if o > thr:
                        weight[j] = 1.0 - o
                    else:
                        queue.append(j)
            out[key] = sorted((s * w, *b) for (s, b), w in zip(items, weight))
    return out


def _random_tubelets(rng, n, K, nframes, num_classes=3):
    start = rng.integers(1, nframes - K + 2, n)
    centre = rng.uniform(40, 60, (n, 2))[:, None, :] + np.cumsum(rng.normal(0, 1.5, (n, K, 2)), axis=1)
    wh = rng.uniform(20, 30, (n, 1, 2))
    return Tubelets(
        start=start,
        label=rng.integers(0, num_classes, n),
        score=rng.uniform(0, 1, n),
        boxes=np.concatenate([centre - wh / 2, centre + wh / 2], axis=-1),
    )


@pytest.mark.parametrize("K", [1, 3, 7])
def test_tubelets_to_frame_detections_equals_loop_reference(K):
    rng = np.random.default_rng(K)
    videos = ["a", "b", "c"]
    per_video = {"b": _random_tubelets(rng, 60, K, 12), "a": _random_tubelets(rng, 40, K, 10)}
    dets = tubelets_to_frame_detections(per_video, videos)
    assert dets.videos == videos
    assert len(dets) == (60 + 40) * K  # nothing is removed, only rescored
    got: dict[tuple, list] = {}
    for v, f, lab, s, b in zip(dets.video, dets.frame, dets.label, dets.score, dets.boxes):
        got.setdefault((int(v), int(f), int(lab)), []).append((float(s), *b.tolist()))
    want = _ref_frame_detections(per_video, videos)
    assert set(got) == set(want)
    for key in want:
        assert sorted(got[key]) == want[key]
    # Rows come by video (in `videos` order), frame, label.
    keys = np.c_[dets.video, dets.frame, dets.label]
    assert (np.diff(keys[:, 0]) >= 0).all() and dets.video[0] == 0
    original = sorted(np.repeat(np.concatenate([per_video[v].score for v in ("b", "a")]), K))
    assert sorted(dets.score) != original and dets.score.sum() < sum(original)  # some boxes were rescored


def test_tubelets_to_frame_detections_hand_case():
    K = 2
    boxes = np.array([[[0, 0, 9, 9], [0, 0, 9, 9]], [[0, 0, 9, 8], [100, 100, 120, 120]]], np.float64)
    tub = Tubelets(start=np.array([1, 2]), label=np.array([0, 0]), score=np.array([0.9, 0.8]), boxes=boxes)
    dets = tubelets_to_frame_detections({"v": tub}, ["v"])
    rows = sorted(zip(dets.frame.tolist(), dets.score.tolist(), dets.boxes[:, 0].tolist()))
    # Frame 2 holds box [0,0,9,9] (0.9) and [0,0,9,8] (0.8, IoU 0.9 -> weight 0.1); frame 3 one box.
    assert rows == [(1, 0.9, 0.0), (2, pytest.approx(0.08), 0.0), (2, 0.9, 0.0), (3, 0.8, 100.0)]
    empty = tubelets_to_frame_detections({}, ["v"])
    assert len(empty) == 0 and empty.videos == ["v"]
    with pytest.raises(StadError, match="'w' has tubelets but is not in the video list"):
        tubelets_to_frame_detections({"w": tub}, ["v"])


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    per_video = {"x/one": _random_tubelets(rng, 5, 3, 20), "x/two": _random_tubelets(rng, 0, 3, 20)}
    path = tmp_path / "tub.npz"
    save_tubelets(path, per_video, videos=["x/one", "x/two", "x/three"], nframes={"x/one": 20, "x/two": 21})
    data = load_tubelets(path)
    assert data.videos == ["x/one", "x/two", "x/three"]
    assert data.nframes == {"x/one": 20, "x/two": 21}
    assert list(data.tubelets) == data.videos
    for v, t in per_video.items():
        got = data.tubelets[v]
        for name in ("start", "label", "score", "boxes"):
            assert np.array_equal(getattr(got, name), getattr(t, name)), name
    assert len(data.tubelets["x/three"]) == 0 and data.tubelets["x/three"].boxes.shape == (0, 3, 4)


def _write_npz(path, **overrides):
    fields = dict(
        format=np.array("stad-tubelets-v1"),
        videos=np.array(["v"]),
        nframes=np.array([10]),
        video=np.array([0, 0]),
        start=np.array([1, 2]),
        label=np.array([0, 1]),
        score=np.array([0.5, 0.6]),
        boxes=np.zeros((2, 3, 4)),
    )
    fields.update(overrides)
    np.savez(path, **{k: v for k, v in fields.items() if v is not None})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(boxes=None), "missing field.*boxes"),
        (dict(format=np.array("other")), "format is 'other'"),
        (dict(video=np.array([0, 1])), "video of tubelet 1 is 1"),
        (dict(start=np.array([1, 0])), "start of tubelet 1 is 0"),
        (dict(start=np.array([1, 9])), r"tubelet 1 covers frames 9..11 beyond nframes=10"),
        (dict(label=np.array([0, -1])), "label of tubelet 1 is -1"),
        (dict(score=np.array([0.5, np.nan])), "score of tubelet 1 is not finite"),
        (dict(boxes=np.zeros((2, 4))), r"boxes must have shape \[N=2, K, 4\]"),
        (dict(start=np.array([1, 2, 3])), r"start must have shape \[2\]"),
        (dict(start=np.array([1.0, 2.0])), "start must be integers"),
        (dict(score=np.array(["a", "b"])), "score must be numbers"),
        (dict(boxes=np.array([[[0, 0, 1, 1]] * 3, [[0, 0, 1, 1], [5, 0, 4, 1], [0, 0, 1, 1]]])),
         r"boxes of tubelet 1, frame 1 need x1 <= x2"),
    ],
)
def test_load_errors_name_the_field(tmp_path, overrides, message):
    path = tmp_path / "bad.npz"
    _write_npz(path, **overrides)
    with pytest.raises(StadError, match=message):
        load_tubelets(path)


def test_load_missing_and_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_tubelets(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(StadError, match="not a readable .npz"):
        load_tubelets(tmp_path / "junk.npz")


def test_validate_tubelets_num_classes():
    tub = Tubelets(start=np.array([1]), label=np.array([3]), score=np.array([0.5]), boxes=np.zeros((1, 2, 4)))
    validate_tubelets(tub, where="v")
    with pytest.raises(StadError, match="v: label of tubelet 0 is 3.*num_classes=3"):
        validate_tubelets(tub, where="v", num_classes=3)


def test_cli_tubelets_to_frames(tmp_path, capsys):
    rng = np.random.default_rng(1)
    per_video = {"vid1": _random_tubelets(rng, 8, 3, 15), "vid2": _random_tubelets(rng, 4, 3, 15)}
    tub_path = tmp_path / "t.npz"
    out = tmp_path / "dets.csv"
    save_tubelets(tub_path, per_video)
    assert stad_main(["tubelets-to-frames", str(tub_path), str(out)]) == 0
    assert "12 tubelets of 2 videos -> 36 frame detections" in capsys.readouterr().out
    with out.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["video", "frame", "label", "score", "x1", "y1", "x2", "y2"]
    assert len(rows) == 1 + 36
    want = tubelets_to_frame_detections(per_video, ["vid1", "vid2"])
    assert rows[1][0] == "vid1" and int(rows[1][1]) == want.frame[0] and float(rows[1][3]) == want.score[0]
    assert np.array_equal(np.array([[float(x) for x in r[4:]] for r in rows[1:]]), want.boxes)
    # Bad input is one line naming the field.
    _write_npz(tmp_path / "bad.npz", label=np.array([0, -2]))
    assert stad_main(["tubelets-to-frames", str(tmp_path / "bad.npz"), str(out)]) == 2
    assert "label of tubelet 1 is -2" in capsys.readouterr().err
