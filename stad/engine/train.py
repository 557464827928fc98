"""The model-agnostic training loop: ``train_one_epoch`` and ``fit``.

Small, visible loops in the style of torchvision's detection references and DETR's
``engine.py``. The engine never looks at which model it trains (STYLE.md anti-pattern 2); a
model only has to follow this contract:

* ``model(batch) -> dict[str, Tensor]`` of scalar losses. **The engine back-propagates
  ``losses["loss"]``**, the weighted total the model's criterion computed; every other entry is
  a named part that is only logged. A dict without ``"loss"`` is an error (loss weights belong to
  the model, not the engine).
* ``model.detect(batch)`` for inference (used by the ``evaluate`` callable, not here).
* ``batch`` is whatever the DataLoader yields; tensors in (nested) dicts, lists and tuples are
  moved to ``device``. The number of clips in a batch (for the clips/s throughput) is the first
  dimension of its first tensor (:func:`batch_size_of`).

Validation is a callable ``evaluate(model, loader, device) -> dict[str, float]`` given to
:func:`fit`; it receives the bare model (no DDP wrapper) in eval mode under ``torch.no_grad``,
runs on every rank and must return the same metrics on every rank (gather with
``stad.engine.distributed``). ``best.pt`` follows ``TrainConfig.best_metric``.

Run folder (``TrainConfig.output_dir``, written by rank 0)::

    config.yaml          the resolved configuration (when ``fit(config=...)`` is given)
    last.pt              after every epoch
    epoch_NNNN.pt        every ``checkpoint_every`` epochs
    best.pt              when ``best_metric`` improves
    tb/                  TensorBoard events (train/<loss>, train/lr, train/clips_per_s, val/<metric>)
    curves.png           learning curves (losses and lr per logged iteration, val metrics per epoch),
                         after every epoch and at the end (``stad.engine.curves``)

Learning-rate schedule (per iteration ``i`` of ``S`` in total, ``E`` iterations per epoch)::

    lr(i) = lr * warmup(i) * main(i)
    warmup(i) = warmup_factor + (1 - warmup_factor) * i / warmup_iters   for i < warmup_iters, else 1
                (warmup_iters = round(warmup_epochs * E) when train.warmup_epochs is set)
    main(i) = 0.5 * (1 + cos(pi * i / S))                    cosine
            = gamma ** #{m in milestones : m <= i // E}        step (milestones in epochs)
            = 1                                                none
    lr(i) = lr * warmup(i)                                    warmup_cosine, i < warmup_iters (STEP's schedule)
          = lr * 0.5 * (1 + cos(pi * (i - W) / (S - W)))      warmup_cosine, after (W = warmup_iters)
"""

from __future__ import annotations

import bisect
import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from stad.config import Config, TrainConfig, save_config
from stad.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from stad.engine.distributed import (
    all_gather_objects,
    barrier,
    get_local_rank,
    get_rank,
    get_world_size,
    is_main_process,
    mean_across_ranks,
    set_sampler_epoch,
    wrap_ddp,
)
from stad.engine.curves import CurvesWriter
from stad.engine.logging import MeanMeter, StepSeries, ThroughputMeter, TrainLogger, format_values, progress
from stad.errors import StadError

__all__ = [
    "EvaluateFn",
    "FitResult",
    "NonFiniteLossError",
    "autocast_dtype_for",
    "batch_size_of",
    "build_optimizer",
    "build_scheduler",
    "fit",
    "lr_factor",
    "resolve_device",
    "seed_everything",
    "to_device",
    "total_loss",
    "train_one_epoch",
]

