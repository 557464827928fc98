"""Prediction files: frame detections CSV and tubes JSON, round trips and validation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from stad.errors import StadError
from stad.eval.predictions import read_frame_detections, read_tubes, write_frame_detections, write_tubes
from stad.structures import Tube

sys.path.insert(0, str(Path(__file__).parent))
from test_frame_map import make_dets, make_gt, tube  # noqa: E402

HEADER = "video,frame,label,score,x1,y1,x2,y2\n"


@pytest.fixture()
def gt():
    return make_gt({"a/v1": {0: [tube([1, 2], (0, 0, 9, 9))]}, "b/v2": {1: [tube([3], (0, 0, 9, 9))]}}, labels=("x", "y"))


def test_csv_round_trip_is_exact(tmp_path, gt):
    rng = np.random.default_rng(0)
    rows = [("b/v2", 3, 1, float(rng.random()), *(rng.random(2) * 10), *(10 + rng.random(2) * 10)) for _ in range(5)]
    rows.append(("a/v1", 10, 0, 0.1, 0.5, 0.25, 1e-3 + 0.5, 7.0))
    dets = make_dets(rows, ["b/v2", "a/v1"])
    path = tmp_path / "d.csv"
    write_frame_detections(dets, path)
    back = read_frame_detections(path, gt)
    assert back.videos == ["b/v2", "a/v1"]
    for name in ("video", "frame", "label", "score", "boxes"):
        np.testing.assert_array_equal(getattr(back, name), getattr(dets, name))
    assert path.read_text().startswith(HEADER)


def test_csv_empty_file_with_header(tmp_path):
    (tmp_path / "d.csv").write_text(HEADER)
    assert len(read_frame_detections(tmp_path / "d.csv")) == 0


@pytest.mark.parametrize(
    "body, match",
    [
        ("a/v1,1,0,0.5,0,0,9\n", r"d.csv:2: expected 8 comma-separated fields, got 7"),
        ("a/v1,1,0,0.5,0,0,9,9\na/v1,1,0,abc,0,0,9,9\n", r"d.csv:3: field 'score' is not a number: 'abc'"),
        ("a/v1,1,0,nan,0,0,9,9\n", r"d.csv:2: field 'score' is not finite"),
        ("a/v1,1.5,0,0.5,0,0,9,9\n", r"d.csv:2: field 'frame' must be an integer"),
        ("a/v1,1,0,0.5,5,0,4,9\n", r"d.csv:2: x2 < x1"),
        ("a/v1,1,0,0.5,0,0,9,9\nzz,1,0,0.5,0,0,9,9\n", r"d.csv:3: unknown video 'zz'"),
        ("a/v1,11,0,0.5,0,0,9,9\n", r"d.csv:2: frame 11 outside 1..10"),
        ("a/v1,0,0,0.5,0,0,9,9\n", r"d.csv:2: frame 0 outside"),
        ("a/v1,1,2,0.5,0,0,9,9\n", r"d.csv:2: label 2 outside 0..1"),
    ],
)
def test_csv_errors_name_the_line(tmp_path, gt, body, match):
    (tmp_path / "d.csv").write_text(HEADER + body)
    with pytest.raises(StadError, match=match):
        read_frame_detections(tmp_path / "d.csv", gt)


def test_csv_bad_header_and_missing_file(tmp_path):
    (tmp_path / "d.csv").write_text("video,frame,score\n")
    with pytest.raises(StadError, match=r"d.csv:1: expected the header"):
        read_frame_detections(tmp_path / "d.csv")
    with pytest.raises(FileNotFoundError):
        read_frame_detections(tmp_path / "none.csv")


def test_tubes_round_trip(tmp_path, gt):
    boxes = np.array([[1, 0.5, 1.0, 9.25, 9.0, 0.7], [2, 0.5, 1.0, 9.25, 9.0, 0.6]])
    tubes = {"a/v1": [Tube(0, 0.65, boxes)], "b/v2": []}
    write_tubes(tubes, tmp_path / "t.json")
    back = read_tubes(tmp_path / "t.json", gt)
    assert back["b/v2"] == [] and back["a/v1"][0].label == 0 and back["a/v1"][0].score == 0.65
    np.testing.assert_array_equal(back["a/v1"][0].boxes, boxes)


def test_tubes_five_columns_get_the_tube_score(tmp_path, gt):
    (tmp_path / "t.json").write_text(json.dumps({"a/v1": [{"label": 1, "score": 0.5, "boxes": [[4, 0, 0, 9, 9], [5, 0, 0, 9, 9]]}]}))
    t = read_tubes(tmp_path / "t.json", gt)["a/v1"][0]
    assert t.boxes.shape == (2, 6) and (t.boxes[:, 5] == 0.5).all()


@pytest.mark.parametrize(
    "obj, match",
    [
        ({"zz": []}, r'\["zz"\]: unknown video'),
        ({"a/v1": [{"label": 2, "score": 0.5, "boxes": [[1, 0, 0, 9, 9]]}]}, r'\["a/v1"\]\[0\].label: 2 outside 0..1'),
        ({"a/v1": [{"label": 0, "score": None, "boxes": [[1, 0, 0, 9, 9]]}]}, r"\.score: expected a finite number"),
        ({"a/v1": [{"label": 0, "score": 0.5, "boxes": [[1, 0, 0, 9, 9], [3, 0, 0, 9, 9]]}]}, r"\.boxes\[1\]\[0\]: frames must be consecutive"),
        ({"a/v1": [{"label": 0, "score": 0.5, "boxes": [[10, 0, 0, 9, 9], [11, 0, 0, 9, 9]]}]}, r"frames 10..11 outside 1..10"),
        ({"a/v1": [{"label": 0, "score": 0.5, "boxes": [[1, 5, 0, 4, 9]]}]}, r"\.boxes\[0\]: x2 < x1"),
        ({"a/v1": [{"label": 0, "score": 0.5, "boxes": []}]}, r"\.boxes: expected a non-empty list"),
        ({"a/v1": [{"label": 0, "boxes": []}]}, r"expected an object with 'label', 'score', 'boxes'"),
        ([], r"expected an object video -> list of tubes"),
    ],
)
def test_tubes_errors_name_the_json_path(tmp_path, gt, obj, match):
    (tmp_path / "t.json").write_text(json.dumps(obj))
    with pytest.raises(StadError, match=match):
        read_tubes(tmp_path / "t.json", gt)


def test_tubes_not_json(tmp_path):
    (tmp_path / "t.json").write_text("{")
    with pytest.raises(StadError, match="not valid JSON"):
        read_tubes(tmp_path / "t.json")
