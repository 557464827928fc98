"""ACT pickles: round trip, tolerance of the MultiSports layout, and check_act's rules."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from stad.data.act import act_to_dict, check_act, load_act, save_act
from stad.errors import StadError
from stad.structures import TubeAnnotations


def tiny_annotations(*, visibility: bool = False) -> TubeAnnotations:
    tube_a = np.array([[2, 10, 20, 50, 60], [3, 11, 21, 51, 61], [4, 12, 22, 52, 62]], dtype=np.float64)
    tube_b = np.array([[1, 0, 0, 319, 239]], dtype=np.float64)
    ann = TubeAnnotations(
        labels=["walk", "run"],
        gttubes={"c/v1": {0: [tube_a]}, "c/v2": {1: [tube_b, tube_b + [1, 0, 0, 0, 0]]}},
        nframes={"c/v1": 5, "c/v2": 3},
        resolution={"c/v1": (240, 320), "c/v2": (240, 320)},
        train_videos=[["c/v1"]],
        test_videos=[["c/v2"]],
    )
    if visibility:
        ann.visibility = {"c/v1": {0: [np.array([1.0, 0.5, 0.0])]}, "c/v2": {1: [np.array([1.0]), np.array([0.25])]}}
    return ann


def assert_same(a: TubeAnnotations, b: TubeAnnotations) -> None:
    assert a.labels == b.labels
    assert a.nframes == b.nframes
    assert {v: tuple(hw) for v, hw in a.resolution.items()} == {v: tuple(hw) for v, hw in b.resolution.items()}
    assert a.train_videos == b.train_videos and a.test_videos == b.test_videos
    assert a.gttubes.keys() == b.gttubes.keys()
    for video in a.gttubes:
        assert a.gttubes[video].keys() == b.gttubes[video].keys()
        for label in a.gttubes[video]:
            assert len(a.gttubes[video][label]) == len(b.gttubes[video][label])
            for ta, tb in zip(a.gttubes[video][label], b.gttubes[video][label]):
                np.testing.assert_array_equal(ta, tb)
    assert (a.visibility is None) == (b.visibility is None)


@pytest.mark.parametrize("visibility", [False, True])
def test_round_trip(tmp_path, visibility):
    ann = tiny_annotations(visibility=visibility)
    save_act(ann, tmp_path / "X-GT.pkl")
    back = load_act(tmp_path / "X-GT.pkl")
    assert_same(ann, back)
    if visibility:
        np.testing.assert_allclose(back.visibility["c/v2"][1][1], [0.25])
    assert check_act(back) == []


def test_saved_pickle_is_plain(tmp_path):
    """The ACT/MOC code reads the file with plain pickle: only dicts, lists, tuples, str, int and numpy arrays."""
    save_act(tiny_annotations(), tmp_path / "X-GT.pkl")
    with open(tmp_path / "X-GT.pkl", "rb") as f:
        raw = pickle.load(f)
    assert set(raw) == {"labels", "gttubes", "nframes", "train_videos", "test_videos", "resolution"}
    tube = raw["gttubes"]["c/v1"][0][0]
    assert isinstance(tube, np.ndarray) and tube.shape == (3, 5) and tube.dtype == np.float32
    assert raw["resolution"]["c/v1"] == (240, 320) and isinstance(raw["nframes"]["c/v1"], int)
    assert pickle.dumps(raw, protocol=2)[:2] == b"\x80\x02"


def test_missing_train_videos_is_tolerated(tmp_path):
    raw = act_to_dict(tiny_annotations())
    del raw["train_videos"]
    raw["test_videos"] = [["c/v1", "c/v2"]]
    with open(tmp_path / "ms.pkl", "wb") as f:
        pickle.dump(raw, f, protocol=2)
    ann = load_act(tmp_path / "ms.pkl")
    assert ann.train_videos == [[]]
    assert check_act(ann) == []


def test_real_multisports_gt(realdata, tmp_path):
    ann = load_act(realdata / "multisports/mmaction2_tests_eval_multisports/gt.pkl")
    video = "aerobic_gymnastics/v_crsi07chcV8_c004"
    assert len(ann.labels) == 66
    assert ann.nframes == {video: 725} and ann.resolution[video] == (720, 1280)
    assert ann.test_videos == [[video]] and ann.train_videos == [[]]
    assert sorted(ann.gttubes[video]) == [9, 10, 11, 14]
    assert sum(len(t) for t in ann.gttubes[video].values()) == 8
    assert check_act(ann) == []
    save_act(ann, tmp_path / "ms.pkl")
    assert_same(ann, load_act(tmp_path / "ms.pkl"))


@pytest.mark.parametrize(
    ("edit", "field", "text"),
    [
        (lambda a: a.gttubes["c/v1"][0][0].__setitem__((1, 3), 400), "x2", "x2 > width 320"),
        (lambda a: a.gttubes["c/v1"][0][0].__setitem__((0, 3), 5), "x2", "x2 < x1"),
        (lambda a: a.gttubes["c/v1"][0][0].__setitem__((2, 2), -1), "y1", "y1 < 0"),
        (lambda a: a.gttubes["c/v1"][0][0].__setitem__((2, 0), 5), "frame", "not consecutive"),
        (lambda a: a.nframes.__setitem__("c/v1", 3), "frame", "outside 1..3"),
        (lambda a: a.gttubes["c/v1"].__setitem__(7, a.gttubes["c/v1"].pop(0)), "label", "label index 7"),
        (lambda a: a.test_videos[0].append("c/v1"), "test_videos", "in both train and test"),
        (lambda a: a.test_videos[0].append("c/nope"), "test_videos", "unknown video"),
        (lambda a: a.train_videos[0].clear(), "train_videos", "in no split"),
        (lambda a: a.resolution.pop("c/v2"), "resolution", "missing"),
        (lambda a: a.train_videos.append(["c/v1"]), "train_videos", "2 train splits but 1 test"),
    ],
)
def test_check_act_finds(edit, field, text):
    ann = tiny_annotations()
    edit(ann)
    problems = check_act(ann)
    assert any(p.field == field and text in p.message for p in problems), problems


def test_check_act_visibility():
    ann = tiny_annotations(visibility=True)
    ann.visibility["c/v1"][0][0] = np.array([1.0, 2.0, 0.0])
    assert any(p.field == "visibility" and "[0, 1]" in p.message for p in check_act(ann))
    ann.visibility["c/v1"][0][0] = np.array([1.0])
    assert any(p.field == "visibility" and "1 values for 3 boxes" in p.message for p in check_act(ann))


def test_box_outside_names_video_and_frame():
    ann = tiny_annotations()
    ann.gttubes["c/v1"][0][0][1, 4] = 241
    (problem,) = check_act(ann)
    assert problem.location == "c/v1 label 0 tube 0" and problem.frame == 3 and problem.field == "y2"


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        load_act(tmp_path / "nope.pkl")
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(StadError, match="bad.pkl: cannot read as a pickle"):
        load_act(tmp_path / "bad.pkl")
    raw = act_to_dict(tiny_annotations())
    del raw["nframes"]
    (tmp_path / "k.pkl").write_bytes(pickle.dumps(raw))
    with pytest.raises(StadError, match=r"k.pkl: missing key\(s\) \['nframes'\]"):
        load_act(tmp_path / "k.pkl")
    raw = act_to_dict(tiny_annotations())
    raw["gttubes"]["c/v1"][0][0] = np.zeros((3, 4))
    (tmp_path / "s.pkl").write_bytes(pickle.dumps(raw))
    with pytest.raises(StadError, match=r"gttubes\['c/v1'\]\[0\]\[0\]: expected shape \(L, 5\), got \(3, 4\)"):
        load_act(tmp_path / "s.pkl")
