"""Frame-level runner (KORSAL key-point detector): frame pairing, linker options, `stad train` / `stad test` smoke."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from stad.cli import main as cli_main
from stad.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from stad.engine.families.frame import FrameInferenceConfig, detect_video_frames, frame_detections_of, online_link_options
from stad.errors import StadError
from stad.models.keypoint import FrameBoxes


class PairRecorder(torch.nn.Module):
    """A stand-in frame detector that records which frames it was given (frame t is filled with the byte t * 10)."""

    def __init__(self, gap: int) -> None:
        super().__init__()
        self.gap = gap
        self.pairs: list[tuple[int, int]] = []

    @staticmethod
    def _index(x: torch.Tensor) -> int:
        return int(round(float(x[0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255 / 10))

    def detect_frames(self, image, previous, *, orig_sizes):
        out = []
        for cur, prev in zip(image, previous):
            self.pairs.append((self._index(cur), self._index(prev)))
            out.append(FrameBoxes(boxes=np.array([[1.0, 2.0, 3.0, 4.0]]), scores=np.array([0.5]), labels=np.array([0])))
        return out


@pytest.mark.parametrize(("gap", "batch"), [(1, 16), (2, 3), (3, 2)])
def test_each_frame_is_paired_with_the_frame_gap_earlier(gap, batch):
    frames = [np.full((8, 12, 3), 10 * t, np.uint8) for t in range(1, 8)]
    model = PairRecorder(gap)
    dets = detect_video_frames(model, iter(frames), orig_size=(8, 12), device="cpu",
                               cfg=FrameInferenceConfig(input_size=(8, 12), frame_batch=batch))
    assert len(dets) == 7
    assert model.pairs == [(t, max(1, t - gap)) for t in range(1, 8)]
    table = frame_detections_of(["v"], {"v": dets})
    assert table.frame.tolist() == list(range(1, 8)) and table.boxes.shape == (7, 4)


def test_frame_size_mismatch_is_an_error():
    frames = [np.zeros((8, 12, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)]
    with pytest.raises(StadError, match=r"frame 2 has size \(8, 10\), expected \(H, W\) = \(8, 12\)"):
        detect_video_frames(PairRecorder(1), iter(frames), orig_size=(8, 12), device="cpu", cfg=FrameInferenceConfig(input_size=(8, 12)))


def test_online_link_options():
    assert online_link_options({}) == {}
    assert online_link_options({"extrapolation": False, "min_length": 4}) == {"max_gap": 0, "min_length": 4}
    assert online_link_options({"max_gap": 3, "frame_batch": 8}) == {"max_gap": 3}
    with pytest.raises(StadError, match="contradicts"):
        online_link_options({"extrapolation": False, "max_gap": 2})
    with pytest.raises(StadError, match=r"eval.options.max_gapp"):
        online_link_options({"max_gapp": 2})


def tiny_keypoint_config(root, out) -> dict:
    return {
        "data": {"kind": "synthetic", "root": str(root), "options": {"preset": "tiny", "expand": False},
                 "input_size": [64, 96], "batch_size": 16, "num_workers": 0},
        "model": {"name": "keypoint", "backbone": "resnet18",
                  "options": {"cue": "ssim", "gap": 2, "width": 0.25, "deformable": False, "head_conv": 16, "top_n": 10}},
        "train": {"epochs": 1, "lr": 2e-3, "scheduler": "none", "device": "cpu", "val_every": 0, "output_dir": str(out)},
        "eval": {"video_ious": [0.2, 0.5], "options": {"frame_batch": 8, "extrapolation": False, "min_length": 4}},
    }


def test_train_and_test_cli_on_tiny_synth(tiny_synth, tmp_path, capsys):
    torch.set_num_threads(1)
    config = tmp_path / "keypoint.yaml"
    config.write_text(yaml.safe_dump(tiny_keypoint_config(tiny_synth, tmp_path / "run")))
    assert cli_main(["train", str(config)]) == 0
    assert (tmp_path / "run" / "last.pt").is_file()
    assert cli_main(["test", str(config), "--checkpoint", str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "test")]) == 0
    report = json.loads((tmp_path / "test" / "report.json").read_text())
    metrics = report["metrics"]
    for key in ("frame_mAP", "video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.5:0.95"):
        assert key in metrics and (metrics[key] is None or 0.0 <= metrics[key] <= 1.0)
    assert report["videos"] == 2
    assert any(k.startswith("frame_mAP/vis") for k in metrics) and any(k.startswith("video_mAP_occluded@") for k in metrics)
    header = (tmp_path / "test" / "detections.csv").read_text().splitlines()[0]
    assert "score" in header
    tubes = json.loads((tmp_path / "test" / "tubes.json").read_text())
    assert len(tubes) == 2
    assert all(len(t["boxes"]) >= 4 for ts in tubes.values() for t in ts)  # min_length from eval.options
    video = next((tiny_synth / "rgb-images").iterdir())
    capsys.readouterr()
    assert cli_main(["detect", str(video), "--checkpoint", str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "det")]) != 0
    assert "frame-level 'keypoint' model (online linking): run it with `stad stream" in capsys.readouterr().err
