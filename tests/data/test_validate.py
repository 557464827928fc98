"""validate_dataset on tiny ACT roots, custom JSON and the real JHMDB frames; broken input gives problems, not tracebacks."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from stad.data.act import save_act
from stad.data.custom import from_tube_annotations, save_custom
from stad.data.frames import act_frame_path, write_jpeg
from stad.data.validate import validate_dataset
from stad.errors import StadError
from stad.structures import TubeAnnotations

H, W = 24, 32


def make_root(root, *, nframes=(4, 3)):
    """An ACT root: Tiny-GT.pkl and rgb-images/<video>/%05d.jpg of size W x H."""
    ann = TubeAnnotations(
        labels=["walk", "run"],
        gttubes={"a/v1": {0: [np.array([[1, 1, 2, 10, 12], [2, 2, 2, 11, 12]], float)]}, "b/v2": {1: [np.array([[3, 0, 0, 31, 23]], float)]}},
        nframes={"a/v1": nframes[0], "b/v2": nframes[1]},
        resolution={"a/v1": (H, W), "b/v2": (H, W)},
        train_videos=[["a/v1"]],
        test_videos=[["b/v2"]],
    )
    save_act(ann, root / "Tiny-GT.pkl")
    for video, n in ann.nframes.items():
        for frame in range(1, n + 1):
            write_jpeg(act_frame_path(root, video, frame), np.full((H, W, 3), 40 * frame, np.uint8))
    return ann


def edit_pickle(root, change):
    path = root / "Tiny-GT.pkl"
    raw = pickle.loads(path.read_bytes())
    change(raw)
    path.write_bytes(pickle.dumps(raw, protocol=2))


def test_clean_root(tmp_path):
    make_root(tmp_path)
    report = validate_dataset(tmp_path)
    assert report.ok, report.problems
    assert (report.format, report.videos, report.frames, report.tubes) == ("act", 2, 7, 2)
    assert report.boxes_per_label == {"walk": 2, "run": 1} and report.split_sizes == [(1, 1)]
    table = report.format_table()
    assert "videos     2" in table and "split 1    train 1 videos, test 1 videos" in table and "problems   0" in table


def test_missing_and_extra_frames(tmp_path):
    make_root(tmp_path)
    act_frame_path(tmp_path, "a/v1", 2).unlink()
    act_frame_path(tmp_path, "a/v1", 3).unlink()
    write_jpeg(act_frame_path(tmp_path, "b/v2", 4), np.zeros((H, W, 3), np.uint8))
    write_jpeg(act_frame_path(tmp_path, "b/v2", 5), np.zeros((H, W, 3), np.uint8))
    problems = validate_dataset(tmp_path).problems
    assert [(p.location, p.field, p.frame) for p in problems] == [("a/v1", "frames", 2), ("b/v2", "nframes", 4)]
    assert "frames 2-3 missing" in problems[0].message and "go on to 5" in problems[1].message


def test_image_size_mismatch(tmp_path):
    make_root(tmp_path)
    write_jpeg(act_frame_path(tmp_path, "a/v1", 1), np.zeros((H, W + 2, 3), np.uint8))
    (problem,) = validate_dataset(tmp_path).problems
    assert problem.field == "resolution" and "(24, 34)" in problem.message and problem.frame == 1


def test_box_outside_and_overlapping_splits(tmp_path):
    make_root(tmp_path)

    def change(raw):
        raw["gttubes"]["a/v1"][0][0][1, 3] = W + 5
        raw["test_videos"][0].append("a/v1")

    edit_pickle(tmp_path, change)
    problems = validate_dataset(tmp_path).problems
    assert {(p.location, p.field, p.frame) for p in problems} == {("a/v1 label 0 tube 0", "x2", 2), ("a/v1", "test_videos", None)}


def test_corrupted_pickle_and_missing_folder(tmp_path):
    make_root(tmp_path)
    (tmp_path / "Tiny-GT.pkl").write_bytes(b"\x80\x02}q\x00(truncated")
    (problem,) = validate_dataset(tmp_path).problems
    assert problem.field == "file" and "cannot read as a pickle" in problem.message
    other = tmp_path / "other"
    other.mkdir()
    make_root(other)
    os.rename(other / "rgb-images/b", other / "rgb-images/c")
    (problem,) = validate_dataset(other).problems
    assert problem.location == "b/v2" and "folder" in problem.message and "missing" in problem.message


def test_pickle_alone_and_bad_paths(tmp_path):
    (tmp_path / "root").mkdir()
    make_root(tmp_path / "root")
    os.rename(tmp_path / "root/Tiny-GT.pkl", tmp_path / "Tiny-GT.pkl")
    report = validate_dataset(tmp_path / "Tiny-GT.pkl")  # no frames beside it: annotations only
    assert report.ok and not report.frames_checked
    with pytest.raises(FileNotFoundError):
        validate_dataset(tmp_path / "nope")
    with pytest.raises(StadError, match="no \\*-GT.pkl"):
        validate_dataset(tmp_path / "root")


def test_custom_json(tmp_path):
    ann = make_root(tmp_path)
    save_custom(from_tube_annotations(ann, frames="rgb-images/{video}/{frame:05d}.jpg"), tmp_path / "set.json")
    report = validate_dataset(tmp_path / "set.json")
    assert report.ok and report.format == "custom" and report.frames_checked and report.tubes == 2
    act_frame_path(tmp_path, "b/v2", 3).unlink()
    (problem,) = validate_dataset(tmp_path / "set.json").problems
    assert (problem.location, problem.field, problem.frame) == ("b/v2", "frames", 3)
    obj = json.loads((tmp_path / "set.json").read_text())
    obj["videos"]["a/v1"]["nframes"] = "four"
    (tmp_path / "bad.json").write_text(json.dumps(obj))
    (problem,) = validate_dataset(tmp_path / "bad.json").problems
    assert problem.field == "file" and '$.videos["a/v1"].nframes' in problem.message


def test_real_jhmdb_frames(realdata, tmp_path):
    """The real JHMDB clip (40 PNG frames in Frames/<class>/<video>/) against its puppet-mask ground truth."""
    from stad.data.convert import load_jhmdb_masks

    masks = tmp_path / "masks/catch"
    masks.mkdir(parents=True)
    name = "Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2"
    os.symlink(realdata / f"jhmdb21/puppet_masks/catch/{name}.mat", masks / f"{name}.mat")
    ann = load_jhmdb_masks(tmp_path / "masks", test_list=[f"catch/{name}"])
    root = tmp_path / "JHMDB"
    save_act(ann, root / "JHMDB-GT.pkl")
    (root / "Frames/catch").mkdir(parents=True)
    os.symlink(realdata / f"jhmdb21/clip_frames/{name}", root / f"Frames/catch/{name}")
    report = validate_dataset(root)
    assert report.ok, report.problems
    assert (report.videos, report.frames, report.boxes_per_label) == (1, 40, {"catch": 40})
    ann.nframes[f"catch/{name}"] = 48  # the AVI header's count
    save_act(ann, root / "JHMDB-GT.pkl")
    assert [(p.field, p.frame) for p in validate_dataset(root).problems] == [("frames", 41)]


def test_ava_root_is_dispatched(tmp_path):
    ava = pytest.importorskip("stad.data.ava", reason="stad.data.ava (AVA loader, another engineer's module) is not written yet")
    if not hasattr(ava, "validate_ava"):
        pytest.skip("stad.data.ava has no validate_ava yet")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "frames/vid1").mkdir(parents=True)
    (tmp_path / "annotations/labelmap.pbtxt").write_text('item {\n  name: "stand"\n  id: 1\n}\n')
    (tmp_path / "annotations/ava_val.csv").write_text("vid1,0902,0.1,0.2,1.5,0.9,1,0\n")
    expected = ava.validate_ava(tmp_path)
    report = validate_dataset(tmp_path)
    assert report.format == "ava" and expected
    assert [str(p) for p in report.problems] == [str(p) for p in expected]
