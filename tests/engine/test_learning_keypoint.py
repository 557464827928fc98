"""Learning test (ARCHITECTURE.md §6) of the KORSAL key-point detector: a short CPU training on the tiny synthetic set
takes the frame-mAP and video-mAP (online tubes) of its training videos from the untrained model's ~0 far above.

Like the MOC learning test this checks that the whole frame-level path learns (FrameDataset pairs with the SSIM cue,
augmentation, CenterNet targets and losses, decoding, online linking, evaluation); generalisation is measured on the
larger presets by the lead's ablation runs (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stad.config import config_from_dict
from stad.engine.families.frame import FAMILY
from stad.engine.runner import make_evaluator, train_from_config
from stad.engine.train import seed_everything
from stad.models.registry import build_model

EPOCHS = 20  # 180 steps of 16 frames; about 3.5 minutes on one loaded CPU core


@pytest.mark.slow
def test_keypoint_learns_on_the_tiny_synthetic_set(tiny_synth, tmp_path):
    torch.set_num_threads(1)
    cfg = config_from_dict({
        "data": {"kind": "synthetic", "root": str(tiny_synth), "options": {"preset": "tiny", "expand": False},
                 "input_size": [96, 128], "batch_size": 16, "num_workers": 0},
        "model": {"name": "keypoint", "backbone": "resnet18",
                  "options": {"cue": "ssim", "gap": 2, "width": 0.25, "deformable": False, "head_conv": 32, "top_n": 20}},
        "train": {"epochs": EPOCHS, "lr": 4e-3, "scheduler": "cosine", "warmup_iters": 10, "seed": 0, "device": "cpu",
                  "val_every": 0, "output_dir": str(tmp_path / "run")},
        "eval": {"video_ious": [0.2, 0.5], "options": {"min_length": 4}},
    })
    data = FAMILY.load_data(cfg)
    resolved = FAMILY.resolve_model_config(cfg, data)
    on_train_videos = dataclasses.replace(resolved, eval=dataclasses.replace(resolved.eval, subset="train"))
    evaluate = make_evaluator(on_train_videos, data)

    seed_everything(0)
    untrained = evaluate(build_model(resolved.model), None, torch.device("cpu"))
    result = train_from_config(cfg)
    model = build_model(resolved.model)
    model.load_state_dict(torch.load(result.last_checkpoint, weights_only=True)["model"])
    trained = evaluate(model, None, torch.device("cpu"))

    print(f"untrained {untrained}\ntrained   {trained}")
    assert untrained["frame_mAP"] < 0.02 and untrained["video_mAP@0.2"] < 0.05
    assert trained["frame_mAP"] > 0.15  # measured 0.27 (seed 0)
    assert trained["video_mAP@0.2"] > 0.25  # measured 0.49
