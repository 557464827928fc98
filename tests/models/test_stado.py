"""The STADO detector: losses with and without mask supervision, learning, streaming, MOC weights, builder."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stad.errors import StadError
from stad.models.moc import build_moc
from stad.models.registry import MODELS, build_model
from stad.models.stado import STADODetector, attention_keys, build_stado, load_moc_state_dict, load_stado_weights

K = 3
SMALL = {"K": K, "width": 0.25, "deformable": False, "head_conv": 16, "wh_head_conv": 8}


def _cfg(name: str = "stado", weights: str | None = None, **options) -> SimpleNamespace:
    extra = {"mask_head_conv": 8} if name == "stado" else {}
    return SimpleNamespace(name=name, backbone="resnet18", num_classes=3, weights=weights, options={**SMALL, **extra, **options})


def _batch(seed: int = 0, B: int = 2, size: int = 64) -> dict:  # noqa: N803
    g = torch.Generator().manual_seed(seed)
    xy = 4 + torch.rand(B, 2, 1, 2, generator=g) * 16
    wh = 12 + torch.rand(B, 2, 1, 2, generator=g) * 16
    step = torch.arange(K, dtype=torch.float32).view(1, 1, K, 1) * 2
    boxes = torch.cat((xy + step, xy + wh + step), dim=-1)  # [B, 2, K, 4]
    visible = torch.zeros(B, K, size // 4, size // 4)
    for b in range(B):
        x1, y1, x2, y2 = (boxes[b, 0, 0] / 4).round().long().tolist()
        visible[b, :, y1:y2, x1:x2] = 1.0
    return {
        "clip": torch.randn(B, K, 3, size, size, generator=g),
        "boxes": boxes,
        "labels": torch.tensor([[0, 2], [1, 0]])[:B],
        "mask": torch.tensor([[True, True], [True, False]])[:B],
        "visible_mask": visible,
        "start": torch.tensor([1, 5])[:B],
        "orig_size": torch.tensor([[64, 64], [128, 128]])[:B],
    }


def test_registered_and_built_from_options() -> None:
    assert MODELS["stado"] is build_stado
    model = build_model(_cfg(attention_form="multiplicative", temporal=True, mask_weight=0.5))
    assert isinstance(model, STADODetector)
    assert model.attention.form == "multiplicative" and model.attention.temporal is not None
    assert model.mask_weight == 0.5 and model.mask_target_stride == 4
    assert build_stado(_cfg(mask_weight=0)).mask_target_stride == 4  # targets still logged


@pytest.mark.parametrize(("options", "match"), [
    ({"attention": "residual"}, "unknown STADO option"),
    ({"attention_form": "gated"}, "attention_form"),
    ({"mask_weight": -1}, "mask_weight"),
    ({"temporal_kernel": 4}, "temporal_kernel"),
])
def test_bad_options_are_errors(options, match) -> None:
    with pytest.raises(StadError, match=match):
        build_stado(_cfg(**options))


def test_losses_add_the_weighted_mask_loss() -> None:
    torch.manual_seed(0)
    model = build_stado(_cfg(mask_weight=2.0))
    losses = model(_batch())
    assert set(losses) == {"loss", "loss_hm", "loss_mov", "loss_wh", "loss_mask"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    moc_part = losses["loss_hm"] + losses["loss_mov"] + 0.1 * losses["loss_wh"]
    torch.testing.assert_close(losses["loss"], moc_part + 2.0 * losses["loss_mask"])
    assert 0.3 < float(losses["loss_mask"].detach()) < 1.5  # BCE near log(2) at init


def test_mask_targets_are_required_when_supervised_and_checked() -> None:
    model = build_stado(_cfg())
    batch = _batch()
    del batch["visible_mask"]
    with pytest.raises(StadError, match="visible_mask"):
        model(batch)
    wrong = _batch()
    wrong["visible_mask"] = torch.zeros(2, K, 8, 8)
    with pytest.raises(StadError, match="shape"):
        model(wrong)


def test_gradient_reaches_the_mask_head_with_and_without_supervision() -> None:
    torch.manual_seed(0)
    model = build_stado(_cfg(mask_weight=0.0))
    batch = _batch()
    del batch["visible_mask"]
    losses = model(batch)
    assert float(losses["loss_mask"]) == 0.0
    losses["loss"].backward()  # detection losses only
    head = model.attention.mask_head
    assert head[0].weight.grad.abs().sum() > 0 and head[2].weight.grad.abs().sum() > 0

    model.zero_grad()
    model.mask_weight = 1.0
    model(_batch())["loss_mask"].backward()  # the mask loss alone
    assert head[2].weight.grad.abs().sum() > 0
    assert model.head.center[0].weight.grad is None or model.head.center[0].weight.grad.abs().sum() == 0


def test_a_few_steps_lower_the_losses_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = build_stado(_cfg(temporal=True))
    batch = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = {k: float(v.detach()) for k, v in model(batch).items()}
    for _ in range(12):
        opt.zero_grad()
        model(batch)["loss"].backward()
        opt.step()
    last = {k: float(v.detach()) for k, v in model(batch).items()}
    assert last["loss"] < 0.7 * first["loss"]
    assert last["loss_mask"] < first["loss_mask"]


@pytest.mark.parametrize("temporal", [False, True])
def test_streaming_with_feature_reuse_equals_recomputing(temporal: bool) -> None:
    from stad.engine.families.tubelet import FrameMaskCollector, TubeletInferenceConfig, detect_video_tubelets

    torch.manual_seed(0)
    model = build_stado(_cfg(temporal=temporal)).eval()
    if temporal:
        with torch.no_grad():
            model.attention.temporal.weight.copy_(torch.tensor([[[0.3, 0.4, 0.3]]]))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 48, 40, 3), dtype=np.uint8)
    results = {}
    for reuse in (True, False):
        cfg = TubeletInferenceConfig(input_size=(64, 64), window_batch=2, frame_chunk=4, reuse_features=reuse)
        masks = FrameMaskCollector()
        tubelets = detect_video_tubelets(model, iter(frames), orig_size=(48, 40), device="cpu", cfg=cfg, masks=masks)
        results[reuse] = (tubelets, masks.masks(6))
    (a, ma), (b, mb) = results[True], results[False]
    assert a.start.tolist() == b.start.tolist() and len(a.start) == 4 * model.top_n
    np.testing.assert_allclose(a.score, b.score, atol=1e-5)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    assert ma.shape == (6, 16, 16) and np.isfinite(ma).all() and (0 <= ma).all() and (ma <= 1).all()
    np.testing.assert_allclose(ma, mb, atol=1e-5)
    # the windows' detections equal detect() on the same clip
    clip_tubelets = model.detect(torch.stack([_preprocess(frames[:K])]))[0]
    np.testing.assert_allclose(clip_tubelets.score, a.score[: model.top_n], atol=1e-5)


def _preprocess(frames: np.ndarray) -> torch.Tensor:
    from stad.engine.families.tubelet import TubeletInferenceConfig
    from stad.engine.infer import preprocess_frames

    return preprocess_frames(frames, TubeletInferenceConfig(input_size=(64, 64)))


def test_masks_need_a_mask_model() -> None:
    from stad.engine.families.tubelet import FrameMaskCollector, detect_video_tubelets

    moc = build_moc(_cfg(name="moc")).eval()
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(StadError, match="predicts no attention masks"):
        detect_video_tubelets(moc, iter(frames), orig_size=(32, 32), device="cpu", masks=FrameMaskCollector())


def test_moc_weights_load_into_stado_with_the_attention_left_at_init(tmp_path, caplog) -> None:
    torch.manual_seed(1)
    moc = build_moc(_cfg(name="moc")).eval()
    torch.manual_seed(2)
    stado = build_stado(_cfg(attention_form="residual")).eval()
    attention_before = {k: v.clone() for k, v in stado.attention.state_dict().items()}
    left = load_moc_state_dict(stado, moc.state_dict())
    assert left == attention_keys(stado) and left and all(k.startswith("attention.") for k in left)
    for key, value in moc.state_dict().items():
        torch.testing.assert_close(stado.state_dict()[key], value)
    for key, value in stado.attention.state_dict().items():
        torch.testing.assert_close(value, attention_before[key])
    # with the residual mask forced to 0 STADO is exactly the loaded MOC
    with torch.no_grad():
        stado.attention.mask_head[2].weight.zero_()
        stado.attention.mask_head[2].bias.fill_(-40.0)
    clip = torch.randn(1, K, 3, 64, 64)
    np.testing.assert_allclose(stado.detect(clip)[0].score, moc.detect(clip)[0].score, atol=1e-6)

    # from a stad MOC checkpoint file through cfg.weights: loaded, and the attention keys are reported
    path = tmp_path / "moc.pt"
    torch.save({"model": moc.state_dict(), "config": {}}, path)
    with caplog.at_level(logging.WARNING, logger="stad.models.stado"):
        built = build_stado(_cfg(weights=str(path)))
    assert "attention module keeps its initialisation" in caplog.text and "attention.mask_head.0.weight" in caplog.text
    torch.testing.assert_close(built.head.center[2].bias, moc.head.center[2].bias)

    # a STADO checkpoint loads whole and strictly
    stado_path = tmp_path / "stado.pt"
    torch.save({"model": stado.state_dict()}, stado_path)
    fresh = build_stado(_cfg())
    assert load_stado_weights(fresh, stado_path, arch="resnet_18") == ("stad", [])
    torch.testing.assert_close(fresh.attention.mask_head[2].bias, stado.attention.mask_head[2].bias)
    temporal = build_stado(_cfg(temporal=True))
    with pytest.raises(StadError, match="missing keys.*attention.temporal"):
        load_stado_weights(temporal, stado_path, arch="resnet_18")


def test_moc_weights_of_another_shape_are_an_error() -> None:
    moc = build_moc(_cfg(name="moc", head_conv=32))
    with pytest.raises(StadError, match="shape mismatches"):
        load_moc_state_dict(build_stado(_cfg()), moc.state_dict())


def test_late_fusion_uses_the_attention() -> None:
    from stad.models.fusion import TwoStreamDetector, stream_maps

    torch.manual_seed(0)
    rgb = build_stado(_cfg()).eval()
    flow = build_moc(_cfg(name="moc", in_chans=6)).eval()
    fused = TwoStreamDetector(rgb=rgb, flow=flow, flow_channels=6).eval()
    frames = torch.randn(K, 9, 64, 64)
    features = fused.frame_features(frames).unsqueeze(0)  # [1, K, C1 + C2, h, w]
    with torch.no_grad():
        rgb_features = rgb.frame_features(frames[:, :3]).unsqueeze(0)
        expected = rgb.head(rgb.attention(rgb_features).features)
        torch.testing.assert_close(rgb.outputs_from_features(rgb_features).heatmap, expected.heatmap)
        assert not torch.allclose(rgb.head(rgb_features).heatmap, expected.heatmap)  # the attention matters
        torch.testing.assert_close(stream_maps(rgb, rgb_features).heat, torch.sigmoid(expected.heatmap.float()))
    assert len(fused.detect_from_features(features)) == 1
