"""The MOC detector end to end: losses, detection, streaming features, learning, builders."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stad.boxes import box_iou_paired
from stad.errors import StadError
from stad.models.backbones import DeconvNeck, resnet18
from stad.models.decode import decode_moc
from stad.models.heads.moc import MOCHead
from stad.models.moc import ClipMeta, MOCDetector, build_moc
from stad.models.registry import MODELS, build_model

K = 3


def _cfg(backbone: str = "resnet18", **options) -> SimpleNamespace:
    return SimpleNamespace(name="moc", backbone=backbone, num_classes=3, weights=None, options={"K": K, "head_conv": 16, **options})


def _batch(seed: int = 0, B: int = 2) -> dict:  # noqa: N803
    g = torch.Generator().manual_seed(seed)
    xy = 4 + torch.rand(B, 2, 1, 2, generator=g) * 24
    wh = 12 + torch.rand(B, 2, 1, 2, generator=g) * 20
    step = torch.arange(K, dtype=torch.float32).view(1, 1, K, 1) * 2  # actors move right/down 2 px per frame
    boxes = torch.cat((xy + step, xy + wh + step), dim=-1)  # [B, 2, K, 4]
    return {
        "clip": torch.randn(B, K, 3, 64, 64, generator=g),
        "boxes": boxes,
        "labels": torch.tensor([[0, 2], [1, 0]])[:B],
        "valid": torch.tensor([[True, True], [True, False]])[:B],
        "visibility": torch.ones(B, 2, K),
        "start": torch.tensor([1, 5])[:B],
        "orig_size": torch.tensor([[120, 160], [240, 320]])[:B],
    }


@pytest.mark.parametrize("backbone", ["resnet18", "dla34"])
def test_forward_losses_and_detect_shapes(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_moc(_cfg(backbone))
    batch = _batch()
    losses = model(batch)
    assert set(losses) == {"loss", "loss_hm", "loss_mov", "loss_wh"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert float(losses["loss"].detach()) > 0
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    tubelets = model.detect(batch)
    assert len(tubelets) == 2
    assert tubelets[1].boxes.shape == (100, K, 4) and tubelets[1].start.tolist() == [5] * 100
    assert np.isfinite(tubelets[1].boxes).all()
    assert tubelets[1].boxes[..., 0::2].max() <= 319 and tubelets[1].boxes[..., 1::2].max() <= 239


def test_empty_targets_and_box_mask_key() -> None:
    torch.manual_seed(0)
    model = build_moc(_cfg())
    batch = _batch()
    del batch["valid"]
    for key in ("mask", "box_mask"):  # stad.data.datasets.collate_tubelets names it "mask"
        batch[key] = torch.zeros(2, 2, dtype=torch.bool)
        losses = model(batch)
        assert losses["loss_mov"].item() == 0.0 and losses["loss_wh"].item() == 0.0
        assert torch.isfinite(losses["loss_hm"]) and losses["loss_hm"].item() > 0
        del batch[key]
    no_slots = {**batch, "boxes": torch.zeros(2, 0, K, 4), "labels": torch.zeros(2, 0, dtype=torch.long),
                "mask": torch.zeros(2, 0, dtype=torch.bool)}
    losses = model(no_slots)  # a collated batch whose clips have no actor at all
    assert losses["loss_mov"].item() == 0.0 and torch.isfinite(losses["loss"])
    with pytest.raises(StadError, match="none of \\['mask', 'valid', 'box_mask'\\]"):
        model(batch)


def test_batched_equals_per_sample_and_streaming_features() -> None:
    """Compared on the head outputs: with random weights the heat-map is nearly flat, so float noise of 1e-9
    may flip which of two near-equal neighbours is a 3x3 peak; decoding itself is a pure function."""
    torch.manual_seed(0)
    model = build_moc(_cfg()).eval()
    batch = _batch()
    with torch.no_grad():
        both = model._head_outputs(batch["clip"])
        for b in range(2):
            one = model._head_outputs(batch["clip"][b : b + 1])
            for name in ("heatmap", "movement", "wh"):
                torch.testing.assert_close(getattr(one, name), getattr(both, name)[b : b + 1], rtol=1e-4, atol=1e-5)
        # rolling buffer: features of T = 4 frames computed once, windows [0, 3) and [1, 4)
        frames = torch.randn(4, 3, 64, 64)
        feats = model.frame_features(frames)  # [T, C, h, w]
        assert feats.shape == (4, 64, 16, 16)
        windows = torch.stack((feats[0:3], feats[1:4]))  # [2, K, C, h, w]
        direct = model._head_outputs(torch.stack((frames[0:3], frames[1:4])))
        streamed = model.head(windows)
        for name in ("heatmap", "movement", "wh"):
            torch.testing.assert_close(getattr(streamed, name), getattr(direct, name), rtol=1e-4, atol=1e-5)
    metas = [ClipMeta(start=1, orig_size=(64, 64)), ClipMeta(start=2, orig_size=(128, 64))]
    tubelets = model.detect_from_features(windows, metas)
    assert [t.start[0] for t in tubelets] == [1, 2] and tubelets[1].boxes.shape == (100, K, 4)
    assert tubelets[1].boxes[..., 1::2].max() <= 127
    with pytest.raises(ValueError, match="got 1 clip metas for 2 clips"):
        model.detect_from_features(windows, metas[:1])


def test_flip_testing_averages_mirrored_heatmap_and_sizes() -> None:
    torch.manual_seed(0)
    model = build_moc(_cfg()).eval()
    feats = torch.randn(1, K, 64, 8, 8)
    mirrored = torch.randn(1, K, 64, 8, 8)
    with torch.no_grad():
        plain, flipped = model.head(feats), model.head(mirrored)
        heat = (torch.sigmoid(plain.heatmap) + torch.sigmoid(flipped.heatmap).flip(-1)) / 2
        want = decode_moc(heat, plain.movement, (plain.wh + flipped.wh.flip(-1)) / 2, top_n=100)
    got = model.detect_from_features(feats, [ClipMeta(start=3)], flip_features=mirrored)[0]
    np.testing.assert_allclose(got.score, want.scores[0].double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(got.boxes, want.boxes[0].double().numpy() * 4, rtol=1e-5, atol=1e-5)
    unflipped = model.detect_from_features(feats, [ClipMeta(start=3)])[0]
    assert not np.allclose(unflipped.score, got.score)


def test_detect_uses_the_batch_affine() -> None:
    torch.manual_seed(0)
    model = build_moc(_cfg()).eval()
    batch = _batch(B=1)
    plain = model.detect(batch)[0]  # orig 120x160 from a 64x64 input: x * 160/64, y * 120/64
    batch["affine"] = torch.tensor([[64 / 160, 0.0, 64 / 120, 0.0]], dtype=torch.float64)
    same = model.detect(batch)[0]
    np.testing.assert_allclose(same.boxes, plain.boxes, rtol=1e-6, atol=1e-6)
    batch["affine"] = torch.tensor([[0.5, 4.0, 0.5, -2.0]], dtype=torch.float64)  # a letterbox-like placement
    shifted = model.detect(batch)[0]
    unclipped = (plain.boxes[..., 0] > 0) & (plain.boxes[..., 0] < 100)
    want = np.clip((plain.boxes[..., 0][unclipped] * 64 / 160 - 4) / 0.5, 0, 159)  # x0 = (x_in - bx) / ax, clipped
    np.testing.assert_allclose(shifted.boxes[..., 0][unclipped], want, rtol=1e-5, atol=1e-4)


def test_fused_head_equals_separate_branches() -> None:
    torch.manual_seed(0)
    head = MOCHead(in_channels=8, num_classes=4, K=K, head_conv=16, wh_head_conv=8)
    feats = torch.randn(2, K, 8, 6, 7)
    out = head(feats)
    stacked = feats.reshape(2, K * 8, 6, 7)
    torch.testing.assert_close(out.heatmap, head.center(stacked))
    torch.testing.assert_close(out.movement, head.movement(stacked))
    per_frame = torch.cat([head.box(feats[:, k]) for k in range(K)], dim=1)  # w_0, h_0, w_1, ...
    torch.testing.assert_close(out.wh, per_frame)
    assert torch.allclose(head.center[2].bias, torch.full((4,), -2.19))


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    model = build_moc(_cfg(deformable=False))
    batch = _batch(B=1)
    batch["clip"] = batch["clip"][..., :48, :48]  # actors lie inside 48x48
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(5):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    assert history[-1] < 0.7 * history[0], history


def test_bf16_autocast_runs_the_deformable_convs_in_float32() -> None:
    torch.manual_seed(0)
    model = build_moc(_cfg())
    batch = _batch(B=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(batch)
    assert losses["loss"].dtype == torch.float32 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert torch.isfinite(model.neck.stages[0].conv.offset_mask.weight.grad).all()
    reference = model(batch)["loss"].item()
    assert losses["loss"].item() == pytest.approx(reference, rel=0.05)


def test_overfits_one_clip_and_decodes_its_tubelet() -> None:
    """Targets and decoding agree: after fitting one clip, the top tubelet is the moving actor's."""
    torch.manual_seed(0)
    model = build_moc(_cfg(deformable=False, head_conv=32))
    boxes = torch.tensor([[[[12.0, 16, 36, 44], [16, 16, 40, 44], [20, 16, 44, 44]]]])  # moves 4 px right per frame
    clip = torch.full((1, K, 3, 64, 64), -1.0)
    for k in range(K):
        x1, y1, x2, y2 = boxes[0, 0, k].int().tolist()
        clip[0, k, :, y1:y2, x1:x2] = 1.0
    batch = {"clip": clip, "boxes": boxes, "labels": torch.tensor([[1]]), "mask": torch.tensor([[True]])}
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(80):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    top = model.detect(clip, [ClipMeta(start=1, orig_size=(64, 64))])[0]
    assert top.label[0] == 1 and top.score[0] > 0.5 and top.score[1] < 0.5 * top.score[0]
    iou = box_iou_paired(top.boxes[0], boxes[0, 0].numpy(), plus_one=False)
    assert (iou > 0.6).all(), (iou, top.boxes[0])


