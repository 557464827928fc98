"""FBIL / ACAR-Net's data layer (FBIL.md §2, §7): annotation pickles (read, write, convert), clip rule facts,
the spatial transforms, padded batches with pad_ratio and the neck's box jitter."""

from __future__ import annotations

import os
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from stad.cli import main
from stad.data.ava import LabelMap, read_labelmap, write_labelmap, write_proposals
from stad.data.frames import write_jpeg
from stad.data.keyframes import (
    ACAR_NORMALIZATION,
    AcarClipRule,
    KeyframeDataset,
    acar_class_order,
    acar_layout,
    ava_layout,
    collate_keyframes,
    collate_keyframes_padded,
    flat_frame_index,
    read_acar_annotations,
    read_keyframe_annotations,
    step_layout,
    temporal_center_crop,
    write_acar_annotations,
    write_proposals_csv,
)
from stad.data.safe_pickle import safe_load_pickle
from stad.data.transforms import (
    ClipSample,
    ScaleShortSide,
    apply_box_jitter,
    build_fbil_test_transform,
    build_fbil_train_transform,
    jitter_boxes,
    scale_short_side_size,
)
from stad.errors import StadError
from stad.structures import KeyframeLabels

CLASSES = [{"id": 1, "name": "bend"}, {"id": 3, "name": "crouch"}, {"id": 4, "name": "dance"}]


def _entry(**changes: Any) -> dict[str, Any]:
    entry = {
        "video": "vidC", "format_str": "image_%06d.jpg", "start_frame": 16, "n_frames": 91, "time": 902, "midframe": 61,
        "labels": [{"bounding_box": [0.1, 0.2, 0.5, 0.9], "label": [0, 2]}], "person_id": [3],
    }
    entry.update(changes)
    return entry


def _dump(path: Path, data: Any, classes: Any = None) -> Path:
    path.write_bytes(pickle.dumps((data, CLASSES if classes is None else classes), protocol=2))
    return path


def _touch_frames(folder: Path, count: int, pattern: str = "image_%06d.jpg") -> None:
    """Empty frame files: a layout's index reads only the names."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(1, count + 1):
        (folder / (pattern % f)).touch()


def _plain(value: Any) -> bool:
    """Only Python's own containers and scalars (no numpy) all the way down."""
    if isinstance(value, dict):
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return type(value) in (str, int, float, bool)


# --------------------------------------------------------------------------------------------------
# FBIL.md §7 facts 1 and 2: TemporalCenterCrop(64, 2) and the ACAR clip rule
# --------------------------------------------------------------------------------------------------


def test_fact1_center_crop_of_a_91_frame_window():
    s = 1000
    crop = temporal_center_crop(np.arange(s, s + 91), size=64, step=2)
    assert crop.tolist() == list(range(s + 13, s + 76, 2)) and len(crop) == 32
    assert crop[16] == s + 45  # the keyframe
    slow = crop[::4]  # the R101 slow pathway
    assert slow.tolist() == [s + 13 + 8 * k for k in range(8)] and slow[4] == s + 45


def test_fact1_through_the_acar_clip_rule():
    index = flat_frame_index("v", 27030, fps=30, timestamp_start=900)  # AVA's 15 minutes from second 900
    keyframe = (1000 - 900) * 30 + 1
    s = keyframe - 45  # the pickle's start_frame
    for rule in (AcarClipRule(), AcarClipRule(windows={("v", 1000): (s, 91)})):
        clip = rule(index, 1000)
        assert clip.frames.tolist() == list(range(s + 13, s + 76, 2))
        assert clip.keyframe_index == 16 and clip.keyframe_frame == keyframe == clip.frames[16]
        assert clip.frames[::4][4] == keyframe


def test_fact2_cyclic_fill_of_a_short_window():
    expected = list(range(1, 40, 2)) + list(range(1, 24, 2))  # [1, 3, ..., 39, 1, 3, ..., 23]
    assert temporal_center_crop(np.arange(1, 41), size=64, step=2).tolist() == expected
    index = flat_frame_index("v", 100, fps=30, timestamp_start=900)
    clip = AcarClipRule(windows={("v", 900): (1, 40)})(index, 900)
    assert clip.frames.tolist() == expected and clip.keyframe_frame == 1 and clip.keyframe_index == 0


# --------------------------------------------------------------------------------------------------
# Reading ACAR pickles: every field checked
# --------------------------------------------------------------------------------------------------


