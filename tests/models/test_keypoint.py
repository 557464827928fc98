"""KORSAL key-point detector: cue channels, shapes, losses, decoding, CenterNet weights."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from kornia.color import rgb_to_grayscale
from kornia.metrics import ssim

from stad.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from stad.errors import StadError
from stad.models.keypoint import (
    CUE_CHANNELS,
    KeypointOutputs,
    TemporalCue,
    build_keypoint,
    load_centernet_weights,
    load_keypoint_weights,
    ssim_map,
)
from stad.models.registry import MODELS

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def tiny_keypoint(cue: str = "ssim", num_classes: int = 3, **options):
    opts = {"cue": cue, "width": 0.25, "deformable": False, "head_conv": 16, **options}
    return build_keypoint(SimpleNamespace(backbone="resnet18", num_classes=num_classes, options=opts))


def normalise(rgb01: torch.Tensor) -> torch.Tensor:
    return (rgb01 - MEAN) / STD


def batch_of(image: torch.Tensor, previous: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "image": image,
        "previous": previous,
        "boxes": torch.tensor([[[8.0, 8.0, 40.0, 56.0], [0, 0, 0, 0]], [[20.0, 4.0, 60.0, 30.0], [50.0, 30.0, 90.0, 60.0]]]),
        "labels": torch.tensor([[1, -1], [0, 2]]),
        "mask": torch.tensor([[True, False], [True, True]]),
    }


def test_registry_has_keypoint():
    assert MODELS["keypoint"] is build_keypoint


@pytest.mark.parametrize("cue", ["ssim", "diff", "prev", "none"])
def test_shapes_for_each_cue(cue):
    torch.manual_seed(0)
    model = tiny_keypoint(cue)
    image, previous = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    x = model.network_input(image, previous)
    assert x.shape == (2, 3 + CUE_CHANNELS[cue], 64, 96)
    assert torch.equal(x[:, :3], image)
    out = model.head_outputs(x)
    assert out.heatmap.shape == (2, 3, 16, 24) and out.wh.shape == (2, 2, 16, 24) and out.reg.shape == (2, 2, 16, 24)
    losses = model(batch_of(image, previous))
    assert set(losses) == {"loss", "loss_hm", "loss_wh", "loss_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    dets = model.detect_frames(image, previous, orig_sizes=[(120, 160), None])
    assert len(dets) == 2 and dets[0].boxes.shape == (100, 4) and dets[0].scores.shape == (100,)
    assert (dets[0].boxes[:, 2] >= dets[0].boxes[:, 0]).all() and dets[0].boxes.max() <= 159


def test_ssim_channel_is_kornias_map_and_one_for_identical_frames():
    g = torch.Generator().manual_seed(1)
    current = torch.rand(1, 3, 24, 32, generator=g)
    earlier = (current + 0.2 * torch.rand(1, 3, 24, 32, generator=g)).clamp(0, 1)
    cue = TemporalCue("ssim", window=5)
    got = cue(normalise(current), normalise(earlier))
    want = ssim(rgb_to_grayscale(current), rgb_to_grayscale(earlier), 5, max_val=1.0, eps=0.0)
    assert got.shape == (1, 1, 24, 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got.mean() < 0.99  # the pair differs
    same = cue(normalise(current), normalise(current))
    torch.testing.assert_close(same, torch.ones_like(same), atol=1e-4, rtol=0)


@pytest.mark.parametrize(("shape", "window"), [((2, 1, 64, 80), 7), ((1, 1, 9, 11), 3), ((3, 1, 40, 40), 11)])
def test_ssim_map_equals_kornias(shape, window):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(shape, generator=g)
    y = (0.7 * x + 0.3 * torch.rand(shape, generator=g)).clamp(0, 1)
    torch.testing.assert_close(ssim_map(x, y, window), ssim(x, y, window, max_val=1.0, eps=0.0), atol=2e-6, rtol=1e-5)


def test_diff_and_prev_cues_on_a_hand_made_pair():
    current = torch.full((1, 3, 8, 8), 0.75)
    earlier = torch.full((1, 3, 8, 8), 0.25)
    diff = TemporalCue("diff")(normalise(current), normalise(earlier))
    torch.testing.assert_close(diff, torch.full((1, 1, 8, 8), 0.5), atol=1e-5, rtol=0)
    prev = TemporalCue("prev")(normalise(current), normalise(earlier))
    assert torch.equal(prev, normalise(earlier))
    assert TemporalCue("none")(normalise(current), normalise(earlier)).shape == (1, 0, 8, 8)


def test_bad_options_are_named():
    with pytest.raises(StadError, match="temporal cue must be one of"):
        tiny_keypoint("flow")
    with pytest.raises(StadError, match=r"unknown keypoint option\(s\) \['K'\]"):
        tiny_keypoint(K=7)
    with pytest.raises(StadError, match="odd size"):
        TemporalCue("ssim", window=4)


def test_losses_decrease_on_a_tiny_batch():
    torch.manual_seed(0)
    model = tiny_keypoint("ssim")
    g = torch.Generator().manual_seed(0)
    batch = batch_of(torch.randn(2, 3, 64, 96, generator=g), torch.randn(2, 3, 64, 96, generator=g))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        losses = model(batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        first = first if first is not None else {k: float(v.detach()) for k, v in losses.items()}
    last = {k: float(v.detach()) for k, v in model(batch).items()}
    assert last["loss"] < 0.5 * first["loss"]
    assert last["loss_hm"] < first["loss_hm"] and last["loss_wh"] < first["loss_wh"]


def test_decode_boxes_on_a_hand_made_heatmap():
    model = tiny_keypoint("none", num_classes=2, top_n=3)
    h, w = 16, 24
    heat = torch.full((1, 2, h, w), -10.0)
    heat[0, 1, 3, 5] = 4.0  # class 1 at grid (x=5, y=3)
    heat[0, 0, 10, 20] = 0.0  # class 0 at (20, 10), probability 0.5
    wh = torch.zeros(1, 2, h, w)
    wh[0, :, 3, 5] = torch.tensor([4.0, 6.0])
    wh[0, :, 10, 20] = torch.tensor([2.0, 2.0])
    reg = torch.zeros(1, 2, h, w)
    reg[0, :, 3, 5] = torch.tensor([0.5, 0.25])
    dets = model.decode(KeypointOutputs(heatmap=heat, wh=wh, reg=reg), orig_sizes=[None])[0]
    assert dets.labels[:2].tolist() == [1, 0]
    np.testing.assert_allclose(dets.scores[:2], [torch.sigmoid(torch.tensor(4.0)).item(), 0.5], rtol=1e-6)
    # centre (5.5, 3.25), size (4, 6) grid cells; x4 stride -> input pixels
    np.testing.assert_allclose(dets.boxes[0], [(5.5 - 2) * 4, (3.25 - 3) * 4, (5.5 + 2) * 4, (3.25 + 3) * 4], atol=1e-5)
    np.testing.assert_allclose(dets.boxes[1], [19 * 4, 9 * 4, 21 * 4, 11 * 4], atol=1e-5)
    # to original pixels of a 32x48 video: x * 48 / 24, y * 32 / 16
    orig = model.decode(KeypointOutputs(heatmap=heat, wh=wh, reg=reg), orig_sizes=[(32, 48)])[0]
    np.testing.assert_allclose(orig.boxes[0], [3.5 * 2, 0.25 * 2, 7.5 * 2, 6.25 * 2], atol=1e-5)


def _to_centernet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys of a resnet18 keypoint model -> CenterNet ``ctdet`` resdcn keys (the layout of its release files)."""
    parts = {"bn1": 1, "up": 3, "bn2": 4}
    out = {}
    for key, value in state.items():
        if key.startswith("backbone.body."):
            out[key[len("backbone.body."):]] = value
        elif key.startswith("neck.stages."):
            stage, part, rest = key[len("neck.stages."):].split(".", 2)
            if part == "conv":
                rest = rest[len("conv."):] if rest.startswith("conv.") else "conv_offset_mask." + rest[len("offset_mask."):]
                out[f"deconv_layers.{6 * int(stage)}.{rest}"] = value
            else:
                out[f"deconv_layers.{6 * int(stage) + parts[part]}.{rest}"] = value
        elif key.startswith("head."):
            out[key[len("head."):]] = value
        else:
            raise AssertionError(key)
    return out


