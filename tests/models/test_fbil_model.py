"""FBIL / ACAR-Net detector (stad.models.fbil): loss, RoIs of padded batches, detections as FBIL writes them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stad.errors import StadError
from stad.models.fbil import apply_jitter, mask_seed, pose_probabilities
from stad.models.registry import build_model

HEAD_OPTIONS = {
    "fbil": {"reduce_dim": 16, "num_heads": 4, "ffn_dim": 32, "e_depth": 1, "l_depth": 1, "c_depth": 1},
    "acar": {"reduce_dim": 16, "hidden_dim": 16, "depth": 1},
    "linear": {"reduce_dim": 16},
}


def tiny(head: str = "fbil", **options):
    cfg = SimpleNamespace(name="fbil", num_classes=5, weights=None, options={
        "backbone": "slowfast_tiny", "head": head, "head_options": HEAD_OPTIONS[head], "pose_classes": 3, **options})
    torch.manual_seed(0)
    return build_model(cfg)


def batch(sizes=((64, 96), (64, 80)), boxes_per_clip=(2, 1)):
    """Clips of different widths zero-padded to the largest (as collate_keyframes_padded does)."""
    B, T = len(sizes), 8  # noqa: N806
    H, W = max(h for h, _ in sizes), max(w for _, w in sizes)  # noqa: N806
    clip = torch.zeros(B, T, 3, H, W)
    n = max(boxes_per_clip)
    boxes, labels, mask = torch.zeros(B, n, 4), torch.zeros(B, n, 5), torch.zeros(B, n, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    for b, ((h, w), count) in enumerate(zip(sizes, boxes_per_clip)):
        clip[b, :, :, :h, :w] = torch.randn(T, 3, h, w, generator=g)
        for i in range(count):
            x1, y1 = 4 + 10 * i, 6 + 5 * i
            boxes[b, i] = torch.tensor([x1, y1, x1 + 20, y1 + 40])
            labels[b, i, i % 3] = 1
            labels[b, i, 3 + i % 2] = 1
            mask[b, i] = True
    return {"clip": clip, "boxes": boxes, "labels": labels, "mask": mask,
            "unpadded_size": torch.tensor(sizes), "video": [f"v{b}" for b in range(B)],
            "timestamp": torch.arange(B) + 2}


@pytest.mark.parametrize("head", ["fbil", "acar", "linear"])
def test_training_loss_is_the_pose_softmax_bce_and_reaches_every_parameter(head):
    model = tiny(head, jitter=0.0).train()
    data = batch()
    losses = model(data)
    assert losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_pose_probabilities_softmax_group_then_sigmoids():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.0, -1.0]])
    p = pose_probabilities(logits, 3)
    assert torch.allclose(p[0, :3].sum(), torch.tensor(1.0))
    assert torch.allclose(p[0, 3:], torch.sigmoid(torch.tensor([0.0, -1.0])))


def test_jitter_keeps_fbils_clamping():
    """FBIL.md §7 fact 17: j = (.05, -.05, .05, .05) on [.1, .0, .5, .98] -> [0.12, -0.049, 0.52, 1.0]."""
    out = apply_jitter(torch.tensor([[0.1, 0.0, 0.5, 0.98]]), torch.tensor([[0.05, -0.05, 0.05, 0.05]]))
    assert torch.allclose(out, torch.tensor([[0.12, -0.049, 0.52, 1.0]]), atol=1e-6)


def test_a_batch_without_boxes_gives_a_zero_loss_with_gradients():
    model = tiny().train()
    data = batch()
    data["mask"][:] = False
    loss = model(data)["loss"]
    assert float(loss.detach()) == 0.0
    loss.backward()  # every parameter is in the graph (DDP needs it)


def test_detections_every_class_of_every_box_rounded_like_fbil():
    model = tiny().eval()
    data = batch()
    (per_clip,) = model.detect(data)
    assert [len(d) for d in per_clip] == [2 * 5, 1 * 5]
    for d in per_clip:
        assert np.array_equal(d.labels, np.tile(np.arange(5), len(d) // 5))
        assert np.allclose(d.scores, np.round(d.scores, 3)) and np.allclose(d.boxes, np.round(d.boxes, 3))
    # boxes normalised by each clip's own (unpadded) size: clip 1 is 80 wide
    assert np.allclose(per_clip[1].boxes[0], np.round([4 / 80, 6 / 64, 24 / 80, 46 / 64], 3))


def test_evaluation_does_not_depend_on_the_batch():
    """Masks are seeded per keyframe, so a clip scores the same alone or padded into a batch."""
    model = tiny().eval()
    data = batch()
    (together,) = model.detect(data)
    alone = {k: (v[1:] if isinstance(v, torch.Tensor) else v[1:]) for k, v in data.items()}
    alone["clip"] = alone["clip"][..., :80]  # its own size, no padding
    (single,) = model.detect(alone)
    assert np.allclose(single[0].scores, together[1].scores, atol=2e-3)
    assert mask_seed("v1", 3) == mask_seed("v1", 3) != mask_seed("v1", 4)


def test_options_are_checked():
    with pytest.raises(StadError, match="unknown fbil option"):
        tiny(stride=2)
    cfg = SimpleNamespace(name="fbil", num_classes=5, weights=None, options={"backbone": "slowfast_tiny", "head": "mlp"})
    with pytest.raises(StadError, match="option head"):
        build_model(cfg)
    with pytest.raises(StadError, match="pose_classes"):
        tiny(pose_classes=9)
