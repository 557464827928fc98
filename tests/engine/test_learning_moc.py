"""Learning test (ARCHITECTURE.md §6): on the tiny synthetic set, about two CPU minutes of MOC training take the
frame-mAP of the training videos from the untrained model's 0 to far above it.

The tiny set has 6 training and 2 test videos: too few to generalise, so this checks that the whole training path
(data, augmentation, targets, losses, optimiser, decoding, linking, evaluation) learns. Generalisation is measured
on the larger presets (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stad.engine.families.tubelet import FAMILY
from stad.engine.runner import make_evaluator, train_from_config
from stad.engine.train import seed_everything
from stad.models.registry import build_model
from tests.conftest import tiny_moc_config

EPOCHS = 40  # 12 steps of 4 clips each; about 2 minutes on 2 CPU cores


@pytest.mark.slow
def test_moc_learns_on_the_tiny_synthetic_set(tiny_synth, tmp_path):
    cfg = tiny_moc_config(tiny_synth, tmp_path / "run", epochs=EPOCHS, scheduler="cosine", warmup_iters=10)
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
    assert trained["frame_mAP"] > 0.15  # measured 0.24 (seed 0)
    assert trained["video_mAP@0.2"] > 0.2  # measured 0.31