EvaluateFn = Callable[[nn.Module, Any, torch.device], Mapping[str, float]]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message lists every loss part with its value."""


# ---------------------------------------------------------------------------------------------
# Set-up helpers


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` -> ``cuda:LOCAL_RANK``;
    any other name (``cpu``, ``cuda:1``) as given.

    Raises:
        StadError: CUDA asked for but not available, or an unknown device name.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StadError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise StadError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", get_local_rank())
    return device


def autocast_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """The ``torch.autocast`` dtype of ``TrainConfig.amp`` on ``device`` (None = full precision).

    Raises:
        StadError: ``fp16`` on a non-CUDA device, or an unknown mode.
    """
    if amp == "none":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise StadError(f"train.amp='fp16' needs a CUDA device, got {device}; use 'bf16' or 'none'")
        return torch.float16
    raise StadError(f"train.amp must be none, bf16 or fp16, got {amp!r}")


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD (with ``momentum``, ``nesterov``) over the parameters that require gradients.

    A model with ``param_groups(lr, weight_decay) -> list[dict]`` (STEP's per-layer learning rates) gets those
    groups, each with its own ``lr`` / ``weight_decay`` derived from ``cfg.lr`` and ``cfg.weight_decay``; other
    models get one group with ``cfg.lr`` and ``cfg.weight_decay``. The schedule scales every group alike.
    """
    if hasattr(model, "param_groups"):
        params: list[Any] = [g for g in model.param_groups(cfg.lr, cfg.weight_decay) if g["params"]]
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise StadError(f"{type(model).__name__} has no trainable parameters")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    raise StadError(f"train.optimizer must be adamw, adam or sgd, got {cfg.optimizer!r}")


