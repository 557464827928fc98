"""Inference runner: rolling per-frame feature reuse equals recomputing every window; windows; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stad.config import ModelConfig
from stad.engine.families.tubelet import TubeletInferenceConfig, detect_video_tubelets, link_predictions
from stad.engine.infer import read_source
from stad.errors import StadError
from stad.models.moc import build_moc


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=3, options={"K": 3, "width": 0.25, "deformable": False, "head_conv": 16, "wh_head_conv": 8, "top_n": 10})
    return build_moc(cfg).eval()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(11, 40, 56, 3), dtype=np.uint8)  # T=11 frames of 40x56


def _run(model, frames, **kw) -> object:
    cfg = TubeletInferenceConfig(input_size=(64, 64), **kw)
    return detect_video_tubelets(model, iter(frames), orig_size=frames.shape[1:3], device="cpu", cfg=cfg)


def test_one_window_per_start_frame_with_boxes_in_original_pixels(model, frames):
    tubelets = _run(model, frames)
    T, K = len(frames), model.K
    assert sorted(set(tubelets.start.tolist())) == list(range(1, T - K + 2))
    assert len(tubelets) == (T - K + 1) * model.top_n
    assert tubelets.boxes.shape[1:] == (K, 4)
    assert tubelets.boxes[..., 0::2].max() <= 55 and tubelets.boxes[..., 1::2].max() <= 39
    assert (tubelets.boxes[..., 2] >= tubelets.boxes[..., 0]).all()


@pytest.mark.parametrize("chunk,batch", [(1, 1), (4, 3), (32, 8)])
def test_feature_reuse_equals_recomputing_every_window(model, frames, chunk, batch):
    reference = _run(model, frames, reuse_features=False, frame_chunk=5, window_batch=2)
    reused = _run(model, frames, reuse_features=True, frame_chunk=chunk, window_batch=batch)
    np.testing.assert_array_equal(reused.start, reference.start)
    np.testing.assert_array_equal(reused.label, reference.label)
    np.testing.assert_allclose(reused.score, reference.score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reused.boxes, reference.boxes, rtol=1e-4, atol=1e-3)


def test_flip_test_time_augmentation_changes_scores_but_keeps_the_layout(model, frames):
    plain, flipped = _run(model, frames), _run(model, frames, flip=True)
    assert flipped.boxes.shape == plain.boxes.shape
    assert not np.allclose(flipped.score, plain.score)
    again = _run(model, frames, flip=True, reuse_features=False)
    np.testing.assert_allclose(flipped.score, again.score, rtol=1e-5, atol=1e-6)


def test_too_short_video_and_wrong_frame_size_are_errors(model, frames):
    with pytest.raises(StadError, match="fewer than the tubelet length K=3"):
        _run(model, frames[:2])
    with pytest.raises(StadError, match="frame 1 has size"):
        detect_video_tubelets(model, iter(frames), orig_size=(10, 10), device="cpu")


def test_linking_gives_tubes_and_frame_detections(model, frames):
    tubelets = _run(model, frames)
    preds = link_predictions({"v": tubelets}, num_classes=3, nframes={"v": len(frames)})
    assert preds.videos == ["v"]
    assert len(preds.frame_detections) == len(tubelets) * model.K
    for tube in preds.tubes["v"]:
        assert tube.boxes.shape[1] == 6 and 1 <= tube.boxes[:, 0].min() and tube.boxes[:, 0].max() <= len(frames)


def test_read_source_reads_frame_folders_and_names_bad_input(tmp_path, frames):
    from stad.data.frames import write_jpeg

    for i, frame in enumerate(frames[:4], start=1):
        write_jpeg(tmp_path / "clip" / f"{i:05d}.jpg", frame)
    video, fps = read_source(tmp_path / "clip")
    assert video.shape == (4, 40, 56, 3) and fps == 25.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(StadError, match="no image files"):
        read_source(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_source(tmp_path / "missing.mp4")
