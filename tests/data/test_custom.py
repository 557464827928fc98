"""Custom JSON format: round trips with ACT annotations and per-field errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stad.data.act import check_act
from stad.data.custom import custom_from_json, from_tube_annotations, load_custom, save_custom
from stad.errors import StadError
from stad.structures import TubeAnnotations


def tiny_annotations(*, visibility: bool = False) -> TubeAnnotations:
    tube = np.array([[2, 10, 20, 50, 60], [3, 11.25, 21, 51, 61]])
    ann = TubeAnnotations(
        labels=["walk", "run"],
        gttubes={"c/v1": {0: [tube]}, "c/v2": {1: [tube[:1], tube[1:]]}},
        nframes={"c/v1": 5, "c/v2": 3},
        resolution={"c/v1": (240, 320), "c/v2": (240, 320)},
        train_videos=[["c/v1"]],
        test_videos=[["c/v2"]],
    )
    if visibility:
        ann.visibility = {"c/v1": {0: [np.array([1.0, 0.5])]}, "c/v2": {1: [np.array([0.0]), np.array([0.25])]}}
    return ann


def assert_same(a: TubeAnnotations, b: TubeAnnotations) -> None:
    assert (a.labels, a.nframes, a.train_videos, a.test_videos) == (b.labels, b.nframes, b.train_videos, b.test_videos)
    assert {v: tuple(hw) for v, hw in a.resolution.items()} == {v: tuple(hw) for v, hw in b.resolution.items()}
    assert {v: sorted(pv) for v, pv in a.gttubes.items()} == {v: sorted(pv) for v, pv in b.gttubes.items()}
    for video, per_video in a.gttubes.items():
        for label, tubes in per_video.items():
            assert len(tubes) == len(b.gttubes[video][label])
            for ta, tb in zip(tubes, b.gttubes[video][label]):
                np.testing.assert_array_equal(ta, tb)
    assert (a.visibility is None) == (b.visibility is None)


def example() -> dict:
    return {
        "name": "mine",
        "labels": ["wave", "jump"],
        "frames": "frames/{video}/{frame:05d}.jpg",
        "videos": {
            "v1": {
                "nframes": 4,
                "height": 240,
                "width": 320,
                "tubes": [
                    {"label": "jump", "boxes": [[1, 10, 20, 50, 90], [2, 11.5, 20, 50, 90]], "visibility": [1.0, 0.5]},
                    {"label": 0, "boxes": [[3, 0, 0, 10, 10]]},
                ],
            },
            "v2": {"nframes": 2, "height": 100, "width": 200, "frames": "other/{frame}.png"},
        },
        "splits": [{"train": ["v1"], "test": ["v2"]}],
    }


def test_parse_example():
    ds = custom_from_json(example())
    ann = ds.annotations
    assert ann.name == "mine" and ann.labels == ["wave", "jump"]
    assert ann.nframes == {"v1": 4, "v2": 2} and ann.resolution == {"v1": (240, 320), "v2": (100, 200)}
    np.testing.assert_array_equal(ann.gttubes["v1"][1][0], [[1, 10, 20, 50, 90], [2, 11.5, 20, 50, 90]])
    np.testing.assert_array_equal(ann.gttubes["v1"][0][0], [[3, 0, 0, 10, 10]])
    np.testing.assert_array_equal(ann.visibility["v1"][1][0], [1.0, 0.5])
    np.testing.assert_array_equal(ann.visibility["v1"][0][0], [1.0])  # tubes without visibility: fully visible
    assert ann.gttubes["v2"] == {}
    assert ann.train_videos == [["v1"]] and ann.test_videos == [["v2"]]
    assert ds.frames == {"v1": "frames/{video}/{frame:05d}.jpg", "v2": "other/{frame}.png"}
    assert ds.frame_path("v1", 3).as_posix() == "frames/v1/00003.jpg"
    assert check_act(ann) == []


def test_file_round_trip(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(example()))
    ds = load_custom(tmp_path / "a.json")
    assert ds.root == tmp_path
    save_custom(ds, tmp_path / "b.json")
    back = load_custom(tmp_path / "b.json")
    assert_same(ds.annotations, back.annotations)
    assert back.frames == ds.frames
    np.testing.assert_array_equal(back.annotations.visibility["v1"][1][0], [1.0, 0.5])


@pytest.mark.parametrize("visibility", [False, True])
def test_act_round_trip(tmp_path, visibility):
    ann = tiny_annotations(visibility=visibility)
    save_custom(from_tube_annotations(ann, frames="rgb-images/{video}/{frame:05d}.jpg"), tmp_path / "c.json")
    back = load_custom(tmp_path / "c.json")
    assert_same(ann, back.annotations)
    assert back.frame_path("c/v1", 2) == tmp_path / "rgb-images/c/v1/00002.jpg"
    if visibility:
        for video, per_video in ann.visibility.items():
            for label, vis in per_video.items():
                for a, b in zip(vis, back.annotations.visibility[video][label]):
                    np.testing.assert_array_equal(a, b)


def test_real_multisports_round_trip(realdata, tmp_path):
    from stad.data.act import load_act

    ann = load_act(realdata / "multisports/mmaction2_tests_eval_multisports/gt.pkl")
    save_custom(from_tube_annotations(ann), tmp_path / "ms.json")
    back = load_custom(tmp_path / "ms.json").annotations
    for video, per_video in ann.gttubes.items():
        for label, tubes in per_video.items():
            for a, b in zip(tubes, back.gttubes[video][label]):
                np.testing.assert_array_equal(a, b)  # float32 values survive the JSON text exactly
    assert back.test_videos == ann.test_videos and back.labels == ann.labels


def _set(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["videos", "v1", "tubes", 0, "boxes", 1, 2], "x", r'\$\.videos\["v1"\]\.tubes\[0\]\.boxes\[1\]\[2\]: expected a finite number'),
        (["videos", "v1", "tubes", 0, "boxes", 1], [2, 1, 2], r'\$\.videos\["v1"\]\.tubes\[0\]\.boxes\[1\]: expected 5 numbers'),
        (["videos", "v1", "tubes", 0, "label"], "swim", r'\$\.videos\["v1"\]\.tubes\[0\]\.label: unknown label \'swim\''),
        (["videos", "v1", "tubes", 1, "label"], 2, r".*label index 2 is not in 0\.\.1"),
        (["videos", "v1", "nframes"], 0, r'\$\.videos\["v1"\]\.nframes: must be >= 1'),
        (["videos", "v1", "height"], 2.5, r'\$\.videos\["v1"\]\.height: expected an integer'),
        (["videos", "v1", "tubes", 0, "visibility"], [1.0], r".*visibility: 1 values for 2 boxes"),
        (["videos", "v1", "colour"], "red", r'\$\.videos\["v1"\]: unknown field\(s\) \[\'colour\'\]'),
        (["splits", 0, "test"], ["v3"], r"\$\.splits\[0\]\.test: unknown video 'v3'"),
        (["labels"], ["a", "a"], r"\$\.labels: label 'a' is listed twice"),
        (["frames"], "frames/{video}.jpg", r"\$\.frames: frame pattern .* has no \{frame\} field"),
        (["frames"], "frames/{clip}/{frame}.jpg", r"\$\.frames: bad frame pattern"),
    ],
)
def test_field_errors(tmp_path, path, value, message):
    obj = example()
    _set(obj, path, value)
    (tmp_path / "bad.json").write_text(json.dumps(obj))
    with pytest.raises(StadError, match="bad.json: " + message):
        load_custom(tmp_path / "bad.json")


def test_missing_fields_and_bad_json(tmp_path):
    obj = example()
    del obj["videos"]["v2"]["width"]
    with pytest.raises(StadError, match=r"\$\.videos\[\"v2\"\]: missing field\(s\) \['width'\]"):
        custom_from_json(obj)
    (tmp_path / "broken.json").write_text('{"labels": [}')
    with pytest.raises(StadError, match="broken.json: not valid JSON"):
        load_custom(tmp_path / "broken.json")
    with pytest.raises(StadError, match=r"\$: expected an object, got a list"):
        custom_from_json([1])


def test_save_with_incomplete_visibility_is_an_error(tmp_path):
    ann = tiny_annotations(visibility=True)
    del ann.visibility["c/v2"]
    with pytest.raises(StadError, match="visibility is set but missing for c/v2 label 1 tube 0"):
        save_custom(from_tube_annotations(ann), tmp_path / "x.json")