def lr_factor(
    step: int,
    *,
    scheduler: str,
    total_steps: int,
    steps_per_epoch: int,
    milestones: list[int],
    gamma: float,
    warmup_iters: int,
    warmup_factor: float,
) -> float:
    """Multiplier of the base learning rate at iteration ``step`` (formula in the module docstring)."""
    warmup = 1.0
    if step < warmup_iters:
        alpha = step / warmup_iters
        warmup = warmup_factor + (1.0 - warmup_factor) * alpha
    if scheduler == "warmup_cosine":  # STEP's WarmupCosineLR: the cosine starts after the warm-up
        if step < warmup_iters:
            return warmup
        span = max(total_steps - warmup_iters, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_iters, span) / span))
    if scheduler == "cosine":
        main = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    elif scheduler == "step":
        main = gamma ** bisect.bisect_right(milestones, step // max(steps_per_epoch, 1))
    elif scheduler == "none":
        main = 1.0
    else:
        raise StadError(f"train.scheduler must be cosine, warmup_cosine, step or none, got {scheduler!r}")
    return warmup * main


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, *, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration ``LambdaLR`` following :func:`lr_factor` (call ``step()`` after every optimizer step)."""
    if steps_per_epoch < 1:
        raise StadError(f"the training loader yields no batches (steps_per_epoch={steps_per_epoch})")
    settings = dict(
        scheduler=cfg.scheduler,
        total_steps=cfg.epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        milestones=list(cfg.milestones),
        gamma=cfg.gamma,
        warmup_iters=round(cfg.warmup_epochs * steps_per_epoch) if cfg.warmup_epochs else cfg.warmup_iters,
        warmup_factor=cfg.warmup_factor,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, **settings))


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor (in nested dicts, lists, tuples) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(value, device) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def batch_size_of(batch: Any) -> int:
    """Number of clips in ``batch``: the first dimension of its first tensor (depth-first)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        if isinstance(value, (torch.Tensor, Mapping, list, tuple)):
            size = batch_size_of(value)
            if size:
                return size
    return 0


def total_loss(losses: Mapping[str, torch.Tensor], *, epoch: int, step: int) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss to back-propagate (``losses["loss"]``) and every part as a float.

    Args:
        losses: the model's output, scalar tensors by name.
        epoch, step: where training is (0-based), for the error message.

    Returns:
        ``(loss, values)``: the ``"loss"`` tensor and ``{name: float}`` of all entries.

    Raises:
        StadError: not a dict, no ``"loss"`` key or a non-scalar entry (named).
        NonFiniteLossError: any entry is NaN/inf; the message lists all names and values.
    """
    if not isinstance(losses, Mapping):
        raise StadError(f"model(batch) must return a dict of losses, got {type(losses).__name__}")
    if "loss" not in losses:
        raise StadError(
            f"model(batch) returned losses {sorted(losses)} without the key 'loss' (the weighted total to optimise)"
        )
    for name, value in losses.items():
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise StadError(f"loss '{name}' must be a scalar tensor, got {shape}")
    names = list(losses)
    numbers = torch.stack([losses[name].detach().float() for name in names]).tolist()  # one device sync
    values = dict(zip(names, numbers))
    if not all(math.isfinite(v) for v in numbers):
        listing = ", ".join(f"{name}={value}" for name, value in values.items())
        raise NonFiniteLossError(f"non-finite loss at epoch {epoch + 1}, iteration {step + 1}: {listing}")
    return losses["loss"], values


# ---------------------------------------------------------------------------------------------
# The loops


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    device: torch.device,
    scaler: torch.amp.GradScaler | None,
    autocast_dtype: torch.dtype | None,
    grad_clip: float | None,
    epoch: int,
    logger: TrainLogger | None,
    global_step: int = 0,
    log_every: int = 20,
    step_log: StepSeries | None = None,
) -> dict[str, float]:
    """One pass over ``loader``: forward, loss check, backward, clip, step, schedule.

    Args:
        model: in train mode after the call; may be DDP-wrapped.
        loader: iterable of batches (``len`` used for the progress bar when available).
        optimizer: stepped once per batch.
        scheduler: per-iteration scheduler stepped after every optimizer step, or None.
        device: where batches are moved.
        scaler: GradScaler for fp16 (None or disabled = no scaling).
        autocast_dtype: ``torch.bfloat16`` / ``torch.float16`` for ``torch.autocast``, None = fp32.
        grad_clip: maximum global gradient norm, None = no clipping.
        epoch: 0-based epoch (progress bar, messages).
        logger: TensorBoard scalars every ``log_every`` global steps, or None.
        global_step: optimizer steps done before this epoch.
        log_every: iterations between logged scalars and progress-bar updates.
        step_log: gets the logged iterations' losses and ``lr`` (for ``curves.png``), or None.

    Returns:
        Means over the epoch's clips of every loss entry (averaged over ranks) plus ``lr`` (at the
        end), ``clips_per_s`` (all ranks together), ``steps`` (optimizer steps this epoch) and
        ``grad_norm`` (mean, when clipping).

    Raises:
        NonFiniteLossError: a loss is NaN/inf (before its backward pass).
    """
    model.train()
    if scaler is None:
        scaler = torch.amp.GradScaler(device.type, enabled=False)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    losses_meter = MeanMeter()
    grad_meter = MeanMeter()
    epoch_speed, window_speed = ThroughputMeter(), ThroughputMeter()
    total = len(loader) if hasattr(loader, "__len__") else None
    bar = progress(loader, total=total, desc=f"epoch {epoch + 1}", enabled=is_main_process())
    step = global_step
    for batch in bar:
        batch = to_device(batch, device)
        num_clips = batch_size_of(batch)
        with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            losses = model(batch)
        loss, values = total_loss(losses, epoch=epoch, step=step)

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
            grad_meter.update({"grad_norm": float(grad_norm)})
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        step += 1

        losses_meter.update(values, n=num_clips)
        epoch_speed.update(num_clips)
        window_speed.update(num_clips)
        if step % log_every == 0:
            lr = optimizer.param_groups[0]["lr"]
            live = {**values, "lr": lr, "clips_per_s": window_speed.rate}
            bar.set_postfix_str(" ".join(format_values({"loss": values["loss"], "lr": lr})) +
                                f" {window_speed.rate:.1f} clips/s")
            if logger is not None:
                logger.scalars("train", live, step)
            if step_log is not None:
                step_log.append(step, {**values, "lr": lr})
            window_speed.reset()
    bar.close()

    num_clips_here = losses_meter.counts.get("loss", 0)
    stats = mean_across_ranks(losses_meter.means(), weight=num_clips_here) if num_clips_here else {}
    stats.update(mean_across_ranks(grad_meter.means()) if grad_meter.counts else {})
    speeds = all_gather_objects(epoch_speed.rate)
    stats["clips_per_s"] = float(sum(speeds))
    stats["lr"] = float(optimizer.param_groups[0]["lr"])
    stats["steps"] = float(step - global_step)
    return stats


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        output_dir: the run folder.
        epochs_completed: epochs trained in total (including those before a resume).
        global_step: optimizer steps in total.
        history: one dict per epoch trained in this or a resumed run:
            ``{"epoch": n, "train": {...}, "val": {...}}`` (``val`` only when validated).
        best_value: best ``best_metric`` value seen, or None.
        best_epoch: epoch (1-based) of ``best_value``, or None.
        last_checkpoint: path of ``last.pt`` (None when no epoch was run).
        best_checkpoint: path of ``best.pt`` or None.
    """

    output_dir: Path
    epochs_completed: int
    global_step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None


