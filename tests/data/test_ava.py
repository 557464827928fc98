"""AVA formats: CSVs, label maps, excluded timestamps, proposals, keyframes and layout validation.

Real files come from ``shared/realdata/ava`` (``realdata`` fixture); SOURCES.md's checked facts are
the oracles."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from stad.data.ava import (
    AVARows,
    LabelMap,
    ava_keyframe_index,
    read_ava_annotations,
    read_ava_predictions,
    read_excluded_timestamps,
    read_keyframes,
    read_labelmap,
    read_proposals,
    validate_ava,
    write_ava_annotations,
    write_ava_predictions,
    write_labelmap,
    write_proposals,
)
from stad.data.frames import ava_frame_path
from stad.errors import StadError


def _key_rows(rows: AVARows) -> np.ndarray:
    """Rows as a sorted (N, 7) float array [video code, ts, x1, y1, x2, y2, action] for multiset equality."""
    _, codes = np.unique(rows.video, return_inverse=True)
    table = np.column_stack([codes, rows.timestamp, rows.boxes, rows.action_id]).astype(np.float64)
    return table[np.lexsort(table.T[::-1])]


# --------------------------------------------------------------------------------------------------
# Real files
# --------------------------------------------------------------------------------------------------


def test_real_val_head_and_pose_only_file_agree(realdata: Path):
    ava = realdata / "ava"
    head = read_ava_annotations(ava / "ava_val_v2.1_head27163.csv")
    pose = read_ava_annotations(ava / "ava_val_v2.1_POSE_CLASSES_ONLY_no_person_id.csv")
    assert len(head) == 27163 and len(np.unique(head.video)) == 8
    assert head.timestamp[0] == 902 and (head.person_id >= 0).all()
    assert len(pose) == 93400 and len(np.unique(pose.video)) == 64
    assert (pose.person_id == -1).all()
    assert len(set(zip(pose.video.tolist(), pose.timestamp.tolist()))) == 50029
    # Oracle: head rows restricted to actions 1-14 equal the pose-only rows of the same videos.
    last_video = "9F2voT6QWvQ"
    complete = [v for v in np.unique(head.video) if v != last_video]
    head_pose = head.select((head.action_id <= 14) & np.isin(head.video, complete))
    pose_same = pose.select(np.isin(pose.video, complete))
    assert len(head_pose) == len(pose_same) == 9509
    np.testing.assert_array_equal(_key_rows(head_pose), _key_rows(pose_same))
    head_last = head.select((head.action_id <= 14) & (head.video == last_video))
    assert len(head_last) == 2083
    pose_last = pose.select((pose.video == last_video) & (pose.timestamp <= head.timestamp.max()))
    keys_last = set(zip(head_last.timestamp.tolist(), map(tuple, head_last.boxes.tolist()), head_last.action_id.tolist()))
    assert keys_last <= set(zip(pose_last.timestamp.tolist(), map(tuple, pose_last.boxes.tolist()), pose_last.action_id.tolist()))


def test_real_excluded_timestamps_hold_no_ground_truth(realdata: Path):
    ava = realdata / "ava"
    excluded = read_excluded_timestamps(ava / "ava_val_excluded_timestamps_v2.1.csv")
    assert len(excluded) == 37 and len(read_excluded_timestamps(ava / "ava_train_excluded_timestamps_v2.1.csv")) == 161
    for name in ("ava_val_v2.1_head27163.csv", "ava_val_v2.1_POSE_CLASSES_ONLY_no_person_id.csv"):
        rows = read_ava_annotations(ava / name)
        assert not set(zip(rows.video.tolist(), rows.timestamp.tolist())) & excluded


def test_real_label_maps_in_all_dialects(realdata: Path):
    ava = realdata / "ava"
    evaluated = read_labelmap(ava / "ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt")
    full = read_labelmap(ava / "ava_action_list_v2.1.pbtxt")
    mmaction = read_labelmap(ava / "mmaction2_ava_label_map.txt")
    assert len(evaluated) == 60 and len(full) == 80 and full.ids == list(range(1, 81))
    assert evaluated.ids[:3] == [1, 3, 4] and evaluated.names[0] == "bend/bow (at the waist)"
    assert full.label_types[0] == "PERSON_MOVEMENT" and evaluated.label_types[0] is None
    full_names = dict(zip(full.ids, full.names))
    assert all(full_names[i] == name for i, name in zip(evaluated.ids, evaluated.names))
    assert mmaction.ids == evaluated.ids and mmaction.names == evaluated.names
    sample = read_labelmap(ava / "mmaction2_tests_ava_dataset" / "action_list.txt")
    assert sample.ids == [12, 17, 79, 80]
    assert sample.display_names() == ["action1", "action2", "action3 [id 79]", "action3 [id 80]"]
    np.testing.assert_array_equal(sample.index_of(np.array([80, 12, 5])), [3, 0, -1])


def test_real_mmaction2_samples_and_proposals(realdata: Path):
    folder = realdata / "ava" / "mmaction2_tests_ava_dataset"
    rows = read_ava_annotations(folder / "ava_sample.csv")
    assert len(rows) == 8 and rows.timestamp.tolist()[:4] == [902, 902, 902, 903]
    excluded = read_excluded_timestamps(folder / "ava_excluded_timestamps_sample.csv")
    assert excluded == {("0f39OWEqJ24", 903), ("_-Z6wFjXtGQ", 902)}
    assert [(k.video, k.timestamp) for k in read_keyframes(rows, read_labelmap(folder / "action_list.txt"), excluded=excluded)] == [
        ("0f39OWEqJ24", 902)
    ]
    proposals = read_proposals(folder / "ava_proposals_sample.pkl")
    assert sorted(proposals) == [("0f39OWEqJ24", 902), ("0f39OWEqJ24", 903), ("_-Z6wFjXtGQ", 902)]
    assert proposals[("_-Z6wFjXtGQ", 902)].shape == (3, 5)
    other = read_proposals(realdata / "ava" / "mmaction2_tests_eval_detection" / "proposal.pkl")
    assert all(p.shape == (10, 5) for p in other.values()) and len(other) == 3
    predictions = read_ava_predictions(realdata / "ava" / "mmaction2_tests_eval_detection" / "pred.csv")
    assert len(predictions) == 30 and predictions.score[0] == 0.655 and (predictions.person_id == -1).all()


def test_real_keyframes_group_actors(realdata: Path):
    folder = realdata / "ava" / "mmaction2_tests_ava_dataset"
    labelmap = read_labelmap(folder / "action_list.txt")  # ids 12, 17, 79, 80
    keyframes = read_keyframes(folder / "ava_sample.csv", labelmap)
    assert [(k.video, k.timestamp) for k in keyframes] == [("0f39OWEqJ24", 902), ("0f39OWEqJ24", 903), ("_-Z6wFjXtGQ", 902)]
    assert keyframes[0].labels.tolist() == [[True, True, True, False]]
    assert keyframes[1].labels.tolist() == [[True, True, False, False]]
    assert keyframes[2].labels.tolist() == [[True, False, False, True]]  # action 74 is not in the map
    np.testing.assert_array_equal(keyframes[2].boxes, [[0.063, 0.049, 0.524, 0.996]])
    ava = realdata / "ava"
    evaluated = read_labelmap(ava / "ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt")
    head = read_keyframes(ava / "ava_val_v2.1_head27163.csv", evaluated)
    assert sum(len(k.person_ids) for k in head) == 11691  # distinct (video, second, person id)
    assert all(k.labels.shape[1] == 60 for k in head)
    pose = read_keyframes(ava / "ava_val_v2.1_POSE_CLASSES_ONLY_no_person_id.csv", evaluated)
    assert len(pose) == 50029 and all((k.person_ids == -1).all() for k in pose)
    # Without person ids, persons with identical boxes are one actor: labels = distinct (keyframe, box, action).
    rows = read_ava_annotations(ava / "ava_val_v2.1_POSE_CLASSES_ONLY_no_person_id.csv")
    evaluated_rows = rows.select(evaluated.index_of(rows.action_id) >= 0)  # "crawl" (id 2) is not evaluated
    distinct = set(zip(evaluated_rows.video.tolist(), evaluated_rows.timestamp.tolist(),
                       map(tuple, evaluated_rows.boxes.tolist()), evaluated_rows.action_id.tolist()))
    assert sum(int(k.labels.sum()) for k in pose) == len(distinct) == len(evaluated_rows) == 93381


# --------------------------------------------------------------------------------------------------
# CSV reading and writing
# --------------------------------------------------------------------------------------------------


def test_padded_and_unpadded_timestamps_and_seven_columns(tmp_path: Path):
    path = tmp_path / "gt.csv"
    path.write_text("v,0902,0.1,0.2,0.3,0.4,5\nv,902,0.1,0.2,0.3,0.4,6\n\nw,1000,0,0,1,1,7\n")
    rows = read_ava_annotations(path)
    assert rows.timestamp.tolist() == [902, 902, 1000]
    assert rows.line.tolist() == [1, 2, 4]
    assert (rows.person_id == -1).all() and (rows.score == 1.0).all()
    predictions = read_ava_predictions(path)
    assert predictions.score.tolist() == [1.0, 1.0, 1.0]


def test_windows_line_ends(tmp_path: Path):
    path = tmp_path / "det.csv"
    path.write_bytes(b"v,0902,0.1,0.2,0.3,0.4,5,0.25\r\nv,0903,0.1,0.2,0.3,0.4,6,0.5\r\n")
    rows = read_ava_predictions(path)
    assert rows.score.tolist() == [0.25, 0.5] and rows.video.tolist() == ["v", "v"]


def test_mixed_seven_and_eight_columns(tmp_path: Path):
    path = tmp_path / "det.csv"
    path.write_text("v,0902,0.1,0.2,0.3,0.4,5,0.25\nv,0903,0.1,0.2,0.3,0.4,6\n")
    rows = read_ava_predictions(path)
    assert rows.score.tolist() == [0.25, 1.0] and rows.action_id.tolist() == [5, 6]


@pytest.mark.parametrize(
    "text, message",
    [
        ("v,0902,0.1,0.2,0.3,0.4\n", r"line 1: expected 7 or 8 columns, got 6"),
        ("v,0902,0.1,0.2,0.3,0.4,5,0\nv,09x2,0.1,0.2,0.3,0.4,5,0\n", r"line 2: timestamp must be an integer, got '09x2'"),
        ("v,0902,0.1,0.2,0.3,0.4,5,0\nv,0902,0.1,0.2,0.3,0.4,walk,0\n", r"line 2: action_id must be an integer"),
        ("v,0902,0.1,0.2,nan,0.4,5,0\n", r"line 1: non-finite value"),
        ("v,0902,0.1,0.2,0.3,0.4,5,0.5\n", r"line 1: person_id must be an integer, got '0.5'"),
        (",0902,0.1,0.2,0.3,0.4,5,0\n", r"line 1: empty video_id"),
    ],
)
def test_bad_annotation_rows_name_file_and_line(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(StadError, match=message) as info:
        read_ava_annotations(path)
    assert str(path) in str(info.value)


def test_bad_prediction_score(tmp_path: Path):
    path = tmp_path / "det.csv"
    path.write_text("v,0902,0.1,0.2,0.3,0.4,5,0.9\nv,0902,0.1,0.2,0.3,0.4,5,high\n")
    with pytest.raises(StadError, match=r"det.csv line 2: score must be a number, got 'high'"):
        read_ava_predictions(path)
    with pytest.raises(FileNotFoundError):
        read_ava_predictions(tmp_path / "missing.csv")


def test_write_read_round_trip(tmp_path: Path):
    rng = np.random.default_rng(0)
    rows = AVARows.from_arrays(
        video=["a", "bb", "bb"], timestamp=[902, 5, 1798], boxes=rng.random((3, 4)), action_id=[1, 80, 3],
        person_id=[0, 1, 2],
    )
    write_ava_annotations(tmp_path / "gt.csv", rows)
    assert (tmp_path / "gt.csv").read_text().splitlines()[1].startswith("bb,0005,")
    back = read_ava_annotations(tmp_path / "gt.csv")
    np.testing.assert_array_equal(back.boxes, rows.boxes)
    assert back.video.tolist() == ["a", "bb", "bb"] and back.person_id.tolist() == [0, 1, 2]
    predictions = AVARows.from_arrays(
        video=["a"], timestamp=[902], boxes=[[0.1, 0.2, 0.3, 0.4]], action_id=[7], score=[1 / 3]
    )
    write_ava_predictions(tmp_path / "det.csv", predictions)
    assert read_ava_predictions(tmp_path / "det.csv").score.tolist() == [1 / 3]
    write_ava_predictions(tmp_path / "det4.csv", predictions, box_decimals=3, score_decimals=4)
    assert (tmp_path / "det4.csv").read_text() == "a,0902,0.100,0.200,0.300,0.400,7,0.3333\n"
    empty = AVARows.from_arrays(video=[], timestamp=[], boxes=np.zeros((0, 4)), action_id=[])
    write_ava_predictions(tmp_path / "empty.csv", empty)
    assert len(read_ava_predictions(tmp_path / "empty.csv")) == 0


# --------------------------------------------------------------------------------------------------
# Label maps, exclusions, proposals
# --------------------------------------------------------------------------------------------------


def test_label_map_single_line_and_errors(tmp_path: Path):
    path = tmp_path / "map.pbtxt"
    path.write_text('item { name: "walk" id: 3 } item { name: "run" id: 1 }\n')
    labelmap = read_labelmap(path)
    assert labelmap.ids == [3, 1] and labelmap.names == ["walk", "run"]
    write_labelmap(tmp_path / "again.pbtxt", labelmap)
    assert read_labelmap(tmp_path / "again.pbtxt") == labelmap
    path.write_text('item {\n  name: "walk"\n}\n')
    with pytest.raises(StadError, match=r"map.pbtxt line 1: 'item' block needs a name and an id"):
        read_labelmap(path)
    path.write_text('item { name: "a" id: 1 }\nitem { name: "b" id: 1 }\n')
    with pytest.raises(StadError, match=r"duplicate id 1"):
        read_labelmap(path)
    txt = tmp_path / "map.txt"
    txt.write_text("1: walk\nrun\n")
    with pytest.raises(StadError, match=r"map.txt line 2: expected 'id: name'"):
        read_labelmap(txt)
    txt.write_text("")
    with pytest.raises(StadError, match="no classes"):
        read_labelmap(txt)


def test_excluded_timestamps_errors(tmp_path: Path):
    path = tmp_path / "excl.csv"
    path.write_text("v,0902\nw,903\n")
    assert read_excluded_timestamps(path) == {("v", 902), ("w", 903)}
    path.write_text("v,0902\nw,903,1\n")
    with pytest.raises(StadError, match=r"excl.csv line 2: expected 'video_id,timestamp'"):
        read_excluded_timestamps(path)


def test_proposals_round_trip_and_errors(tmp_path: Path):
    proposals = {("v", 902): np.array([[0.1, 0.2, 0.3, 0.4, 0.9]]), ("w", 5): np.zeros((0, 5))}
    write_proposals(tmp_path / "p.pkl", proposals)
    with (tmp_path / "p.pkl").open("rb") as f:
        assert sorted(pickle.load(f)) == ["v,0902", "w,0005"]
    back = read_proposals(tmp_path / "p.pkl")
    assert back.keys() == proposals.keys()
    np.testing.assert_array_equal(back[("v", 902)], proposals[("v", 902)])
    with (tmp_path / "four.pkl").open("wb") as f:
        pickle.dump({"v,0902": np.array([[0.1, 0.2, 0.3, 0.4]])}, f)
    assert read_proposals(tmp_path / "four.pkl")[("v", 902)].tolist() == [[0.1, 0.2, 0.3, 0.4, 1.0]]
    with (tmp_path / "bad.pkl").open("wb") as f:
        pickle.dump({"v0902": np.zeros((1, 5))}, f)
    with pytest.raises(StadError, match=r"key 'v0902' is not 'video_id,timestamp'"):
        read_proposals(tmp_path / "bad.pkl")
    with (tmp_path / "shape.pkl").open("wb") as f:
        pickle.dump({"v,0902": np.zeros((2, 3))}, f)
    with pytest.raises(StadError, match=r"must be \(N, 5\)"):
        read_proposals(tmp_path / "shape.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(StadError, match="cannot unpickle"):
        read_proposals(tmp_path / "junk.pkl")


# --------------------------------------------------------------------------------------------------
# Keyframes and validation
# --------------------------------------------------------------------------------------------------


def test_keyframes_without_person_ids_group_identical_boxes_and_exclusions(tmp_path: Path):
    path = tmp_path / "gt.csv"
    path.write_text(
        "v,0902,0.1,0.1,0.5,0.5,1\nv,0902,0.6,0.1,0.9,0.5,2\nv,902,0.1,0.1,0.5,0.5,2\nv,0903,0.1,0.1,0.5,0.5,9\n"
    )
    labelmap = LabelMap(ids=[1, 2], names=["a", "b"], label_types=[None, None])
    keyframes = read_keyframes(path, labelmap)
    assert len(keyframes) == 2
    assert keyframes[0].labels.tolist() == [[True, True], [False, True]]
    assert keyframes[1].labels.tolist() == [[False, False]]  # action 9 is not evaluated; the person stays
    assert [k.timestamp for k in read_keyframes(path, labelmap, excluded={("v", 903)})] == [902]


def test_keyframes_person_with_two_boxes_is_an_error(tmp_path: Path):
    path = tmp_path / "gt.csv"
    path.write_text("v,0902,0.1,0.1,0.5,0.5,1,3\nv,0902,0.2,0.1,0.5,0.5,2,3\n")
    labelmap = LabelMap(ids=[1, 2], names=["a", "b"], label_types=[None, None])
    with pytest.raises(StadError, match=r"gt.csv lines 1 and 2: person 3 of v,902 has two boxes"):
        read_keyframes(path, labelmap)


def _ava_layout(root: Path) -> None:
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "toy_val.csv").write_text(
        "vid1,0002,0.1,0.1,0.5,0.5,1,0\nvid1,0002,0.1,0.1,0.5,0.5,2,0\nvid1,0003,0.2,0.2,0.6,0.9,2,1\n"
    )
    (root / "annotations" / "toy_val_excluded_timestamps.csv").write_text("vid1,0004\n")
    write_labelmap(root / "annotations" / "toy.pbtxt", LabelMap(ids=[1, 2], names=["a", "b"], label_types=[None] * 2))
    for ts in (2, 3):
        frame = ava_frame_path(root, "vid1", ava_keyframe_index(ts))
        frame.parent.mkdir(parents=True, exist_ok=True)
        frame.write_bytes(b"jpeg")


def test_validate_ava_clean_and_broken(tmp_path: Path):
    assert ava_keyframe_index(2) == 61
    root = tmp_path / "ava"
    _ava_layout(root)
    assert validate_ava(root) == []
    with (root / "annotations" / "toy_val.csv").open("a") as f:
        f.write("vid1,0003,0.2,0.2,1.2,0.9,2,2\n")  # outside [0, 1]
        f.write("vid1,0003,0.5,0.2,0.5,0.9,2,3\n")  # degenerate
        f.write("vid1,0003,0.1,0.2,0.5,0.9,42,4\n")  # unknown action
        f.write("vid1,0009,0.1,0.2,0.5,0.9,1,0\n")  # keyframe frame missing
        f.write("vid2,0002,0.1,0.2,0.5,0.9,1,0\n")  # no frame folder
    (root / "annotations" / "toy_val_excluded_timestamps.csv").write_text("vid1\n")
    problems = validate_ava(root)
    text = "\n".join(str(p) for p in problems)
    assert "toy_val.csv line 4: boxes: box [0.2, 0.2, 1.2, 0.9] outside [0, 1]" in text
    assert "toy_val.csv line 5: boxes: degenerate box" in text
    assert "toy_val.csv line 6: action_id: action id 42 not in the label map" in text
    assert f"toy_val.csv line 7 frame 271: frames: keyframe frame missing: {ava_frame_path(root, 'vid1', 271)}" in text
    assert "no frame folder" in text and "vid2" in text
    assert "excluded_timestamps.csv" in text and "expected 'video_id,timestamp'" in text
    assert len(problems) == 6


def test_validate_ava_missing_parts(tmp_path: Path):
    problems = validate_ava(tmp_path)
    assert len(problems) == 1 and problems[0].field == "annotations"
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "x.csv").write_text("v,0902,0.1\n")
    fields = sorted(p.field for p in validate_ava(tmp_path))
    assert fields == ["labelmap", "row"]
