"""The `stad synth` and `stad demo` commands (the demo on the tiny preset through its hidden --preset option)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np

from stad.cli import main
from stad.viz.video import read_video


def test_synth_tiny_writes_the_act_layout(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = main(["synth", "--preset", "tiny", "--out", str(out), "--videos", "3", "--seed", "5", "--size", "72",
               "--occlusion", "1", "--classes", "walk,run", "--no-progress"])
    assert rc == 0
    assert "wrote 3 videos" in capsys.readouterr().out
    with open(out / "Synth-GT.pkl", "rb") as fh:
        gt = pickle.load(fh)
    assert gt["labels"] == ["walk", "run"]
    assert gt["resolution"]["video_00002"] == (72, 96)
    assert len(list((out / "rgb-images" / "video_00001").glob("*.jpg"))) == 32
    assert all(np.isfinite(t).all() for v in gt["gttubes"].values() for ts in v.values() for t in ts)


def test_synth_refuses_a_non_empty_folder_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["synth", "--preset", "tiny", "--out", str(out), "--videos", "2", "--no-progress"]
    assert main(args) == 0
    (out / "rgb-images" / "video_00099").mkdir()  # a stale video from an earlier rendering
    capsys.readouterr()
    assert main(args) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert not (out / "rgb-images" / "video_00099").exists()


def test_synth_bad_options_are_one_line_errors(tmp_path, capsys):
    assert main(["synth", "--preset", "tiny", "--out", str(tmp_path / "a"), "--layout", "ava"]) == 2
    err = capsys.readouterr().err
    assert "frames >= 61" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["synth", "--preset", "tiny", "--out", str(tmp_path / "b"), "--classes", "walk,fly"]) == 2
    assert "subset" in capsys.readouterr().err


def test_demo_on_the_tiny_preset_and_reuse(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--preset", "tiny", "--no-progress", "--preview-videos", "2"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "rendering the synthetic 'tiny' preset" in text
    assert "tubes per class:" in text and "fully visible" in text and "mean tube length" in text
    assert "validation: no problems" in text
    preview = read_video(out / "preview.mp4")
    assert preview.shape[0] == 32 and preview.shape[1] >= 240  # upscaled tiny frames
    # the bundled detector ran on the test videos: metrics printed, predictions and the side-by-side video written
    assert "frame-mAP@0.5" in text and "video-mAP@0.2" in text and "frames/s" in text
    for name in ("detections.csv", "tubes.json", "tubelets.npz", "report.md"):
        assert (out / name).is_file(), name
    side_by_side = read_video(out / "detections.mp4")
    assert side_by_side.shape[0] == 32 and side_by_side.shape[2] > side_by_side.shape[1]
    assert main(["demo", "--out", str(out), "--preset", "tiny", "--no-progress", "--no-detect"]) == 0
    assert "reusing the synthetic data set" in capsys.readouterr().out
    assert main(["demo", "--out", str(out), "--preset", "tiny", "--no-progress", "--checkpoint", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "detector checkpoint not found" in err and "Traceback" not in err


def test_installed_command_lists_synth_and_demo():
    result = subprocess.run([sys.executable, "-m", "stad.cli", "--help"], capture_output=True, text=True, check=True)
    assert "synth" in result.stdout and "demo" in result.stdout