def test_read_all_fields(tmp_path: Path):
    unlabelled = _entry(time=903, start_frame=46, midframe=91, person_id=[-1, -1],
                        labels=[{"bounding_box": [0.0, 0.1, 0.2, 0.3], "label": []}, {"bounding_box": [0.3, 0.1, 0.6, 0.9]}])
    ann = read_acar_annotations(_dump(tmp_path / "a.pkl", [unlabelled, _entry()]))
    assert [(k.video, k.timestamp, len(k.boxes)) for k in ann.keyframes] == [("vidC", 902, 1), ("vidC", 903, 0)]
    assert ann.keyframes[0].labels.tolist() == [[True, False, True]] and ann.keyframes[0].person_ids.tolist() == [3]
    assert ann.midframes == {("vidC", 902): 61, ("vidC", 903): 91}
    assert ann.windows == {("vidC", 902): (16, 91), ("vidC", 903): (46, 91)} and ann.format_strs == {"image_%06d.jpg"}
    assert ann.proposals[("vidC", 903)].shape == (2, 5)
    # Every box as an actor (FBIL's RoIs: an unlabelled box is a negative).
    every = read_acar_annotations(tmp_path / "a.pkl", keep_unlabelled=True)
    assert len(every.keyframes[1].boxes) == 2 and not every.keyframes[1].labels.any()
    assert every.keyframes[1].person_ids.tolist() == [-1, -1]
    # Lenient where the values are unambiguous: numpy numbers, a digit string, a per-box [person id].
    ann = read_acar_annotations(_dump(tmp_path / "b.pkl", [_entry(time="0902", start_frame=np.int64(16), n_frames=91.0,
        person_id=None, labels=[{"bounding_box": np.array([0.1, 0.2, 0.5, 0.9]), "label": np.array([1]), "person_id": [7]}])]))
    assert ann.keyframes[0].timestamp == 902 and ann.windows[("vidC", 902)] == (16, 91)
    assert ann.keyframes[0].labels.tolist() == [[False, True, False]] and ann.keyframes[0].person_ids.tolist() == [7]


BAD_ENTRIES = [
    ([[1, 2]], r"bad\.pkl entry 0: expected a dict, got list"),
    ([_entry(), {"video": "v", "time": 1}], r"bad\.pkl entry 1: missing key\(s\) \['labels'\]"),
    ([_entry(video=7)], r"bad\.pkl entry 0: video must be a non-empty string, got 7"),
    ([_entry(time="abc")], r"bad\.pkl entry 0: time must be an integer, got 'abc'"),
    ([_entry(time=902.5)], r"bad\.pkl entry 0: time must be an integer, got 902\.5"),
    ([_entry(time=None)], r"bad\.pkl entry 0: time must be an integer, got None"),
    ([_entry(n_frames=None)], r"entry 0 \(vidC,902\): n_frames must be an integer, got None"),
    ([{k: v for k, v in _entry().items() if k != "n_frames"}], r"entry 0 \(vidC,902\): start_frame without n_frames"),
    ([_entry(n_frames=0)], r"entry 0 \(vidC,902\): n_frames must be >= 1, got 0"),
    ([_entry(start_frame="x")], r"entry 0 \(vidC,902\): start_frame must be an integer, got 'x'"),
    ([_entry(format_str=5)], r"entry 0 \(vidC,902\): format_str must be a string"),
    ([_entry(format_str="image.jpg")], r"entry 0 \(vidC,902\): format_str: frame file pattern must hold one integer field"),
    ([_entry(midframe=500)], r"entry 0 \(vidC,902\): midframe 500 is outside its window start_frame 16 \.\. 106"),
    ([_entry(labels="boxes")], r"entry 0 \(vidC,902\): labels must be a list of"),
    ([_entry(labels=[{"label": [0]}])], r"entry 0 \(vidC,902\): labels\[0\] must be a dict with 'bounding_box' and 'label'"),
    ([_entry(labels=[[0.1, 0.2, 0.5, 0.9]])], r"entry 0 \(vidC,902\): labels\[0\] must be a dict with 'bounding_box'"),
    ([_entry(labels=[{"bounding_box": [0.1, 0.2, 0.5], "label": [0]}])], r"labels\[0\]\.bounding_box must be 4 finite numbers"),
    ([_entry(labels=[{"bounding_box": "abcd", "label": [0]}])], r"labels\[0\]\.bounding_box must be 4 finite numbers, got 'abcd'"),
    ([_entry(labels=[{"bounding_box": [0.1, float("nan"), 0.5, 0.9], "label": [0]}])], r"labels\[0\]\.bounding_box must be 4 finite"),
    ([_entry(labels=[{"bounding_box": [0.5, 0.1, 0.4, 0.9], "label": [0]}])],
     r"entry 0 \(vidC,902\): labels\[0\]\.bounding_box \[0\.5, 0\.1, 0\.4, 0\.9\] is degenerate"),
    ([_entry(labels=[{"bounding_box": [10, 20, 300, 400], "label": [0]}])], r"labels\[0\]\.bounding_box \[10\.0, 20\.0, 300\.0, 400\.0\] is outside \[0, 1\]"),
    ([_entry(labels=[{"bounding_box": [0.1, 0.2, 0.5, 0.9], "label": [0, 3]}])], r"entry 0 \(vidC,902\): labels\[0\]\.label \[0, 3\] outside 0\.\.2"),
    ([_entry(labels=[{"bounding_box": [0.1, 0.2, 0.5, 0.9], "label": [-1]}])], r"labels\[0\]\.label \[-1\] outside 0\.\.2"),
    ([_entry(labels=[{"bounding_box": [0.1, 0.2, 0.5, 0.9], "label": [1.5]}])], r"labels\[0\]\.label: a class index must be an integer, got 1\.5"),
    ([_entry(labels=[{"bounding_box": [0.1, 0.2, 0.5, 0.9], "label": ["walk"]}])], r"labels\[0\]\.label: a class index must be an integer, got 'walk'"),
    ([_entry(person_id=[1, 2, 3])], r"entry 0 \(vidC,902\): person_id must be a list with one id per box of labels \(1\), got 3"),
    ([_entry(person_id=5)], r"entry 0 \(vidC,902\): person_id must be a list with one id per box of labels \(1\), got int"),
    ([_entry(person_id=None, labels=[{"bounding_box": [0.1, 0.2, 0.5, 0.9], "label": [0], "person_id": "x"}])],
     r"entry 0 \(vidC,902\): labels\[0\]: person_id must be an integer, got 'x'"),
    ([_entry(), _entry()], r"entry 1 \(vidC,902\): keyframe vidC,902 appears twice"),
]


