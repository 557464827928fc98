"""stad.engine.train: schedule, loss rule, learning, resume, AMP, best checkpoint, TensorBoard."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from engine_toy import ToyDataset, ToyRegressor, evaluate_mse
from torch import nn
from torch.utils.data import DataLoader

from stad.config import Config, TrainConfig, load_config
from stad.engine.checkpoint import load_checkpoint
from stad.engine.train import (
    NonFiniteLossError,
    autocast_dtype_for,
    batch_size_of,
    build_optimizer,
    build_scheduler,
    fit,
    lr_factor,
    resolve_device,
    to_device,
    total_loss,
    train_one_epoch,
)
from stad.errors import StadError


def _loader(n: int = 32, batch_size: int = 8, *, shuffle: bool = False, **dataset_kwargs) -> DataLoader:
    return DataLoader(ToyDataset(n, **dataset_kwargs), batch_size=batch_size, shuffle=shuffle)


def _cfg(tmp_path: Path, name: str, **overrides) -> TrainConfig:
    values = dict(epochs=2, optimizer="adamw", lr=0.02, scheduler="none", output_dir=str(tmp_path / name),
                  log_every=1, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


# ---------------------------------------------------------------------------------------------
# Helpers


def test_lr_factor_warmup_cosine_step() -> None:
    common = dict(total_steps=100, steps_per_epoch=10, milestones=[3, 6], gamma=0.1, warmup_factor=0.1)
    # linear warm-up from 0.1 to 1 over 10 iterations
    assert lr_factor(0, scheduler="none", warmup_iters=10, **common) == pytest.approx(0.1)
    assert lr_factor(5, scheduler="none", warmup_iters=10, **common) == pytest.approx(0.55)
    assert lr_factor(10, scheduler="none", warmup_iters=10, **common) == pytest.approx(1.0)
    # cosine over all 100 iterations, times the warm-up
    assert lr_factor(50, scheduler="cosine", warmup_iters=0, **common) == pytest.approx(0.5)
    assert lr_factor(100, scheduler="cosine", warmup_iters=0, **common) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(5, scheduler="cosine", warmup_iters=10, **common) == pytest.approx(
        0.55 * 0.5 * (1 + math.cos(math.pi * 5 / 100)))
    # step: x0.1 from epoch 3 (iteration 30) and again from epoch 6 (iteration 60)
    assert [lr_factor(i, scheduler="step", warmup_iters=0, **common) for i in (29, 30, 59, 60)] == pytest.approx(
        [1.0, 0.1, 0.1, 0.01])


def test_scheduler_steps_per_iteration() -> None:
    model = ToyRegressor()
    cfg = TrainConfig(epochs=2, lr=1.0, scheduler="step", milestones=[1], gamma=0.5, warmup_iters=2, warmup_factor=0.5)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=3)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.5, 0.75, 1.0, 0.5, 0.5, 0.5])
    with pytest.raises(StadError, match="yields no batches"):
        build_scheduler(optimizer, cfg, steps_per_epoch=0)


def test_optimizers() -> None:
    model = ToyRegressor()
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd", lr=0.1, momentum=0.8, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    adamw = build_optimizer(model, TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.05
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(StadError, match="no trainable parameters"):
        build_optimizer(model, TrainConfig())


def test_total_loss_rule_and_errors() -> None:
    loss, values = total_loss({"loss": torch.tensor(1.5), "hm": torch.tensor(1.0)}, epoch=0, step=0)
    assert loss.item() == 1.5 and values == {"loss": 1.5, "hm": 1.0}
    with pytest.raises(StadError, match=r"returned losses \['hm', 'wh'\] without the key 'loss'"):
        total_loss({"hm": torch.tensor(1.0), "wh": torch.tensor(2.0)}, epoch=0, step=0)
    with pytest.raises(StadError, match=r"loss 'wh' must be a scalar tensor, got \(2,\)"):
        total_loss({"loss": torch.tensor(1.0), "wh": torch.ones(2)}, epoch=0, step=0)
    with pytest.raises(StadError, match="must return a dict of losses, got Tensor"):
        total_loss(torch.tensor(1.0), epoch=0, step=0)  # type: ignore[arg-type]
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, iteration 8: loss=nan, hm=1\.0, wh=inf"):
        total_loss({"loss": torch.tensor(float("nan")), "hm": torch.tensor(1.0), "wh": torch.tensor(float("inf"))},
                   epoch=1, step=7)


def test_batch_helpers_and_device() -> None:
    batch = {"meta": {"video": ["a", "b"]}, "clip": [torch.zeros(2, 3)], "n": 4}
    assert batch_size_of(batch) == 2
    moved = to_device(batch, torch.device("cpu"))
    assert moved["meta"] == {"video": ["a", "b"]} and isinstance(moved["clip"], list)
    assert batch_size_of({"names": ["x"]}) == 0
    assert resolve_device("cpu") == torch.device("cpu")
    assert autocast_dtype_for("bf16", torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype_for("none", torch.device("cpu")) is None
    with pytest.raises(StadError, match="train.amp='fp16' needs a CUDA device"):
        autocast_dtype_for("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(StadError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(StadError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


# ---------------------------------------------------------------------------------------------
# fit


def test_training_lowers_the_loss_and_writes_the_run(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ToyRegressor()
    config = Config(train=_cfg(tmp_path, "run", epochs=4, lr=0.05, grad_clip=5.0, checkpoint_every=2))
    result = fit(model, _loader(shuffle=True), cfg=config.train, device="cpu", config=config)
    losses = [record["train"]["loss"] for record in result.history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.epochs_completed == 4 and result.global_step == 16
    assert result.history[0]["train"]["steps"] == 4
    assert {"loss", "mse", "l1", "lr", "clips_per_s", "grad_norm"} <= set(result.history[0]["train"])
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("*.pt")) == ["epoch_0002.pt", "epoch_0004.pt", "last.pt"]
    assert result.last_checkpoint == run / "last.pt" and result.best_checkpoint is None
    assert load_config(run / "config.yaml") == config
    assert load_checkpoint(run / "last.pt")["config"]["train"]["epochs"] == 4


def test_tensorboard_scalars_are_written(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    fit(ToyRegressor(), _loader(), cfg=_cfg(tmp_path, "tb", log_every=2), device="cpu",
        evaluate=evaluate_mse, val_loader=_loader(8, 4, seed=5))
    events = list((tmp_path / "tb" / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/mse", "train/l1", "train/lr", "train/clips_per_s", "val/val_mse"} <= tags
    assert [event.step for event in accumulator.Scalars("train/loss")] == [2, 4, 6, 8]
    assert [event.step for event in accumulator.Scalars("val/val_mse")] == [1, 2]


def _state(path: Path) -> dict:
    return load_checkpoint(path)


def test_resume_is_bit_identical_to_uninterrupted_run(tmp_path: Path) -> None:
    # Dropout + a shuffled loader + AdamW + warm-up/cosine: every piece of state must be restored.
    settings = dict(epochs=2, scheduler="cosine", warmup_iters=3, checkpoint_every=1, weight_decay=0.01)

    torch.manual_seed(0)
    full = fit(ToyRegressor(dropout=0.2), _loader(shuffle=True), cfg=_cfg(tmp_path, "full", **settings), device="cpu")

    # The "interrupted" run: resume a fresh process state from the first epoch's checkpoint.
    torch.manual_seed(123)
    torch.rand(7)  # different global random state than at the end of epoch 1
    resumed_cfg = _cfg(tmp_path, "resumed", resume=str(tmp_path / "full" / "epoch_0001.pt"), **settings)
    resumed = fit(ToyRegressor(dropout=0.2), _loader(shuffle=True), cfg=resumed_cfg, device="cpu")

    assert resumed.epochs_completed == 2 and resumed.global_step == full.global_step == 8
    assert len(resumed.history) == 2 and resumed.history[0] == full.history[0]
    a, b = _state(tmp_path / "full" / "last.pt"), _state(tmp_path / "resumed" / "last.pt")
    for name, weight in a["model"].items():
        assert torch.equal(weight, b["model"][name]), name
    for param_id, per_param in a["optimizer"]["state"].items():
        for key, value in per_param.items():
            assert torch.equal(value, b["optimizer"]["state"][param_id][key]), (param_id, key)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 8
    assert resumed.history[1]["train"]["loss"] == full.history[1]["train"]["loss"]


def test_resume_from_a_weights_only_checkpoint_is_refused(tmp_path: Path) -> None:
    from stad.engine.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "w.pt", model=ToyRegressor(), epoch=1, step=4)
    with pytest.raises(StadError, match="no optimizer/scheduler state; it cannot be resumed"):
        fit(ToyRegressor(), _loader(), cfg=_cfg(tmp_path, "r", resume=str(path)), device="cpu")


def test_bf16_autocast_runs_on_cpu(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ToyRegressor()
    result = fit(model, _loader(), cfg=_cfg(tmp_path, "bf16", epochs=2, amp="bf16", lr=0.05), device="cpu")
    assert model.last_dtype is torch.bfloat16  # the linear layers really ran in bf16
    losses = [record["train"]["loss"] for record in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[1] < losses[0]
    assert model.out.weight.dtype is torch.float32  # master weights stay fp32
    with pytest.raises(StadError, match="fp16"):
        fit(ToyRegressor(), _loader(), cfg=_cfg(tmp_path, "fp16", amp="fp16"), device="cpu")


def test_non_finite_loss_raises_with_names(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ToyRegressor()
    loader = _loader(16, 4, bad_index=9)  # third batch holds an infinite input
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, iteration 3: loss=(nan|inf), mse=(nan|inf), l1=(nan|inf)"):
        fit(model, loader, cfg=_cfg(tmp_path, "nan"), device="cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())  # raised before the bad update


def test_best_checkpoint_follows_the_metric(tmp_path: Path) -> None:
    scripted = iter([0.2, 0.5, 0.3])

    def evaluate(model, loader, device):  # noqa: ANN001
        assert not model.training
        return {"frame_map": next(scripted), "other": 1.0}

    torch.manual_seed(0)
    result = fit(ToyRegressor(), _loader(), cfg=_cfg(tmp_path, "best", epochs=3, best_metric="frame_map"),
                 device="cpu", evaluate=evaluate)
    assert result.best_value == 0.5 and result.best_epoch == 2
    assert result.best_checkpoint == tmp_path / "best" / "best.pt"
    best = load_checkpoint(result.best_checkpoint)
    assert best["epoch"] == 2 and best["extra"]["best_value"] == 0.5
    assert [r.get("val", {}).get("frame_map") for r in result.history] == [0.2, 0.5, 0.3]

    scripted_min = iter([0.4, 0.6, 0.1])
    result = fit(ToyRegressor(), _loader(), device="cpu",
                 cfg=_cfg(tmp_path, "min", epochs=3, best_metric="val_loss", best_mode="min", val_every=1),
                 evaluate=lambda m, l, d: {"val_loss": next(scripted_min)})
    assert result.best_epoch == 3 and load_checkpoint(result.best_checkpoint)["epoch"] == 3


def test_validation_schedule_and_metric_errors(tmp_path: Path) -> None:
    calls = []
    fit(ToyRegressor(), _loader(), cfg=_cfg(tmp_path, "v", epochs=3, val_every=2), device="cpu",
        evaluate=lambda m, l, d: calls.append(1) or {"m": 1.0})
    assert len(calls) == 2  # epoch 2 and the last epoch
    with pytest.raises(StadError, match=r"best_metric='video_map' is not among the metrics that evaluate returned: m"):
        fit(ToyRegressor(), _loader(), cfg=_cfg(tmp_path, "e", best_metric="video_map"), device="cpu",
            evaluate=lambda m, l, d: {"m": 1.0})
    with pytest.raises(StadError, match="best_metric='m' is set but fit\\(\\) got no evaluate function"):
        fit(ToyRegressor(), _loader(), cfg=_cfg(tmp_path, "e2", best_metric="m"), device="cpu")


def test_train_one_epoch_with_grad_scaler_and_clipping() -> None:
    torch.manual_seed(0)
    model = ToyRegressor()
    cfg = TrainConfig(epochs=1, optimizer="sgd", lr=0.05, scheduler="none")
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)  # the fp16 code path (scale, unscale, clip)
    before = model.out.weight.detach().clone()
    stats = train_one_epoch(
        model, _loader(16, 4), optimizer, None, device=torch.device("cpu"), scaler=scaler, autocast_dtype=None,
        grad_clip=1e-3, epoch=0, logger=None, global_step=10, log_every=2,
    )
    assert stats["steps"] == 4 and stats["lr"] == pytest.approx(0.05)
    assert 0 < stats["grad_norm"] and math.isfinite(stats["loss"])
    # Clipping acts on unscaled gradients: 4 SGD steps with |grad| <= 1e-3 and momentum 0.9 move
    # the weights by at most lr * 1e-3 * (1 + 1.9 + 2.71 + 3.439).
    assert (model.out.weight - before).norm() <= 0.05 * 1e-3 * 9.05 + 1e-7
    assert (model.out.weight - before).norm() > 0
    assert scaler.get_scale() == 2.0**10  # no overflow, so the scale did not back off


def test_warmup_cosine_is_steps_schedule() -> None:
    """STEP.md §8 fact 16: det_lr 7.5e-4, 1000 warm-up iterations from 0.1, then a cosine to 0 at ``total``."""
    total = 5000
    common = dict(total_steps=total, steps_per_epoch=100, milestones=[], gamma=0.1, warmup_iters=1000, warmup_factor=0.1)
    lr = [7.5e-4 * lr_factor(i, scheduler="warmup_cosine", **common) for i in (0, 500, 1000, 3000, total)]
    assert lr == pytest.approx([7.5e-5, 4.125e-4, 7.5e-4, 3.75e-4, 0.0], abs=1e-12)


def test_a_model_with_param_groups_gets_its_groups() -> None:
    class Grouped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = nn.Linear(2, 2), nn.Linear(2, 1)

        def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
            return [{"params": list(self.body.parameters()), "lr": lr / 8, "weight_decay": 0.0},
                    {"params": list(self.head.parameters()), "lr": lr, "weight_decay": weight_decay},
                    {"params": [], "lr": lr}]

    opt = build_optimizer(Grouped(), TrainConfig(optimizer="adam", lr=8e-3, weight_decay=1e-7))
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups] == [(1e-3, 0.0, 2), (8e-3, 1e-7, 2)]
    sgd = build_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="sgd", nesterov=True))
    assert sgd.param_groups[0]["nesterov"] is True


def test_fbil_schedule_warmup_epochs_then_steps() -> None:
    """FBIL.md §7 fact 18: SGD lr 0.0015 -> 0.012 over the first epoch, x0.1 from epoch 4, x0.01 from epoch 6."""
    cfg = TrainConfig(epochs=8, optimizer="sgd", lr=0.012, scheduler="step", milestones=[4, 6], gamma=0.1,
                      warmup_epochs=1, warmup_factor=0.125)
    E = 10  # noqa: N806 - iterations per epoch
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=E)
    lrs = []
    for _ in range(8 * E):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert [lrs[i] for i in (0, E // 2, E, 4 * E, 6 * E)] == pytest.approx([0.0015, 0.00675, 0.012, 0.0012, 0.00012])
    with pytest.raises(StadError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=1, warmup_iters=5)
