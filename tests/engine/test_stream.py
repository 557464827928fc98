"""Online streaming (`stad stream`, `stad profile`): outputs as it goes, identities, realtime dropping, Ctrl-C."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stad.cli import main as cli_main
from stad.config import config_from_dict
from stad.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from stad.data.frames import write_jpeg
from stad.engine.checkpoint import save_checkpoint
from stad.engine.profile import STREAM_MODULES, ModuleTimer
from stad.engine.stream import FrameSource, LatestFrameReader, StreamConfig, open_source, run_stream
from stad.errors import StadError
from stad.eval.predictions import read_tubes
from stad.models.keypoint import FrameBoxes, TemporalCue, build_keypoint
from stad.viz.video import read_video, write_video

H, W = 48, 64


class ScriptedDetector(torch.nn.Module):
    """A stand-in frame detector: one actor box moving 2 px right per frame, missing on ``missing`` frames.

    The frame number is read from the pixels (frame t is filled with the byte t). ``delay`` seconds of "network"
    per frame; ``interrupt_at``: Ctrl-C during that frame.
    """

    def __init__(self, *, missing=(), delay: float = 0.0, interrupt_at: int | None = None) -> None:
        super().__init__()
        self.gap = 1
        self.cue = TemporalCue("none")
        self.missing, self.delay, self.interrupt_at = set(missing), delay, interrupt_at
        self.seen: list[int] = []

    def head_outputs(self, x):
        t = int(round(float(x[0, 0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255))
        if t == self.interrupt_at:
            raise KeyboardInterrupt
        if self.delay:
            time.sleep(self.delay)
        self.seen.append(t)
        return t

    def decode(self, t, *, orig_sizes):
        if t in self.missing:
            return [FrameBoxes(boxes=np.zeros((0, 4)), scores=np.zeros(0), labels=np.zeros(0, np.int64))]
        x = 4.0 + 2 * t
        return [FrameBoxes(boxes=np.array([[x, 10.0, x + 12, 30.0]]), scores=np.array([0.9]), labels=np.array([1]))]


def numbered_frames(n: int) -> list[np.ndarray]:
    return [np.full((H, W, 3), t, np.uint8) for t in range(1, n + 1)]


def test_stream_writes_video_and_json_and_keeps_the_identity_through_a_gap(tmp_path):
    model = ScriptedDetector(missing={5, 6})
    source = FrameSource("clip", 25.0, iter(numbered_frames(12)))
    result = run_stream(model, source, tmp_path, labels=["a", "b"], cfg=StreamConfig(input_size=(H, W), scale=1))
    assert result.frames == 12 and result.dropped == 0 and not result.interrupted
    assert read_video(result.video).shape == (12, H, W, 3)
    raw = json.loads(result.tubes_json.read_text())
    assert list(raw) == ["clip"] and len(raw["clip"]) == 1
    tube = raw["clip"][0]
    assert tube["track_id"] == 0 and tube["label"] == 1 and tube["class"] == "b"
    boxes = np.array(tube["boxes"])
    assert boxes[:, 0].tolist() == list(range(1, 13))
    assert boxes[4, 5] == 0 and boxes[5, 5] == 0  # bridged by extrapolation
    np.testing.assert_allclose(boxes[4, 1], 4 + 2 * 5, atol=1e-6)  # constant velocity: 2 px per frame
    assert read_tubes(result.tubes_json)["clip"][0].label == 1  # the standard reader accepts the file
    assert set(result.timer.times) == set(STREAM_MODULES)


def test_stream_without_extrapolation_splits_the_tube(tmp_path):
    model = ScriptedDetector(missing={5, 6})
    cfg = StreamConfig(input_size=(H, W), write_video=False, link={"max_gap": 0, "min_length": 2})
    result = run_stream(model, FrameSource("clip", 25.0, iter(numbered_frames(12))), tmp_path, labels=["a", "b"], cfg=cfg)
    assert [t.track_id for t in result.tubes] == [0, 1] and result.video is None
    assert [len(t.boxes) for t in result.tubes] == [4, 6]


def test_stream_from_a_video_file_and_a_frame_folder(tmp_path):
    frames = numbered_frames(10)
    video = write_video(tmp_path / "in.mp4", frames, fps=10)
    folder = tmp_path / "frames"
    for t, frame in enumerate(frames, start=1):
        write_jpeg(folder / f"{t:05d}.jpg", frame)
    for src, name in ((video, "in"), (folder, "frames")):
        source = open_source(src)
        assert source.name == name
        result = run_stream(ScriptedDetector(), source, tmp_path / "out", labels=["a", "b"], cfg=StreamConfig(input_size=(H, W)))
        assert result.frames == 10
        assert read_video(tmp_path / "out" / f"{name}_tubes.mp4").shape[0] == 10
        assert (tmp_path / "out" / f"{name}_tubes.json").is_file()
    assert open_source(video).fps == pytest.approx(10.0)
    with pytest.raises(FileNotFoundError, match="not found"):
        open_source(tmp_path / "missing.mp4")


def test_latest_frame_reader_keeps_only_the_newest_frame():
    reader = LatestFrameReader(iter(numbered_frames(5)))
    deadline = time.time() + 5
    while reader.read < 5 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    newest = reader.get()
    assert newest is not None and newest[0, 0, 0] == 5
    assert reader.dropped == 4
    assert reader.get() is None
    reader.stop()


def test_realtime_drops_frames_for_a_slow_detector(tmp_path):
    model = ScriptedDetector(delay=0.03)  # about 30 frames/s of "network" against a 200 frames/s source
    source = FrameSource("live", 200.0, iter(numbered_frames(40)))
    cfg = StreamConfig(input_size=(H, W), realtime=True, write_video=False, link={"min_length": 1})
    result = run_stream(model, source, tmp_path, labels=["a", "b"], cfg=cfg)
    assert result.dropped > 10
    assert result.frames + result.dropped == 40  # every frame read was processed or dropped
    assert model.seen == sorted(model.seen) and model.seen[-1] == 40  # always the newest, and the last one
    assert result.frames == len(model.seen) < 30


def test_ctrl_c_keeps_everything_written_so_far(tmp_path):
    model = ScriptedDetector(interrupt_at=7)
    cfg = StreamConfig(input_size=(H, W), scale=1, link={"min_length": 3})
    result = run_stream(model, FrameSource("cut", 25.0, iter(numbered_frames(20))), tmp_path, labels=["a", "b"], cfg=cfg)
    assert result.interrupted and result.frames == 6
    assert read_video(tmp_path / "cut_tubes.mp4").shape[0] == 6  # a complete, readable file
    tubes = json.loads((tmp_path / "cut_tubes.json").read_text())["cut"]
    assert len(tubes) == 1 and [row[0] for row in tubes[0]["boxes"]] == [1, 2, 3, 4, 5, 6]


def tiny_config_dict(tmp_path) -> dict:
    return {
        "data": {"kind": "synthetic", "root": str(tmp_path / "unused"), "input_size": [H, W]},
        "model": {"name": "keypoint", "backbone": "resnet18", "num_classes": 2, "labels": ["walk", "run"],
                  "options": {"cue": "ssim", "width": 0.25, "deformable": False, "head_conv": 16, "top_n": 10}},
        "eval": {"options": {"max_gap": 3, "min_length": 2}},
    }


def test_stream_cli_with_a_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = config_from_dict(tiny_config_dict(tmp_path))
    ckpt = save_checkpoint(tmp_path / "kp.pt", model=build_keypoint(cfg.model), epoch=0, step=0, config=cfg)
    video = write_video(tmp_path / "walk.mp4", numbered_frames(8), fps=25)
    code = cli_main(["stream", str(video), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--max-frames", "6"])
    assert code == 0
    out = capsys.readouterr().out
    assert "6 frames processed (0 dropped)" in out and "| network |" in out
    assert read_video(tmp_path / "out" / "walk_tubes.mp4").shape[0] == 6
    assert list(json.loads((tmp_path / "out" / "walk_tubes.json").read_text())) == ["walk"]


def test_profile_prints_every_module(tmp_path, capsys):
    config = tmp_path / "kp.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp_path)))
    assert cli_main(["profile", str(config), "--frames", "4", "--warmup", "1", "--size", "48", "64", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "input 48x64, 4 frames" in out
    for module in STREAM_MODULES:
        assert f"| {module} |" in out
    assert "end to end (4 frames)" in out


def test_module_timer_table():
    timer = ModuleTimer(("a", "b"))
    timer.add("a", 0.3)
    timer.add("b", 0.1, calls=2)
    table = timer.table(frames=10, wall=0.5)
    assert "| a | 0.300 | 30.00 | 75.0% | 33.3 |" in table
    assert "| **end to end (10 frames)** | 0.500 | 50.00 | | 20.0 |" in table


@pytest.mark.skipif(Path("/dev/video7").exists(), reason="this machine has a camera 7")
def test_a_missing_camera_is_a_clear_error():
    with pytest.raises(StadError, match="camera 7 cannot be opened"):
        open_source("7")  # a digit string is a camera index, as on the command line