@pytest.mark.parametrize("data, message", BAD_ENTRIES)
def test_malformed_entries_name_file_entry_and_field(tmp_path: Path, data: list, message: str):
    path = _dump(tmp_path / "bad.pkl", data)
    with pytest.raises(StadError, match=message):
        read_acar_annotations(path)
    assert str(path) in _message(path)


def _message(path: Path) -> str:
    try:
        read_acar_annotations(path)
    except StadError as err:
        return str(err)
    raise AssertionError("no error")


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"data": []}, r"bad\.pkl: expected a tuple \(data, idx_to_class\), got dict"),
        (({"a": 1}, CLASSES), r"bad\.pkl: data must be a list of per-keyframe dicts, got dict"),
        (([], []), r"bad\.pkl: idx_to_class must be a non-empty list"),
        (([], [{"name": "x"}]), r"bad\.pkl: idx_to_class\[0\] must be a dict with an 'id'"),
        (([], [{"id": 1}, {"id": "x"}]), r"bad\.pkl: idx_to_class\[1\]: id must be an integer, got 'x'"),
        (([], [{"id": 1}, {"id": 1}]), r"bad\.pkl: idx_to_class\[1\]: id 1 repeats idx_to_class\[0\]"),
    ],
)
def test_malformed_structure(tmp_path: Path, raw: Any, message: str):
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(raw))
    with pytest.raises(StadError, match=message):
        read_acar_annotations(tmp_path / "bad.pkl")


class _Payload:
    """Unpickles as ``func(arg)``: the classic code-execution pickle."""

    def __init__(self, func: Any, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return self.func, (self.arg,)


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path):
    marker = tmp_path / "ran.txt"
    payload = pickle.dumps(([_entry(video=_Payload(exec, f"open({str(marker)!r}, 'w').close()"))], CLASSES))
    pickle.loads(payload)  # control: plain pickle runs the payload ...
    assert marker.exists()
    marker.unlink()
    (tmp_path / "evil.pkl").write_bytes(payload)
    with pytest.raises(StadError, match=r"evil\.pkl: refused global builtins\.exec"):
        read_acar_annotations(tmp_path / "evil.pkl")  # ... the reader refuses it before calling anything
    assert not marker.exists()
    shell = pickle.dumps(([_entry(video=_Payload(os.system, f"touch {marker}"))], CLASSES))
    (tmp_path / "evil2.pkl").write_bytes(shell)
    with pytest.raises(StadError, match=r"refused global (posix|nt)\.system"):
        read_acar_annotations(tmp_path / "evil2.pkl")
    assert not marker.exists()


def test_a_pickle_that_does_not_match_the_frames_on_disk(tmp_path: Path):
    _touch_frames(tmp_path / "acar" / "vidC", 100)  # seconds 900..903
    layout = acar_layout(tmp_path / "acar")
    ok = read_acar_annotations(_dump(tmp_path / "ok.pkl", [_entry()]), layout=layout)
    assert ok.keyframes[0].timestamp == 902
    cases = [
        (_entry(video="vidX"), r"bad\.pkl entry 0 \(vidX,902\): video 'vidX': frame folder not found"),
        (_entry(format_str="img_%05d.jpg"), r"entry 0 \(vidC,902\): format_str 'img_%05d\.jpg' does not name the frames on disk"),
        (_entry(time=950), r"entry 0 \(vidC,950\): time 950 has no frames in"),
        # frames counted from second 0 instead of 900: 902 * 30 + 1 - 45
        (_entry(start_frame=27016, midframe=27061), r"entry 0 \(vidC,902\): start_frame 27016 / n_frames 91 .* miss the keyframe of time 902, frame 61"),
        (_entry(midframe=105), r"entry 0 \(vidC,902\): midframe 105 is outside the frames on disk 1\.\.100"),
    ]
    for entry, message in cases:
        with pytest.raises(StadError, match=message):
            read_acar_annotations(_dump(tmp_path / "bad.pkl", [entry]), layout=layout)
    with pytest.raises(StadError, match="not a flat layout"):
        read_acar_annotations(tmp_path / "ok.pkl", layout=step_layout(tmp_path))
    # An early keyframe whose window starts before frame 1 matches (AcarClipRule clamps).
    read_acar_annotations(_dump(tmp_path / "early.pkl", [_entry(time=900, start_frame=-44, midframe=1)]), layout=layout)