def _improved(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def fit(
    model: nn.Module,
    train_loader: DataLoader | Any,
    *,
    cfg: TrainConfig,
    device: torch.device | str,
    evaluate: EvaluateFn | None = None,
    val_loader: Any = None,
    config: Config | None = None,
) -> FitResult:
    """Train ``model`` for ``cfg.epochs`` epochs with validation, checkpoints and logs.

    Seeds every library with ``cfg.seed + rank`` first; build the model and its data before
    calling (DDP broadcasts rank 0's initial weights). Under torchrun, call
    ``stad.engine.distributed.init_distributed()`` first and give the loader
    ``build_sampler(...)``; ``fit`` wraps the model in DDP and reshuffles the sampler each epoch.

    With ``cfg.resume`` set, model, optimizer, scheduler, scaler, epoch, global step, best metric,
    history, per-iteration loss log and random states are restored and training continues at the
    next epoch; on CPU the result is bit-identical to an uninterrupted run.

    Args:
        model: module with ``forward(batch) -> dict`` containing ``"loss"`` (moved to ``device``).
        train_loader: batches for training; ``len(train_loader)`` iterations per epoch.
        cfg: the training section of the config.
        device: torch device or name (``resolve_device`` rules).
        evaluate: ``evaluate(model, val_loader, device) -> {metric: value}`` or None.
        val_loader: passed to ``evaluate``.
        config: the whole run config, saved as ``config.yaml`` and into checkpoints (else ``cfg``).

    Returns:
        :class:`FitResult`.

    Raises:
        StadError: inconsistent settings (best metric without evaluator, metric not returned,
            resume file that is not a stad checkpoint or does not match the model).
        NonFiniteLossError: a loss became NaN/inf.
    """
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if cfg.best_metric is not None and evaluate is None:
        raise StadError(f"train.best_metric={cfg.best_metric!r} is set but fit() got no evaluate function")
    rank, world_size, main = get_rank(), get_world_size(), is_main_process()
    seed_everything(cfg.seed + rank)
    output_dir = Path(cfg.output_dir)
    autocast_dtype = autocast_dtype_for(cfg.amp, device)

    model.to(device)
    train_model = wrap_ddp(model, device)
    optimizer = build_optimizer(model, cfg)
    if not hasattr(train_loader, "__len__"):
        raise StadError(
            "fit() needs a training loader with a length (map-style Dataset); the schedule counts iterations"
        )
    steps_per_epoch = len(train_loader)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    saved_config = config if config is not None else cfg

    start_epoch, global_step = 0, 0
    result = FitResult(output_dir=output_dir, epochs_completed=0, global_step=0)
    step_log = StepSeries()  # losses and lr of the logged iterations (rank 0), for curves.png
    if cfg.resume:
        checkpoint = load_checkpoint(cfg.resume, map_location="cpu")
        if checkpoint["optimizer"] is None or checkpoint["scheduler"] is None:
            raise StadError(f"{cfg.resume}: checkpoint has no optimizer/scheduler state; it cannot be resumed")
        load_model_weights(model, checkpoint["model"], strict=True)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint["scaler"] is not None and scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, global_step = checkpoint["epoch"], checkpoint["step"]
        extra = checkpoint["extra"]
        result.best_value, result.best_epoch = extra.get("best_value"), extra.get("best_epoch")
        result.history = list(extra.get("history", []))
        if extra.get("step_log") is not None:
            step_log.load_state_dict(extra["step_log"])
        if extra.get("steps_per_epoch") not in (None, steps_per_epoch):
            warnings.warn(
                f"resuming with {steps_per_epoch} iterations per epoch, the checkpoint had "
                f"{extra['steps_per_epoch']}: the learning-rate schedule shifts", stacklevel=2,
            )
        rng_states = checkpoint.get("rng")
        if isinstance(rng_states, list) and len(rng_states) == world_size:
            restore_rng_state(rng_states[rank])
        else:
            warnings.warn(
                f"{cfg.resume}: no random states for {world_size} processes; keeping fresh seeds", stacklevel=2
            )
        if main:
            print(f"resumed from {cfg.resume} at epoch {start_epoch}, step {global_step}", flush=True)
    result.epochs_completed, result.global_step = start_epoch, global_step

    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(saved_config, Config):
            save_config(saved_config, output_dir / "config.yaml")
    logger = TrainLogger(output_dir / "tb", enabled=main)
    curves = CurvesWriter(output_dir / "curves.png", enabled=main, title=output_dir.name)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            set_sampler_epoch(train_loader, epoch)
            train_stats = train_one_epoch(
                train_model, train_loader, optimizer, scheduler,
                device=device, scaler=scaler, autocast_dtype=autocast_dtype, grad_clip=cfg.grad_clip,
                epoch=epoch, logger=logger, global_step=global_step, log_every=cfg.log_every,
                step_log=step_log if main else None,
            )
            global_step += int(train_stats["steps"])
            record: dict[str, Any] = {"epoch": epoch + 1, "train": train_stats}

            last_epoch = epoch + 1 == cfg.epochs
            if evaluate is not None and ((cfg.val_every and (epoch + 1) % cfg.val_every == 0) or last_epoch):
                model.eval()
                with torch.no_grad():
                    metrics = {name: float(value) for name, value in evaluate(model, val_loader, device).items()}
                model.train()
                record["val"] = metrics
                logger.scalars("val", metrics, epoch + 1)
                if cfg.best_metric is not None:
                    if cfg.best_metric not in metrics:
                        raise StadError(
                            f"train.best_metric={cfg.best_metric!r} is not among the metrics that evaluate "
                            f"returned: {', '.join(metrics) or '(none)'}"
                        )
                    if _improved(metrics[cfg.best_metric], result.best_value, cfg.best_mode):
                        result.best_value, result.best_epoch = metrics[cfg.best_metric], epoch + 1
                        record["best"] = True
            result.history.append(record)
            result.epochs_completed, result.global_step = epoch + 1, global_step
            if main:
                summary = " ".join(format_values({k: v for k, v in train_stats.items() if k != "steps"}))
                val_summary = " ".join(format_values(record.get("val", {})))
                line = f"epoch {epoch + 1}/{cfg.epochs} step {global_step}: {summary} {val_summary}"
                print(line.rstrip(), flush=True)

            # Checkpoints: every rank contributes its random state, rank 0 writes.
            rng_states = all_gather_objects(capture_rng_state())
            if main:
                state = dict(
                    model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                    epoch=epoch + 1, step=global_step, config=saved_config, rng=rng_states,
                    extra={"best_value": result.best_value, "best_epoch": result.best_epoch,
                           "history": result.history, "steps_per_epoch": steps_per_epoch,
                           "world_size": world_size, "step_log": step_log.state_dict()},
                )
                result.last_checkpoint = save_checkpoint(output_dir / "last.pt", **state)
                if cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0:
                    save_checkpoint(output_dir / f"epoch_{epoch + 1:04d}.pt", **state)
                if record.get("best"):
                    result.best_checkpoint = save_checkpoint(output_dir / "best.pt", **state)
                curves.write(result.history, step_log.columns())
            barrier()
            logger.flush()
    finally:
        logger.close()
        curves.write(result.history, step_log.columns(), force=True)  # also after an error: the curves up to it
    if result.best_checkpoint is None and (output_dir / "best.pt").is_file() and result.best_epoch is not None:
        result.best_checkpoint = output_dir / "best.pt"
    if result.last_checkpoint is None and (output_dir / "last.pt").is_file():
        result.last_checkpoint = output_dir / "last.pt"
    return result
