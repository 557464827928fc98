"""Converters on the real UCF101-24 and JHMDB-21 files (facts of shared/realdata/SOURCES.md as oracles)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from stad.data.act import check_act, load_act, save_act
from stad.data.convert import (
    jhmdb_test_list,
    load_jhmdb_masks,
    load_ucf24_mat,
    load_ucf24_pyannot,
    mask_extent,
    read_video_list,
    read_yowo_jhmdb_gt,
)
from stad.errors import StadError


@pytest.fixture(scope="module")
def ucf(realdata):
    test_list = read_video_list(realdata / "ucf101_24/testlist01.txt")
    pkl = load_ucf24_pyannot(realdata / "ucf101_24/pyannot.pkl", test_list=test_list)
    mat = load_ucf24_mat(realdata / "ucf101_24/finalAnnots.mat", test_list=test_list)
    return pkl, mat


@pytest.fixture(scope="module")
def jhmdb(realdata):
    """The full conversion of the 928 puppet masks (about 5-10 s), once for the module."""
    masks = realdata / "jhmdb21/puppet_masks"
    labels = sorted(p.name for p in masks.iterdir() if p.is_dir())
    zip_path = realdata / "jhmdb21/yowo_groundtruths_jhmdb.zip"
    return load_jhmdb_masks(masks, test_list=jhmdb_test_list(zip_path, labels)), read_yowo_jhmdb_gt(zip_path, labels)


def n_tubes(ann):
    return sum(len(t) for per_video in ann.gttubes.values() for t in per_video.values())


def test_ucf24_counts(ucf):
    ann = ucf[0]
    assert len(ann.nframes) == 3194 and n_tubes(ann) == 4458 and len(ann.labels) == 24
    assert len(ann.test_videos) == 1 and len(ann.test_videos[0]) == 910 and len(ann.train_videos[0]) == 2284
    assert min(ann.nframes.values()) == 32 and max(ann.nframes.values()) == 900
    assert all(len(per_video) == 1 for per_video in ann.gttubes.values())  # one action class per video
    assert {sum(len(t) for t in pv.values()) for pv in ann.gttubes.values()} <= set(range(1, 11))
    assert set(ann.resolution.values()) == {(240, 320)}
    assert check_act(ann) == []


def test_ucf24_pyannot_equals_mat(ucf):
    pkl, mat = ucf
    assert pkl.labels == mat.labels and pkl.nframes == mat.nframes
    assert pkl.train_videos == mat.train_videos and pkl.test_videos == mat.test_videos
    assert pkl.gttubes.keys() == mat.gttubes.keys()
    for video, per_video in pkl.gttubes.items():
        assert per_video.keys() == mat.gttubes[video].keys()
        for label, tubes in per_video.items():
            assert len(tubes) == len(mat.gttubes[video][label])
            for a, b in zip(tubes, mat.gttubes[video][label]):
                np.testing.assert_array_equal(a, b)


def test_ucf24_labels_and_frames(ucf, realdata):
    ann = ucf[0]
    with open(realdata / "ucf101_24/pyannot_with_class_names.pkl", "rb") as f:
        assert ann.labels == pickle.load(f, encoding="latin1")["classes"]
    # pyannot: sf 8 (0-based), ef 52 (exclusive); finalAnnots: sf 9, ef 52 -> frames 9..52 from 1
    (tube,) = ann.gttubes["Basketball/v_Basketball_g01_c01"][0]
    assert tube.shape == (44, 5) and tube[0, 0] == 9 and tube[-1, 0] == 52


def test_ucf24_boxes_do_not_wrap(ucf, realdata):
    """x2 = x + w computed after the cast: boxes beyond 255 exist and none exceeds the 320x240 frame."""
    ann = ucf[0]
    boxes = np.concatenate([t[:, 1:] for pv in ann.gttubes.values() for tubes in pv.values() for t in tubes])
    assert boxes[:, 0].min() >= 1 and boxes[:, 1].min() >= 1
    assert boxes[:, 2].max() == 320 and boxes[:, 3].max() <= 240
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    with open(realdata / "ucf101_24/pyannot.pkl", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    wrapping = [
        (video, i)
        for video, entry in raw.items()
        for i, tube in enumerate(entry["annotations"])
        if np.any(tube["boxes"][:, 0] + tube["boxes"][:, 2] != tube["boxes"][:, 0].astype(int) + tube["boxes"][:, 2])
    ]
    assert len(wrapping) == 1445  # SOURCES.md: the uint8 sum wraps in 1445 tubes
    video, i = wrapping[0]
    (tube,) = [t for t in ann.gttubes[video][raw[video]["label"]]][i : i + 1]
    np.testing.assert_array_equal(tube[:, 3], raw[video]["annotations"][i]["boxes"][:, [0, 2]].astype(float).sum(1))


def test_ucf24_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_ucf24_pyannot(tmp_path / "nope.pkl")
    (tmp_path / "x.pkl").write_bytes(pickle.dumps({"Basketball/v1": {"numf": 10, "label": 0, "annotations": [{"label": 0, "sf": 0, "ef": 3, "boxes": np.zeros((2, 4), np.uint8)}]}}))
    with pytest.raises(StadError, match=r"Basketball/v1: annotations\[0\]: \(2, 4\) boxes for sf=0, ef=3"):
        load_ucf24_pyannot(tmp_path / "x.pkl")
    (tmp_path / "m.mat").write_bytes(b"garbage")
    with pytest.raises(StadError, match="m.mat: cannot read as a MATLAB file"):
        load_ucf24_mat(tmp_path / "m.mat")
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps({"Basketball/v1": {"numf": 10, "label": 0, "annotations": []}}))
    with pytest.raises(StadError, match="1 test-list video"):
        load_ucf24_pyannot(tmp_path / "ok.pkl", test_list=["Basketball/v2"])


def test_read_video_list(tmp_path):
    (tmp_path / "l.txt").write_text("A/v_a.avi 1\n\nB/v_b\n")
    assert read_video_list(tmp_path / "l.txt") == ["A/v_a", "B/v_b"]


def test_mask_extent():
    mask = np.zeros((6, 8, 2), np.uint8)
    mask[1:3, 2:5, 0] = 1  # rows 1-2, columns 2-4
    mask[5, 7, 1] = 1
    np.testing.assert_array_equal(mask_extent(mask), [[2, 1, 4, 2], [7, 5, 7, 5]])
    assert np.isnan(mask_extent(np.zeros((2, 2, 1)))).all()


def test_jhmdb_counts(jhmdb):
    ann, _ = jhmdb
    assert len(ann.labels) == 21 and ann.labels[0] == "brush_hair" and ann.labels[-1] == "wave"
    assert ann.labels == sorted(ann.labels)
    assert len(ann.nframes) == 928 and n_tubes(ann) == 928 and sum(ann.nframes.values()) == 31838
    assert len(ann.test_videos[0]) == 268 and len(ann.train_videos[0]) == 660
    assert "catch/Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2" in ann.train_videos[0]
    assert ann.nframes["catch/Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2"] == 40
    assert set(ann.resolution.values()) == {(240, 320)}
    assert check_act(ann) == []


def test_jhmdb_gt_pickle_loads(jhmdb, tmp_path):
    ann, _ = jhmdb
    save_act(ann, tmp_path / "JHMDB-GT.pkl")
    back = load_act(tmp_path / "JHMDB-GT.pkl")
    assert back.labels == ann.labels and back.nframes == ann.nframes and back.test_videos == ann.test_videos
    video = "catch/Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2"
    np.testing.assert_array_equal(back.gttubes[video][ann.labels.index("catch")][0], ann.gttubes[video][ann.labels.index("catch")][0])
    assert check_act(back) == []


def test_jhmdb_boxes_match_yowo_on_every_frame(jhmdb):
    """YOWO box = (x1 + 1, y1 + 1, min(x2 + 2, W), min(y2 + 2, H)) with our 0-based inclusive mask extent."""
    ann, yowo = jhmdb
    assert sorted(yowo) == ann.test_videos[0]
    n_frames = 0
    for video, rows in yowo.items():
        ((label, (tube,)),) = ann.gttubes[video].items()
        height, width = ann.resolution[video]
        np.testing.assert_array_equal(rows[:, 0], np.arange(1, ann.nframes[video] + 1))  # every frame 1..T
        assert np.all(rows[:, 1] == label)
        expected = np.stack(
            [tube[:, 1] + 1, tube[:, 2] + 1, np.minimum(tube[:, 3] + 2, width), np.minimum(tube[:, 4] + 2, height)], axis=1
        )
        np.testing.assert_array_equal(rows[:, 2:], expected, err_msg=video)
        n_frames += len(rows)
    assert n_frames == 9126


def test_jhmdb_bad_inputs(tmp_path):
    import scipy.io

    (tmp_path / "masks/wave").mkdir(parents=True)
    mask = np.zeros((4, 5, 3), np.uint8)
    mask[1, 1, [0, 2]] = 1
    scipy.io.savemat(tmp_path / "masks/wave/v1.mat", {"part_mask": mask})
    with pytest.raises(StadError, match=r"v1.mat: part_mask frame 2 has no mask pixel"):
        load_jhmdb_masks(tmp_path / "masks")
    mask[1, 1, 1] = 1
    scipy.io.savemat(tmp_path / "masks/wave/v1.mat", {"part_mask": mask})
    ann = load_jhmdb_masks(tmp_path / "masks", test_list=["wave/v1"])
    np.testing.assert_array_equal(ann.gttubes["wave/v1"][0][0], [[1, 1, 1, 1, 1], [2, 1, 1, 1, 1], [3, 1, 1, 1, 1]])
    assert ann.resolution["wave/v1"] == (4, 5) and ann.test_videos == [["wave/v1"]] and ann.train_videos == [[]]
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt/wave_v1_00001.txt").write_text("21 1 2 x 4\n")
    with pytest.raises(StadError, match="wave_v1_00001.txt line 1: not numbers"):
        read_yowo_jhmdb_gt(tmp_path / "gt", ["wave"])
    (tmp_path / "gt/wave_v1_00001.txt").write_text("1 1 2 3 4\n")
    (tmp_path / "gt/jump_v1_00001.txt").write_text("1 1 2 3 4\n")
    with pytest.raises(StadError, match="jump_v1_00001.txt: expected '<class>_<video>_<frame>.txt'"):
        read_yowo_jhmdb_gt(tmp_path / "gt", ["wave"])