# --------------------------------------------------------------------------------------------------
# Writing ACAR pickles from AVA CSV + proposals, and reading them back
# --------------------------------------------------------------------------------------------------

# Label map in file order 4, 1, 3: the pickle's idx_to_class is ascending (1, 3, 4).
LABELMAP = LabelMap(ids=[4, 1, 3], names=["dance", "bend", "crouch"], label_types=[None] * 3)
AVA_CSV = """\
vidC,0902,0.1,0.1,0.5,0.9,1,5
vidC,0902,0.1,0.1,0.5,0.9,4,5
vidC,0902,0.5,0.5,0.9,0.9,3,6
vidC,0903,0.25,0.25,0.75,0.75,4,5
vidD,0902,0.0,0.0,1.0,1.0,1,1
"""


@pytest.fixture()
def ava_keyframes(tmp_path: Path) -> list[KeyframeLabels]:
    (tmp_path / "ann.csv").write_text(AVA_CSV)
    return read_keyframe_annotations(tmp_path / "ann.csv", LABELMAP)


PROPOSALS = {
    ("vidC", 902): np.array([
        [0.12, 0.1, 0.5, 0.9, 0.95],   # IoU 0.95 with person 5 -> its labels
        [0.5, 0.55, 0.9, 0.95, 0.92],  # IoU 0.78 with person 6 -> its labels
        [0.0, 0.0, 0.2, 0.2, 0.99],    # overlaps nobody enough -> no labels
        [0.5, 0.5, 0.9, 0.9, 0.5],     # below min_score -> left out
        [-0.1, 0.5, 0.3, 1.2, 0.97],   # clipped to [0, 0.5, 0.3, 1.0]; IoU 0.21 -> no labels
        [1.1, 0.2, 1.3, 0.4, 0.98],    # no area inside [0, 1] -> left out
    ]),
    ("vidC", 903): np.array([
        [0.25, 0.25, 0.75, 0.5, 0.9],  # IoU exactly 0.5 -> labels
        [0.25, 0.25, 0.75, 0.49, 0.9],  # IoU 0.48 -> none
    ]),
    ("vidC", 904): np.array([[0.2, 0.2, 0.4, 0.4, 0.9]]),  # a keyframe without ground truth
}


def test_acar_class_order_is_ascending_official_id():
    idx_to_class, index_of_class = acar_class_order(LABELMAP)
    assert idx_to_class == [{"id": 1, "name": "bend"}, {"id": 3, "name": "crouch"}, {"id": 4, "name": "dance"}]
    assert index_of_class.tolist() == [2, 0, 1]
    ava60 = [1, *range(3, 15), 15, 17, 20, 80]  # the pose ids 1, 3..14 come first
    shuffled = LabelMap(ids=ava60[::-1], names=[str(i) for i in ava60[::-1]], label_types=[None] * len(ava60))
    assert [c["id"] for c in acar_class_order(shuffled)[0]][:13] == [1, *range(3, 15)]


def test_round_trip_of_ground_truth(tmp_path: Path, ava_keyframes: list[KeyframeLabels]):
    summary = write_acar_annotations(tmp_path / "gt.pkl", ava_keyframes, LABELMAP)
    assert (summary.entries, summary.gt_boxes, summary.proposals) == (3, 4, 0)
    back = read_acar_annotations(tmp_path / "gt.pkl", labelmap=LABELMAP)
    assert len(back.keyframes) == len(ava_keyframes)
    for got, want in zip(back.keyframes, ava_keyframes):
        assert (got.video, got.timestamp) == (want.video, want.timestamp)
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.person_ids, want.person_ids)
    own = read_acar_annotations(tmp_path / "gt.pkl")  # the pickle's own classes: ascending ids
    assert own.labelmap.ids == [1, 3, 4] and own.labelmap.names == ["bend", "crouch", "dance"]
    np.testing.assert_array_equal(own.keyframes[0].labels, ava_keyframes[0].labels[:, [1, 2, 0]])

    raw = (tmp_path / "gt.pkl").read_bytes()
    opcodes = {op.name for op, _, _ in pickletools.genops(raw)}
    assert not opcodes & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"}
    data, idx_to_class = safe_load_pickle(raw, what="test")
    assert _plain(data) and _plain(idx_to_class) and idx_to_class == acar_class_order(LABELMAP)[0]
    first = data[0]
    assert first == {
        "video": "vidC", "time": 902, "format_str": "image_%06d.jpg", "start_frame": 61 - 45, "n_frames": 91,
        "midframe": 61,  # (902 - 900) * 30 + 1
        "labels": [{"bounding_box": [0.1, 0.1, 0.5, 0.9], "label": [0, 2]}, {"bounding_box": [0.5, 0.5, 0.9, 0.9], "label": [1]}],
        "person_id": [5, 6],
    }


