"""MOC losses: focal heat-map loss, masked L1, and the weighted total."""

from __future__ import annotations

import math

import pytest
import torch

from stad.models.heads.moc import MOCOutputs
from stad.models.losses import focal_heatmap_loss, gather_at, masked_l1_loss, moc_losses
from stad.models.matching import build_moc_targets


def test_focal_loss_hand_computed() -> None:
    # one positive (p = 0.8) and one negative at target 0.5 (p = 0.3)
    logits = torch.logit(torch.tensor([0.8, 0.3])).view(1, 1, 1, 2)
    target = torch.tensor([1.0, 0.5]).view(1, 1, 1, 2)
    want = -(math.log(0.8) * 0.2**2 + math.log(0.7) * 0.3**2 * 0.5**4) / 1
    assert float(focal_heatmap_loss(logits, target)) == pytest.approx(want, rel=1e-5)


def test_focal_loss_without_positives_is_not_normalised() -> None:
    logits = torch.logit(torch.tensor([0.2, 0.4])).view(1, 1, 1, 2)
    target = torch.tensor([0.0, 0.9]).view(1, 1, 1, 2)
    want = -(math.log(0.8) * 0.2**2 * 1.0 + math.log(0.6) * 0.4**2 * 0.1**4)
    assert float(focal_heatmap_loss(logits, target)) == pytest.approx(want, rel=1e-5)


def test_focal_loss_near_zero_at_perfect_prediction_and_positive_otherwise() -> None:
    target = torch.zeros(2, 3, 8, 8)
    target[0, 1, 2, 3] = 1.0
    target[0, 1, 2, 4] = 0.6
    target[1, 0, 5, 5] = 1.0
    perfect = torch.where(target == 1, torch.tensor(30.0), torch.tensor(-30.0))
    assert 0 <= float(focal_heatmap_loss(perfect, target)) < 1e-6
    assert float(focal_heatmap_loss(torch.zeros_like(target), target)) > 0.1


def test_masked_l1_and_gather() -> None:
    feature = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).view(2, 4, 3, 3)
    index = torch.tensor([[4, 0], [8, 1]])
    got = gather_at(feature, index)
    assert got.shape == (2, 2, 4)
    assert got[1, 0].tolist() == feature[1, :, 2, 2].tolist()
    per_channel = torch.tensor([[[4, 4, 0, 0]], [[8, 7, 6, 5]]])
    got = gather_at(feature, per_channel)
    assert got[0, 0].tolist() == [feature[0, 0, 1, 1], feature[0, 1, 1, 1], feature[0, 2, 0, 0], feature[0, 3, 0, 0]]
    pred = torch.tensor([[[1.0, 2.0], [5.0, 5.0]]])
    target = torch.tensor([[[0.0, 4.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False]])
    assert float(masked_l1_loss(pred, target, mask)) == pytest.approx(3.0 / (2 + 1e-4))
    assert float(masked_l1_loss(pred, target, torch.zeros(1, 2, dtype=torch.bool))) == 0.0


def _targets() -> object:
    boxes = torch.tensor([[2.0, 6.0, 18.0, 30.0], [10.0, 10.0, 30.0, 40.0], [20.0, 16.0, 44.0, 48.0]])
    boxes = torch.stack((boxes, boxes.flip(0) + 4)).unsqueeze(0)  # [1, 2, 3, 4]
    return build_moc_targets(
        boxes=boxes, labels=torch.tensor([[0, 1]]), valid=torch.tensor([[True, True]]),
        num_classes=2, input_size=(64, 64), output_size=(16, 16),
    )


def test_moc_losses_zero_at_perfect_outputs() -> None:
    t = _targets()
    K = 3
    heat = torch.where(t.heatmap == 1, torch.tensor(30.0), torch.tensor(-30.0))
    movement = torch.zeros(1, 2 * K, 16 * 16)
    wh = torch.zeros(1, 2 * K, 16 * 16)
    for n in range(2):
        movement[0, :, t.index[0, n]] = t.movement[0, n]
        for k in range(K):
            wh[0, 2 * k : 2 * k + 2, t.index_all[0, n, k]] = t.wh[0, n, 2 * k : 2 * k + 2]
    outputs = MOCOutputs(heatmap=heat, movement=movement.view(1, 2 * K, 16, 16), wh=wh.view(1, 2 * K, 16, 16))
    losses = moc_losses(outputs, t)
    assert set(losses) == {"loss", "loss_hm", "loss_mov", "loss_wh"}
    assert float(losses["loss"]) < 1e-5
    bad = MOCOutputs(heatmap=heat, movement=outputs.movement + 1.0, wh=outputs.wh * 2)
    losses = moc_losses(bad, t, wh_weight=0.1)
    assert float(losses["loss_mov"]) == pytest.approx(1.0, rel=1e-3)
    mean_wh = float(t.wh[0].mean())
    assert float(losses["loss_wh"]) == pytest.approx(mean_wh, rel=1e-3)
    assert float(losses["loss"]) == pytest.approx(
        float(losses["loss_hm"]) + float(losses["loss_mov"]) + 0.1 * float(losses["loss_wh"]), rel=1e-6
    )
