"""STADO through the CLI on the tiny synthetic set: `stad train configs/stado_...` (occlusion augmentation and mask
supervision on) -> `stad test` -> `stad detect --show-masks`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stad.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "stado_r18w025_synth_occluded.yaml"


def _tiny(root: Path) -> list[str]:
    """Overrides that run the STADO config on the tiny set within seconds."""
    return [f"data.root={root}", "data.options.preset=tiny", "data.input_size=[96,128]", "data.batch_size=4",
            "data.num_workers=0", "train.device=cpu", "eval.options.max_videos=1"]


@pytest.fixture(scope="module")
def trained(tiny_synth, tmp_path_factory):
    run = tmp_path_factory.mktemp("stado") / "run"
    torch.set_num_threads(1)
    rc = main(["train", str(CONFIG), *_tiny(tiny_synth), "train.epochs=1", "train.val_every=0", "train.warmup_iters=0",
               f"train.output_dir={run}"])
    assert rc == 0
    return run


def test_train_writes_a_stado_checkpoint_with_mask_supervision(trained, capsys) -> None:
    ckpt = torch.load(trained / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["config"]["model"]["name"] == "stado"
    assert ckpt["config"]["data"]["options"]["occlusion"] == 0.5
    assert any(k.startswith("attention.mask_head.") for k in ckpt["model"])
    assert (trained / "best.pt").is_file()


def test_test_writes_the_shared_report(trained, tiny_synth) -> None:
    out = trained / "test"
    assert main(["test", str(CONFIG), *_tiny(tiny_synth), "--checkpoint", str(trained / "last.pt"), "--out", str(out)]) == 0
    metrics = json.loads((out / "report.json").read_text())["metrics"]
    for key in ("frame_mAP", "video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.75", "video_mAP@0.5:0.95"):
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0, key


def test_detect_show_masks_blends_the_masks_into_the_video(trained, tiny_synth, tmp_path, capsys) -> None:
    from stad.data.frames import act_frame_path, read_rgb
    from stad.viz.video import read_video, write_video

    frames = np.stack([read_rgb(act_frame_path(tiny_synth, "video_00001", t)) for t in range(1, 33)])
    video = write_video(tmp_path / "clip.mp4", frames, fps=25)
    common = [str(video), "--checkpoint", str(trained / "last.pt"), "--device", "cpu", "--min-score", "2"]  # no tubes drawn
    assert main(["detect", *common, "--out", str(tmp_path / "plain")]) == 0
    assert main(["detect", *common, "--out", str(tmp_path / "masks"), "--show-masks"]) == 0
    assert "clip_masks.npy" in capsys.readouterr().out
    masks = np.load(tmp_path / "masks" / "clip_masks.npy")
    assert masks.shape == (32, 24, 32) and np.isfinite(masks).all() and masks.min() >= 0 and masks.max() <= 1
    plain = read_video(tmp_path / "plain" / "clip_tubes.mp4").astype(np.float64)
    blended = read_video(tmp_path / "masks" / "clip_tubes.mp4").astype(np.float64)
    assert plain.shape == blended.shape and plain.shape[0] == 32
    assert np.abs(plain - blended).mean() > 10  # the colour map is visible
    assert not (tmp_path / "plain" / "clip_masks.npy").exists()


def test_show_masks_with_a_moc_checkpoint_is_a_clear_error(trained, tmp_path, capsys) -> None:
    ckpt = torch.load(trained / "last.pt", map_location="cpu", weights_only=False)
    ckpt["config"]["model"]["name"] = "moc"
    options = ckpt["config"]["model"]["options"]
    for key in ("attention_form", "temporal", "temporal_kernel", "mask_head_conv", "mask_weight"):
        options.pop(key, None)
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("attention.")}
    torch.save(ckpt, tmp_path / "moc.pt")
    rc = main(["detect", str(tmp_path / "none.mp4"), "--checkpoint", str(tmp_path / "moc.pt"), "--device", "cpu", "--show-masks"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--show-masks needs a model that predicts attention masks" in err and "'moc'" in err and "Traceback" not in err


def test_bad_occlusion_options_are_one_line_errors(tiny_synth, tmp_path, capsys) -> None:
    for override, key in (("data.options.occlusion=1.5", "data.options.occlusion"),
                          ("data.options.occlusion_size=[0.5]", "data.options.occlusion_size"),
                          ("data.options.occluder_maskz=true", "data.options.occluder_maskz")):
        rc = main(["train", str(CONFIG), *_tiny(tiny_synth), override, f"train.output_dir={tmp_path / 'bad'}"])
        assert rc == 2
        assert key in capsys.readouterr().err