def test_train_pickle_labels_proposals_by_iou(tmp_path: Path, ava_keyframes: list[KeyframeLabels]):
    summary = write_acar_annotations(tmp_path / "train.pkl", ava_keyframes, LABELMAP, PROPOSALS, min_score=0.9)
    assert (summary.entries, summary.gt_boxes, summary.proposals, summary.labelled_proposals, summary.skipped_proposals) == (4, 4, 7, 3, 2)
    data, _ = safe_load_pickle(tmp_path / "train.pkl", what="test")
    by_key = {(e["video"], e["time"]): e for e in data}
    e902 = by_key[("vidC", 902)]
    assert [d["label"] for d in e902["labels"]] == [[0, 2], [1], [0, 2], [1], [], []]
    assert e902["person_id"] == [5, 6, -1, -1, -1, -1]
    np.testing.assert_allclose(e902["labels"][5]["bounding_box"], [0.0, 0.5, 0.3, 1.0])
    assert [d["label"] for d in by_key[("vidC", 903)]["labels"]] == [[2], [2], []]
    assert by_key[("vidC", 904)]["labels"] == [{"bounding_box": [0.2, 0.2, 0.4, 0.4], "label": []}]
    back = read_acar_annotations(tmp_path / "train.pkl", labelmap=LABELMAP)
    kf = {(k.video, k.timestamp): k for k in back.keyframes}
    assert len(kf[("vidC", 902)].boxes) == 4 and kf[("vidC", 902)].person_ids.tolist() == [5, 6, -1, -1]  # labelled boxes
    assert len(kf[("vidC", 904)].boxes) == 0 and back.proposals[("vidC", 904)].shape == (1, 5)
    assert len(read_acar_annotations(tmp_path / "train.pkl", keep_unlabelled=True).keyframes[0].boxes) == 6


def test_val_pickle_has_proposals_only(tmp_path: Path, ava_keyframes: list[KeyframeLabels]):
    summary = write_acar_annotations(tmp_path / "val.pkl", ava_keyframes, LABELMAP, PROPOSALS, split="val", min_score=0.85)
    assert (summary.entries, summary.gt_boxes, summary.proposals, summary.labelled_proposals) == (3, 0, 7, 0)
    data, _ = safe_load_pickle(tmp_path / "val.pkl", what="test")
    assert all(d["label"] == [] for e in data for d in e["labels"]) and all(p == -1 for e in data for p in e["person_id"])
    back = read_acar_annotations(tmp_path / "val.pkl")
    assert all(len(k.boxes) == 0 for k in back.keyframes)
    np.testing.assert_allclose(back.proposals[("vidC", 902)][:2, :4], PROPOSALS[("vidC", 902)][:2, :4])


def test_writer_errors(tmp_path: Path, ava_keyframes: list[KeyframeLabels]):
    out = tmp_path / "x.pkl"
    with pytest.raises(StadError, match="split must be 'train'"):
        write_acar_annotations(out, ava_keyframes, LABELMAP, split="test")
    with pytest.raises(StadError, match="split 'val' writes the detector boxes only: give proposals"):
        write_acar_annotations(out, ava_keyframes, LABELMAP, split="val")
    with pytest.raises(StadError, match="either a frame layout or format_str"):
        write_acar_annotations(out, ava_keyframes, LABELMAP, layout=acar_layout(tmp_path), fps=25)
    with pytest.raises(StadError, match=r"1 video\(s\) are not in the data set"):
        write_acar_annotations(out, ava_keyframes, LABELMAP, {("vidZ", 902): np.ones((1, 5))})
    bad = [KeyframeLabels("vidC", 902, np.array([[0.5, 0.1, 0.4, 0.9]]), np.ones((1, 3), bool), np.array([1]))]
    with pytest.raises(StadError, match=r"keyframe vidC,902 box 0 \[0\.5, 0\.1, 0\.4, 0\.9\] is degenerate"):
        write_acar_annotations(out, bad, LABELMAP)
    with pytest.raises(StadError, match=r"labels must be \(N=1, num_classes=3\)"):
        write_acar_annotations(out, [KeyframeLabels("vidC", 902, np.array([[0, 0, 1, 1.0]]), np.ones((1, 2), bool), np.array([1]))], LABELMAP)
    assert not out.exists()


