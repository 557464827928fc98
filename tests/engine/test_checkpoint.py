"""stad.engine.checkpoint: atomic save, checked load, weight loading report, random states."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stad import __version__
from stad.config import Config, TrainConfig, config_from_dict
from stad.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    load_state_dict_file,
    restore_rng_state,
    save_checkpoint,
    strip_prefix,
)
from stad.errors import StadError


class _Net(nn.Module):
    def __init__(self, hidden: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, hidden, 3)
        self.norm = nn.BatchNorm2d(hidden)
        self.fc = nn.Linear(hidden, 1)


def _trained_state(tmp_path: Path) -> tuple[_Net, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, Path]:
    torch.manual_seed(0)
    net = _Net()
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    net.fc(net.norm(net.conv(torch.randn(2, 2, 5, 5))).mean(dim=(2, 3))).sum().backward()
    optimizer.step()
    scheduler.step()
    path = save_checkpoint(
        tmp_path / "ckpt" / "last.pt", model=net, optimizer=optimizer, scheduler=scheduler, scaler=None,
        epoch=3, step=42, config=Config(train=TrainConfig(epochs=5)), rng=[capture_rng_state()],
        extra={"best_value": 0.5},
    )
    return net, optimizer, scheduler, path


def test_save_load_round_trip(tmp_path: Path) -> None:
    net, optimizer, scheduler, path = _trained_state(tmp_path)
    checkpoint = load_checkpoint(path)
    assert checkpoint["format"] == "stad-checkpoint" and checkpoint["stad_version"] == __version__
    assert checkpoint["epoch"] == 3 and checkpoint["step"] == 42
    assert checkpoint["extra"] == {"best_value": 0.5}
    assert checkpoint["scaler"] is None
    assert config_from_dict(checkpoint["config"]).train.epochs == 5
    for name, value in net.state_dict().items():
        assert torch.equal(checkpoint["model"][name], value), name

    torch.manual_seed(1)
    fresh = _Net()
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    fresh_scheduler = torch.optim.lr_scheduler.StepLR(fresh_optimizer, step_size=1, gamma=0.5)
    report = load_model_weights(fresh, checkpoint["model"])
    fresh_optimizer.load_state_dict(checkpoint["optimizer"])
    fresh_scheduler.load_state_dict(checkpoint["scheduler"])
    assert report.ok and len(report.loaded) == len(net.state_dict())
    assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert fresh_scheduler.last_epoch == scheduler.last_epoch == 1
    exp_avg = optimizer.state[optimizer.param_groups[0]["params"][0]]["exp_avg"]
    fresh_exp_avg = fresh_optimizer.state[fresh_optimizer.param_groups[0]["params"][0]]["exp_avg"]
    assert torch.equal(exp_avg, fresh_exp_avg)


def test_save_is_atomic_and_replaces(tmp_path: Path) -> None:
    net, _, _, path = _trained_state(tmp_path)
    save_checkpoint(path, model=net, epoch=4, step=50)
    assert load_checkpoint(path)["epoch"] == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary files left

    with pytest.raises(Exception):
        save_checkpoint(path, model=net, epoch=5, step=60, extra={"bad": lambda: None})
    assert load_checkpoint(path)["epoch"] == 4  # the failed write left the old file intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(StadError, match=r"garbage\.pt: cannot be read as a PyTorch checkpoint"):
        load_checkpoint(garbage)
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 1}, plain)
    with pytest.raises(StadError, match=r"plain\.pt: not a stad checkpoint .*'epoch', 'state_dict'"):
        load_checkpoint(plain)
    partial = tmp_path / "partial.pt"
    torch.save({"format": "stad-checkpoint", "stad_version": "0", "model": {}, "epoch": 1}, partial)
    with pytest.raises(StadError, match=r"partial\.pt: stad checkpoint is missing keys: optimizer, scheduler, scaler, step, config"):
        load_checkpoint(partial)


def test_load_state_dict_file_layouts(tmp_path: Path) -> None:
    weights = {"a.weight": torch.ones(2, 2), "a.bias": torch.zeros(2)}
    layouts = {"bare.pt": weights, "release.pt": {"epoch": 9, "state_dict": weights}, "model.pt": {"model": weights}}
    for name, content in layouts.items():
        torch.save(content, tmp_path / name)
        loaded = load_state_dict_file(tmp_path / name)
        assert list(loaded) == list(weights) and torch.equal(loaded["a.weight"], weights["a.weight"]), name
    _, _, _, stad_path = _trained_state(tmp_path)
    assert "conv.weight" in load_state_dict_file(stad_path)
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(StadError, match=r"empty\.pt: no state dict of tensors found"):
        load_state_dict_file(tmp_path / "empty.pt")


def test_load_model_weights_strips_ddp_prefix_and_maps_keys() -> None:
    source = _Net()
    prefixed = {f"module.{k}": v.clone() + 1 for k, v in source.state_dict().items()}
    target = _Net()
    report = load_model_weights(target, prefixed)
    assert report.ok
    assert torch.equal(target.conv.weight, source.conv.weight + 1)

    foreign = {k.replace("conv.", "base.conv_a."): v for k, v in source.state_dict().items()}
    report = load_model_weights(
        target, foreign, key_map=lambda sd: {k.replace("base.conv_a.", "conv."): v for k, v in sd.items()}
    )
    assert report.ok and torch.equal(target.conv.bias, source.conv.bias)
    assert strip_prefix({"module.x": 1, "y": 2}) == {"x": 1, "y": 2}


def test_load_model_weights_reports_problems_by_name() -> None:
    source = _Net(hidden=4).state_dict()
    source["extra.weight"] = torch.zeros(1)
    del source["fc.bias"]
    target = _Net(hidden=3)
    with pytest.raises(StadError, match=r"weights do not match _Net: .*missing \(1\): fc\.bias; unexpected \(1\): extra\.weight; "
                                        r"shape mismatch \(\d+\): conv\.weight: \(4, 2, 3, 3\) vs \(3, 2, 3, 3\)"):
        load_model_weights(target, source, strict=True)

    before = target.conv.weight.clone()
    report = load_model_weights(target, source, strict=False)
    assert report.missing == ["fc.bias"]
    assert report.unexpected == ["extra.weight"]
    assert "conv.weight: (4, 2, 3, 3) vs (3, 2, 3, 3)" in report.mismatched
    assert "norm.num_batches_tracked" in report.loaded
    assert torch.equal(target.conv.weight, before)  # mis-shaped tensors are skipped, not half-copied
    assert not report.ok


def test_rng_state_round_trip() -> None:
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(5)  # move every stream on
    restore_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert again[0] == expected[0] and again[1] == expected[1] and torch.equal(again[2], expected[2])