@pytest.mark.parametrize("cue_init", ["mean", "zero"])
def test_centernet_checkpoint_loads_with_cue_channels(tmp_path, cue_init):
    torch.manual_seed(0)
    rgb_only = tiny_keypoint("none", num_classes=3, deformable=True)
    for p in rgb_only.parameters():  # distinct values everywhere
        p.data.normal_()
    centernet = {"module." + k: v for k, v in _to_centernet_keys(rgb_only.state_dict()).items()}
    assert "deconv_layers.0.conv_offset_mask.weight" in {k[7:] for k in centernet} and "reg.2.bias" in {k[7:] for k in centernet}

    model = tiny_keypoint("ssim", num_classes=3, deformable=True)
    left = load_centernet_weights(model, centernet, cue_init=cue_init)
    assert left == []
    stem, source_stem = model.backbone.body.conv1.weight, rgb_only.backbone.body.conv1.weight  # [C0, 4, 7, 7] / [C0, 3, 7, 7]
    assert torch.equal(stem[:, :3], source_stem)
    want = source_stem.mean(dim=1) if cue_init == "mean" else torch.zeros_like(source_stem[:, 0])
    torch.testing.assert_close(stem[:, 3], want)
    for key in ("head.hm.2.weight", "head.reg.0.bias", "neck.stages.1.conv.offset_mask.weight", "backbone.body.layer3.0.bn1.running_var"):
        assert torch.equal(model.state_dict()[key], rgb_only.state_dict()[key]), key

    # a COCO detector (80 classes) into a 3-class model: the last hm layer keeps its initial values
    coco = dict(centernet)
    coco["module.hm.2.weight"] = torch.randn(80, *coco["module.hm.2.weight"].shape[1:])
    coco["module.hm.2.bias"] = torch.randn(80)
    fresh = tiny_keypoint("diff", num_classes=3, deformable=True)
    before = fresh.head.hm[2].weight.clone()
    path = tmp_path / "ctdet_coco.pth"
    torch.save({"epoch": 140, "state_dict": coco}, path)
    assert load_keypoint_weights(fresh, path, backbone="resnet18") == "centernet"
    assert torch.equal(fresh.head.hm[2].weight, before)
    assert torch.equal(fresh.head.wh[0].weight, rgb_only.head.wh[0].weight)


def test_centernet_checkpoint_with_wrong_layout_is_an_error():
    model = tiny_keypoint("ssim", deformable=True)
    bad = _to_centernet_keys(tiny_keypoint("none", deformable=True).state_dict())
    bad["extra_layer.weight"] = torch.zeros(1)
    with pytest.raises(StadError, match="extra_layer"):
        load_centernet_weights(model, bad)
    plain = _to_centernet_keys(tiny_keypoint("none", deformable=False).state_dict())
    with pytest.raises(StadError, match="does not fit the model"):
        load_centernet_weights(model, plain)