def test_writer_with_frames_on_disk(tmp_path: Path, ava_keyframes: list[KeyframeLabels]):
    _touch_frames(tmp_path / "acar" / "vidC", 130)  # seconds 900..904
    _touch_frames(tmp_path / "acar" / "vidD", 100)
    layout = acar_layout(tmp_path / "acar")
    write_acar_annotations(tmp_path / "a.pkl", ava_keyframes, LABELMAP, PROPOSALS, layout=layout)
    back = read_acar_annotations(tmp_path / "a.pkl", layout=layout)
    assert back.midframes[("vidC", 904)] == 121 and back.windows[("vidC", 904)] == (76, 91)
    late = [KeyframeLabels("vidC", 950, np.array([[0, 0, 1, 1.0]]), np.ones((1, 3), bool), np.array([1]))]
    with pytest.raises(StadError, match=r"keyframe vidC,950: no frames of second 950"):
        write_acar_annotations(tmp_path / "b.pkl", late, LABELMAP, layout=layout)
    # The ava layout: img_%05d.jpg, its own clock (here frame 1 = second 880).
    _touch_frames(tmp_path / "ava" / "frames" / "vidC", 700, "img_%05d.jpg")
    _touch_frames(tmp_path / "ava" / "frames" / "vidD", 700, "img_%05d.jpg")
    write_acar_annotations(tmp_path / "c.pkl", ava_keyframes, LABELMAP, layout=ava_layout(tmp_path / "ava", timestamp_start=880))
    data, _ = safe_load_pickle(tmp_path / "c.pkl", what="test")
    assert (data[0]["format_str"], data[0]["midframe"], data[0]["start_frame"]) == ("img_%05d.jpg", 661, 616)


def test_convert_command_ava_to_acar(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "ann.csv").write_text(AVA_CSV)
    write_labelmap(tmp_path / "map.pbtxt", LABELMAP)
    write_proposals(tmp_path / "props.pkl", {k: v for k, v in PROPOSALS.items()})
    write_proposals_csv(tmp_path / "props.csv", PROPOSALS)
    common = ["convert", "ava-to-acar", str(tmp_path / "ann.csv")]
    assert main([*common, str(tmp_path / "train.pkl"), "--labelmap", str(tmp_path / "map.pbtxt"),
                 "--proposals", str(tmp_path / "props.pkl"), "--min-score", "0.9"]) == 0
    assert "wrote" in capsys.readouterr().out
    api = tmp_path / "api.pkl"
    write_acar_annotations(api, read_keyframe_annotations(tmp_path / "ann.csv", read_labelmap(tmp_path / "map.pbtxt")),
                           read_labelmap(tmp_path / "map.pbtxt"), PROPOSALS, min_score=0.9)
    assert safe_load_pickle(tmp_path / "train.pkl", what="t") == safe_load_pickle(api, what="t")
    assert main([*common, str(tmp_path / "val.pkl"), "--labelmap", str(tmp_path / "map.pbtxt"),
                 "--proposals", str(tmp_path / "props.csv"), "--split", "val", "--layout", "ava"]) == 0
    data, idx_to_class = safe_load_pickle(tmp_path / "val.pkl", what="t")
    assert data[0]["format_str"] == "img_%05d.jpg" and data[0]["midframe"] == 902 * 30 + 1
    assert all(d["label"] == [] for e in data for d in e["labels"]) and [c["id"] for c in idx_to_class] == [1, 3, 4]
    _touch_frames(tmp_path / "frames" / "vidC", 130)
    _touch_frames(tmp_path / "frames" / "vidD", 100)
    assert main([*common, str(tmp_path / "disk.pkl"), "--labelmap", str(tmp_path / "map.pbtxt"),
                 "--frames", str(tmp_path / "frames"), "--layout", "auto"]) == 0
    assert read_acar_annotations(tmp_path / "disk.pkl").midframes[("vidC", 902)] == 61
    capsys.readouterr()
    assert main([*common, str(tmp_path / "e.pkl")]) == 2
    assert "needs --labelmap" in capsys.readouterr().err
    assert main([*common, str(tmp_path / "e.pkl"), "--labelmap", str(tmp_path / "map.pbtxt"), "--layout", "auto"]) == 2
    assert main(["convert", "multisports", str(tmp_path / "x.pkl"), str(tmp_path / "o.pkl"), "--labelmap", "m"]) == 2
    assert "--labelmap apply to ava-to-acar only" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Spatial transforms (FBIL.md §2, §7 fact 4)
# --------------------------------------------------------------------------------------------------


