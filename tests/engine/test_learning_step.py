"""Learning test (ARCHITECTURE.md §6): STEP fits the keyframes of a tiny synthetic AVA set in a few CPU minutes.

A divisor-8 STEP at 64x64 (34 proposals, 3 steps, temporal extension: every mechanism) trains on the 9 training
keyframes of 3 videos; the AVA frame-mAP@0.5 on those keyframes must rise far above the untrained model's.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stad.cli import main
from stad.config import config_from_dict
from stad.engine.families.keyframe import FAMILY
from stad.engine.runner import make_evaluator, train_from_config
from stad.engine.train import seed_everything
from stad.models.registry import build_model

EPOCHS = 40


@pytest.mark.slow
def test_step_learns_the_training_keyframes(tmp_path):
    root = tmp_path / "ava"
    assert main(["synth", "--preset", "tiny", "--videos", "4", "--frames", "91", "--layout", "ava", "--out", str(root),
                 "--no-progress"]) == 0
    cfg = config_from_dict({
        "data": {"kind": "synthetic", "root": str(root), "options": {"preset": "tiny"}, "input_size": [64, 64],
                 "batch_size": 3, "num_workers": 0, "augment": False},
        "model": {"name": "step", "backbone": "i3d",
                  "options": {"channel_divisor": 8, "fc_dim": 16, "bottleneck_mid": 32, "bottleneck_out": 128, "pool_size": 4}},
        "train": {"epochs": EPOCHS, "optimizer": "adam", "lr": 1e-3, "scheduler": "warmup_cosine", "warmup_iters": 10,
                  "warmup_factor": 0.1, "seed": 0, "device": "cpu", "val_every": 0, "output_dir": str(tmp_path / "run")},
        "eval": {"subset": "train", "batch_size": 9},
    })
    torch.set_num_threads(1)
    data = FAMILY.load_data(cfg, progress=False)
    resolved = FAMILY.resolve_model_config(cfg, data)
    evaluate = make_evaluator(resolved, data)
    seed_everything(0)
    untrained = evaluate(build_model(resolved.model), None, torch.device("cpu"))

    result = train_from_config(cfg)
    model = build_model(resolved.model)
    model.load_state_dict(torch.load(result.last_checkpoint, weights_only=True)["model"])
    trained = evaluate(model, None, torch.device("cpu"))
    print(f"untrained {untrained}\ntrained   {trained}")
    assert max(untrained.values()) < 0.02  # measured 0.0 (seeds 0, 1, 2)
    assert trained["frame_mAP"] > 0.1  # step 3, measured 0.20 (seed 0)
    assert trained["frame_mAP/step1"] > 0.15  # measured 0.30