def test_constructor_from_parts_and_plain_conv_option() -> None:
    backbone = resnet18()
    neck = DeconvNeck(512, filters=(32, 16, 8), deformable=False)
    head = MOCHead(in_channels=8, num_classes=2, K=2, head_conv=8)
    model = MOCDetector(backbone=backbone, neck=neck, head=head, num_classes=2, K=2, top_n=5)
    assert not any("offset_mask" in k for k in model.state_dict())
    model.eval()
    out = model.detect(torch.randn(1, 2, 3, 32, 32))
    assert out[0].boxes.shape == (5, 2, 4)
    with pytest.raises(ValueError, match="head built for K=2"):
        MOCDetector(backbone=backbone, neck=neck, head=head, num_classes=2, K=3)
    with pytest.raises(ValueError, match=r"clip must have shape \(B, K=2"):
        model.detect(torch.randn(1, 3, 3, 32, 32))


def test_builder_errors_and_registry() -> None:
    assert MODELS["moc"] is build_moc
    with pytest.raises(StadError, match="unknown MOC option"):
        build_moc(_cfg(head_cnv=3))
    with pytest.raises(StadError, match="backbone must be one of"):
        build_moc(_cfg("vgg16"))
    with pytest.raises(StadError, match="unknown model"):
        build_model(SimpleNamespace(name="nope"))
    model = build_model(_cfg(wh_head_conv=8, top_n=7))
    assert model.head.box[0].out_channels == 8 and model.top_n == 7 and model.K == K
