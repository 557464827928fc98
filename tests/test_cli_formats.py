"""The `stad convert`, `stad validate` and `stad extract-frames` commands, end to end on small inputs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from stad.cli import main
from stad.data.act import load_act, save_act
from stad.data.custom import load_custom
from stad.data.frames import act_frame_path, write_jpeg
from stad.structures import TubeAnnotations


def tiny_root(root):
    ann = TubeAnnotations(
        labels=["walk"],
        gttubes={"v1": {0: [np.array([[1, 1, 2, 10, 12], [2, 2, 2, 11, 12]], float)]}},
        nframes={"v1": 2},
        resolution={"v1": (24, 32)},
        train_videos=[[]],
        test_videos=[["v1"]],
    )
    save_act(ann, root / "Tiny-GT.pkl")
    for frame in (1, 2):
        write_jpeg(act_frame_path(root, "v1", frame), np.zeros((24, 32, 3), np.uint8))
    return ann


def test_convert_ucf24_mat(realdata, tmp_path, capsys):
    out = tmp_path / "UCF101v2-GT.pkl"
    rc = main(["convert", "ucf24-mat", str(realdata / "ucf101_24/finalAnnots.mat"), str(out), "--test-list", str(realdata / "ucf101_24/testlist01.txt")])
    assert rc == 0
    assert "3194 videos, 4458 tubes, 24 labels; split 1: 2284 train / 910 test" in capsys.readouterr().out
    ann = load_act(out)
    assert len(ann.test_videos[0]) == 910 and ann.labels[0] == "Basketball"


def test_convert_without_split_reports_problem(tmp_path, capsys):
    tube = {"label": 0, "sf": 0, "ef": 2, "boxes": np.array([[200, 1, 100, 20], [201, 1, 100, 20]], np.uint8)}
    (tmp_path / "pyannot.pkl").write_bytes(pickle.dumps({"Jump/v_Jump_g01_c01": {"numf": np.uint8(5), "label": 0, "annotations": [tube]}}))
    rc = main(["convert", "ucf24-pyannot", str(tmp_path / "pyannot.pkl"), str(tmp_path / "u.pkl")])
    assert rc == 1 and "no split defined" in capsys.readouterr().err
    ann = load_act(tmp_path / "u.pkl")  # written all the same
    np.testing.assert_array_equal(ann.gttubes["Jump/v_Jump_g01_c01"][0][0], [[1, 200, 1, 300, 21], [2, 201, 1, 301, 21]])
    (tmp_path / "test.txt").write_text("Jump/v_Jump_g01_c01.avi\n")
    rc = main(["convert", "ucf24-pyannot", str(tmp_path / "pyannot.pkl"), str(tmp_path / "u.pkl"), "--test-list", str(tmp_path / "test.txt")])
    assert rc == 0 and load_act(tmp_path / "u.pkl").test_videos == [["Jump/v_Jump_g01_c01"]]


def test_convert_jhmdb_subset(realdata, tmp_path, capsys):
    videos = {"catch": "Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2", "wave": None}
    for cls in videos:
        (tmp_path / "masks" / cls).mkdir(parents=True)
        name = videos[cls] or sorted(p.stem for p in (realdata / "jhmdb21/puppet_masks" / cls).glob("*.mat"))[0]
        videos[cls] = name
        os.symlink(realdata / "jhmdb21/puppet_masks" / cls / f"{name}.mat", tmp_path / "masks" / cls / f"{name}.mat")
    (tmp_path / "test.txt").write_text(f"wave/{videos['wave']}\n")
    rc = main(["convert", "jhmdb-masks", str(tmp_path / "masks"), str(tmp_path / "J-GT.pkl"), "--test-list", str(tmp_path / "test.txt")])
    assert rc == 0, capsys.readouterr().err
    ann = load_act(tmp_path / "J-GT.pkl")
    assert ann.labels == ["catch", "wave"] and ann.train_videos == [[f"catch/{videos['catch']}"]]
    assert ann.gttubes[f"catch/{videos['catch']}"][0][0].shape == (40, 5)


def test_convert_multisports_and_custom_round_trip(realdata, tmp_path, capsys):
    assert main(["convert", "multisports", str(realdata / "multisports/mmaction2_tests_eval_multisports/gt.pkl"), str(tmp_path / "ms.pkl")]) == 0
    assert main(["convert", "act-to-custom", str(tmp_path / "ms.pkl"), str(tmp_path / "ms.json"), "--frames", "frames/{video}/{frame:05d}.jpg"]) == 0
    assert load_custom(tmp_path / "ms.json").frames["aerobic_gymnastics/v_crsi07chcV8_c004"] == "frames/{video}/{frame:05d}.jpg"
    assert main(["convert", "custom-to-act", str(tmp_path / "ms.json"), str(tmp_path / "back.pkl")]) == 0
    a, b = load_act(tmp_path / "ms.pkl"), load_act(tmp_path / "back.pkl")
    assert a.nframes == b.nframes and a.test_videos == b.test_videos
    for video, per_video in a.gttubes.items():
        for label, tubes in per_video.items():
            for ta, tb in zip(tubes, b.gttubes[video][label]):
                np.testing.assert_array_equal(ta, tb)


def test_convert_errors_are_one_line(tmp_path, capsys):
    assert main(["convert", "ucf24-mat", str(tmp_path / "nope.mat"), str(tmp_path / "o.pkl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.mat" in err and "Traceback" not in err
    assert main(["convert", "multisports", str(tmp_path / "x.pkl"), str(tmp_path / "o.pkl"), "--test-list", "t.txt"]) == 2
    assert "--test-list applies to" in capsys.readouterr().err


def test_validate_command(tmp_path, capsys):
    tiny_root(tmp_path)
    assert main(["validate", str(tmp_path)]) == 0
    assert "videos     1" in capsys.readouterr().out
    act_frame_path(tmp_path, "v1", 2).unlink()
    raw = pickle.loads((tmp_path / "Tiny-GT.pkl").read_bytes())
    raw["gttubes"]["v1"][0][0][0, 4] = 99
    (tmp_path / "Tiny-GT.pkl").write_bytes(pickle.dumps(raw))
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "v1 frame 2: frames: frame 2 missing" in out and "v1 label 0 tube 0 frame 1: y2: y2 > height 24" in out


def test_validate_broken_input_no_traceback(tmp_path, capsys):
    tiny_root(tmp_path)
    (tmp_path / "Tiny-GT.pkl").write_bytes(b"garbage")
    assert main(["validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "file: " in captured.out and "cannot read as a pickle" in captured.out and "Traceback" not in captured.err
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert "data set not found" in capsys.readouterr().err


def test_extract_frames_command(tmp_path, capsys):
    av = pytest.importorskip("av")
    (tmp_path / "videos").mkdir()
    with av.open(str(tmp_path / "videos/clip.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (tmp_path / "videos/bad.avi").write_bytes(b"\x00\x01" * 300)
    rc = main(["extract-frames", str(tmp_path / "videos"), str(tmp_path / "out"), "--fps", "30", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1 and "failed: bad:" in captured.err and "1 written (15 frames)" in captured.out
    assert len(list((tmp_path / "out/frames/clip").glob("img_*.jpg"))) == 15
    (tmp_path / "videos/bad.avi").unlink()
    assert main(["extract-frames", str(tmp_path / "videos"), str(tmp_path / "out"), "--no-progress"]) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert main(["extract-frames", str(tmp_path / "videos"), str(tmp_path / "act"), "--layout", "act", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "act/rgb-images/clip").iterdir()) == [f"{i:05d}.jpg" for i in range(1, 6)]