def test_fact4_scale_sizes():
    assert scale_short_side_size(360, 640, 256) == (256, 455)  # 640x360 -> 455x256
    assert scale_short_side_size(360, 480, 256) == (256, 341)  # 480x360 -> 341x256
    assert scale_short_side_size(640, 360, 256) == (455, 256)  # portrait
    assert scale_short_side_size(256, 300, 256) == (256, 300) and scale_short_side_size(300, 300, 256) == (256, 256)
    assert [-(-s // 16) for s in scale_short_side_size(360, 640, 256)] == [16, 29]  # feature maps (ceil(/16))
    assert [-(-s // 16) for s in scale_short_side_size(360, 480, 256)] == [16, 22]


def _striped(T: int, H: int, W: int) -> np.ndarray:
    clip = np.zeros((T, H, W, 3), np.uint8)
    clip[..., : W // 2, 0] = 200  # left half red, right half blue; frame t adds t to green
    clip[..., W // 2 :, 2] = 200
    clip[..., 1] = np.arange(T, dtype=np.uint8)[:, None, None] * 10
    return clip


def test_scale_short_side_moves_pixels_and_boxes():
    clip = _striped(3, 360, 480)
    sample = ClipSample.create(clip, np.array([[48.0, 36.0, 240.0, 360.0]]))
    out = ScaleShortSide(256)(sample)
    assert out.clip.shape == (3, 256, 341, 3) and out.clip.dtype == np.uint8
    np.testing.assert_allclose(out.boxes, [[48 * 341 / 480, 36 * 256 / 360, 240 * 341 / 480, 256.0]])
    np.testing.assert_allclose(out.affine, [341 / 480, 0.0, 256 / 360, 0.0])
    reference = np.asarray(Image.fromarray(clip[2]).resize((341, 256), Image.BILINEAR))  # ACAR's resize
    np.testing.assert_array_equal(out.clip[2], reference)
    assert out.clip[1, :, :100, 0].min() == 200 and out.clip[1, :, 250:, 2].min() == 200 and (out.clip[1, ..., 1] == 10).all()
    noise = ClipSample.create(np.random.default_rng(0).integers(0, 256, (1, 360, 480, 3), dtype=np.uint8), np.zeros((0, 4)))
    pil, cv = ScaleShortSide(256)(noise), ScaleShortSide(256, backend="cv2")(noise)
    assert pil.clip.shape == cv.clip.shape == (1, 256, 341, 3)
    assert pil.clip.std() < cv.clip.std() - 5  # PIL averages over the footprint when shrinking (ACAR), OpenCV does not
    assert ScaleShortSide(360)(sample) is sample
    with pytest.raises(StadError, match="backend must be 'pil' or 'cv2'"):
        ScaleShortSide(256, backend="nearest")


def test_fbil_train_and_test_transforms():
    clip = _striped(4, 360, 640)
    boxes = np.array([[64.0, 36.0, 320.0, 360.0]])
    test = build_fbil_test_transform(256)(ClipSample.create(clip, boxes), np.random.default_rng(0))
    assert test.clip.shape == (4, 256, 455, 3)
    flipped = 0
    for seed in range(12):
        out = build_fbil_train_transform(256)(ClipSample.create(clip, boxes), np.random.default_rng(seed))
        assert out.clip.shape == (4, 256, 455, 3)  # no crop: always the scaled size
        if out.affine[0] < 0:
            flipped += 1
            np.testing.assert_array_equal(out.clip, test.clip[:, :, ::-1])  # every frame mirrored together
            np.testing.assert_allclose(out.boxes, [[455 - test.boxes[0, 2], test.boxes[0, 1], 455 - test.boxes[0, 0], test.boxes[0, 3]]])
        else:
            np.testing.assert_array_equal(out.clip, test.clip)  # no colour change
            np.testing.assert_allclose(out.boxes, test.boxes)
    assert 0 < flipped < 12  # p = 0.5
    again = build_fbil_train_transform(256)(ClipSample.create(clip, boxes), np.random.default_rng(3))
    assert np.array_equal(again.clip, build_fbil_train_transform(256)(ClipSample.create(clip, boxes), np.random.default_rng(3)).clip)
    assert len(build_fbil_train_transform(128, flip=False).transforms) == 1


# --------------------------------------------------------------------------------------------------
# Padded batches (FBIL.md §2 batch_pad)
# --------------------------------------------------------------------------------------------------


def _item(h: int, w: int, *, actors: int = 1, value: float = 1.0, proposals: int | None = None) -> dict[str, Any]:
    item = {
        "clip": torch.full((2, 3, h, w), value),
        "boxes": torch.tensor([[1.0, 1.0, 3.0, 4.0]] * actors).reshape(-1, 4),
        "labels": torch.ones((actors, 3)),
        "person_ids": torch.arange(actors),
        "neighbor_boxes": torch.zeros((actors, 2, 4)),
        "neighbor_valid": torch.zeros((actors, 2), dtype=torch.bool),
        "video": "v", "timestamp": 902, "center_frame": 61, "keyframe_index": 16,
        "frames": torch.arange(2), "orig_size": torch.tensor([h, w]), "affine": torch.tensor([1.0, 0, 1, 0], dtype=torch.float64),
        "scale": torch.ones(2, dtype=torch.float64), "num_dropped": 0,
    }
    if proposals is not None:
        item["proposals"] = torch.ones((proposals, 4))
        item["proposal_scores"] = torch.ones(proposals)
    return item


def test_padded_collate_values_and_pad_ratio():
    items = [_item(256, 455, value=1.0, proposals=2), _item(256, 341, actors=2, value=2.0, proposals=0), _item(200, 300, value=3.0, proposals=1)]
    batch = collate_keyframes_padded(items)
    assert batch["clip"].shape == (3, 2, 3, 256, 455)
    assert (batch["clip"][0] == 1).all()
    assert (batch["clip"][1, ..., :341] == 2).all() and (batch["clip"][1, ..., 341:] == 0).all()  # right padding = 0
    assert (batch["clip"][2, ..., :200, :300] == 3).all() and (batch["clip"][2, ..., 200:, :] == 0).all() and (batch["clip"][2, ..., 300:] == 0).all()
    torch.testing.assert_close(batch["pad_ratio"], torch.tensor([[1.0, 1.0], [455 / 341, 1.0], [455 / 300, 256 / 200]], dtype=torch.float64))
    torch.testing.assert_close(batch["sizes_before_padding"], 1.0 / batch["pad_ratio"])
    assert batch["unpadded_size"].tolist() == [[256, 455], [256, 341], [200, 300]]
    # FBIL's head: the unpadded part of a stride-16 feature map (16 x 29) of the 341-wide clip is 22 columns.
    assert np.ceil(29 * batch["sizes_before_padding"][1, 0].item()) == 22
    assert batch["boxes"].shape == (3, 2, 4) and batch["mask"].tolist() == [[True, False], [True, True], [True, False]]
    assert batch["proposals"].shape == (3, 2, 4) and batch["proposal_mask"].sum().item() == 3
    assert items[1]["clip"].shape == (2, 3, 256, 341)  # the items are not modified
    with pytest.raises(StadError, match="same T and channels"):
        collate_keyframes_padded([_item(8, 8), {**_item(8, 8), "clip": torch.zeros(3, 3, 8, 8)}])
    with pytest.raises(StadError, match="empty batch"):
        collate_keyframes_padded([])


def test_padded_collate_of_one_size_equals_collate_keyframes(tmp_path: Path):
    for f in range(1, 101):
        write_jpeg(tmp_path / "vidC" / f"image_{f:06d}.jpg", np.full((12, 16, 3), 2 * f, np.uint8))
    keyframes = [KeyframeLabels("vidC", t, np.array([[0.25, 0.25, 0.75, 1.0]]), np.array([[True, False]]), np.array([4])) for t in (901, 902)]
    common = dict(clip_rule=AcarClipRule(), num_classes=2, normalization=ACAR_NORMALIZATION)
    wide = KeyframeDataset(keyframes, acar_layout(tmp_path), input_size=(8, 12), **common)
    tall = KeyframeDataset(keyframes, acar_layout(tmp_path), input_size=(10, 8), **common)
    same = [wide[0], wide[1]]
    plain, padded = collate_keyframes(same), collate_keyframes_padded(same)
    assert set(padded) == set(plain) | {"pad_ratio", "sizes_before_padding", "unpadded_size"}
    for key, value in plain.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(padded[key], value), key
        else:
            assert padded[key] == value, key
    assert (padded["pad_ratio"] == 1).all() and (padded["sizes_before_padding"] == 1).all()
    mixed = collate_keyframes_padded([wide[0], tall[1]])  # real items of two sizes
    assert mixed["clip"].shape == (2, 32, 3, 10, 12)
    assert mixed["pad_ratio"].tolist() == [[1.0, 10 / 8], [12 / 8, 1.0]]
    assert torch.equal(mixed["clip"][1, :, :, :, :8], tall[1]["clip"]) and (mixed["clip"][1, :, :, :, 8:] == 0).all()
    torch.testing.assert_close(mixed["boxes"][1], tall[1]["boxes"])  # pixels of the padded frame too


# --------------------------------------------------------------------------------------------------
# Box jitter (FBIL.md §2 neck, §7 fact 17)
# --------------------------------------------------------------------------------------------------


def test_fact17_jitter_clamping_quirk():
    out = apply_box_jitter(np.array([[0.1, 0.0, 0.5, 0.98]]), np.array([[0.05, -0.05, 0.05, 0.05]]))
    np.testing.assert_allclose(out, [[0.12, -0.049, 0.52, 1.0]], atol=1e-12)  # y1 not clamped at 0
    out = apply_box_jitter(np.array([[0.0, 0.5, 0.98, 1.0]]), np.array([[-0.05, 0.05, 0.05, -0.05]]))
    np.testing.assert_allclose(out, [[0.0, 0.525, 1.029, 0.975]], atol=1e-12)  # x1 clamped at 0, x2 not at 1


def test_jitter_boxes_draws_from_the_generator():
    boxes = np.array([[0.1, 0.2, 0.5, 0.9], [0.3, 0.3, 0.6, 0.8]])
    out = jitter_boxes(boxes, np.random.default_rng(7))
    offsets = np.random.default_rng(7).uniform(-0.075, 0.075, size=(2, 4))
    np.testing.assert_array_equal(out, apply_box_jitter(boxes, offsets))
    assert not np.allclose(out, boxes) and np.all(np.abs(out - boxes) <= 0.075 * 0.7 + 1e-12)
    np.testing.assert_array_equal(jitter_boxes(boxes, np.random.default_rng(0), 0.0), boxes)
    assert jitter_boxes(np.zeros((0, 4)), np.random.default_rng(0)).shape == (0, 4)
    with pytest.raises(StadError, match="offsets must have the boxes' shape"):
        apply_box_jitter(boxes, np.zeros((1, 4)))
