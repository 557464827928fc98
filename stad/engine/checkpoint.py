"""Training checkpoints: atomic save, checked load, weight loading with a readable report.

A stad checkpoint is a ``torch.save`` dict (ARCHITECTURE.md §4)::

    format        "stad-checkpoint" (marks the file as ours)
    stad_version  version of stad that wrote it
    model         state dict of the bare model (no DDP "module." prefix)
    optimizer     optimizer state dict or None
    scheduler     LR scheduler state dict or None
    scaler        GradScaler state dict or None
    epoch         number of completed epochs
    step          number of completed optimizer steps (global step)
    config        the run configuration as nested plain dicts/lists (``config_to_dict``)
    rng           random states (``capture_rng_state``), one per process under DDP, or None
    extra         free dict of plain values (best metric so far, ...)

Every value is a tensor or plain Python value, so files load with ``torch.load(weights_only=True)``
(no arbitrary code runs when reading a checkpoint).
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from stad import __version__
from stad.config import config_to_dict
from stad.data.safe_pickle import safe_torch_load
from stad.engine.distributed import unwrap_model
from stad.errors import StadError

__all__ = [
    "CHECKPOINT_FORMAT",
    "LoadReport",
    "capture_rng_state",
    "load_checkpoint",
    "load_model_weights",
    "load_state_dict_file",
    "restore_rng_state",
    "save_checkpoint",
    "strip_prefix",
]

CHECKPOINT_FORMAT = "stad-checkpoint"
_REQUIRED_KEYS = ("format", "stad_version", "model", "optimizer", "scheduler", "scaler", "epoch", "step", "config")


# ---------------------------------------------------------------------------------------------
# Random states


def capture_rng_state() -> dict[str, Any]:
    """Random states of Python ``random``, numpy's global generator, torch CPU and all CUDA devices.

    Returns a dict of tensors and plain values (``weights_only``-loadable); feed it to
    :func:`restore_rng_state` to continue the same random streams.
    """
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the random states captured by :func:`capture_rng_state`.

    CUDA states are restored when the same number of devices is visible; otherwise they are left
    as they are (CPU results stay exact, CUDA kernels are not bit-reproducible anyway).
    """
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda", [])
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------------------------------------
# Save / load


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    epoch: int,
    step: int,
    config: Any = None,
    rng: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a stad checkpoint atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        path: destination ``.pt`` file; parent folders are created.
        model: the model (a DDP wrapper is unwrapped, so keys have no ``module.`` prefix).
        optimizer, scheduler, scaler: their state dicts are stored (None stores None).
        epoch: number of completed epochs.
        step: number of completed optimizer steps.
        config: a config dataclass (stored as plain dicts) or a plain dict, or None.
        rng: random states (:func:`capture_rng_state`, or a list of them, one per rank) or None.
        extra: further plain values (e.g. ``{"best_value": 0.71, "best_epoch": 3}``).

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "stad_version": __version__,
        "model": unwrap_model(model).state_dict(),
        "optimizer": _plain(optimizer.state_dict()) if optimizer is not None else None,
        "scheduler": _plain(scheduler.state_dict()) if scheduler is not None else None,
        "scaler": _plain(scaler.state_dict()) if scaler is not None and scaler.is_enabled() else None,
        "epoch": int(epoch),
        "step": int(step),
        "config": config_to_dict(config) if config is not None else None,
        "rng": _plain(rng),
        "extra": _plain(dict(extra or {})),
    }
    return _atomic_save(checkpoint, path)


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made Python numbers and lists, recursively.

    ``torch.load(weights_only=True)`` refuses numpy objects (``numpy._core.multiarray.scalar``), and a
    metric in ``extra["history"]`` is easily an ``np.float64``; dicts, lists and tuples are rebuilt as
    plain ``dict``/``list``/``tuple``, tensors and other values are kept.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(item) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def _atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary file in ``path``'s folder, then ``os.replace``: never a half-written file."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _torch_load(path: Path, map_location: Any) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path is a folder, not a file: {path}")
    # weights_only=True, nothing allow-listed: save_checkpoint writes tensors and plain values only.
    return safe_torch_load(path, what="a PyTorch checkpoint", map_location=map_location)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the ``.pt`` file.
        map_location: passed to ``torch.load`` (``"cpu"``, a device, ...).

    Returns:
        The checkpoint dict (keys listed in the module docstring).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        StadError: not a PyTorch file, not a stad checkpoint, or missing keys (named).
    """
    path = Path(path)
    checkpoint = _torch_load(path, map_location)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = sorted(map(str, checkpoint))[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise StadError(
            f"{path}: not a stad checkpoint (no format='{CHECKPOINT_FORMAT}'; found {found}); "
            "use load_state_dict_file() for plain state dicts"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise StadError(f"{path}: stad checkpoint is missing keys: {', '.join(missing)}")
    return checkpoint


def load_state_dict_file(path: str | Path, map_location: Any = "cpu") -> dict[str, torch.Tensor]:
    """The model weights in any common checkpoint layout: a stad checkpoint (``model``), a dict with
    ``state_dict`` or ``model`` (original releases, torchvision/timm), or a bare state dict.

    Raises:
        FileNotFoundError, StadError: unreadable file or no tensor state dict found in it.
    """
    path = Path(path)
    data = _torch_load(path, map_location)
    if isinstance(data, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise StadError(f"{path}: no state dict of tensors found (expected keys 'model' or 'state_dict')")
    return dict(data)


# ---------------------------------------------------------------------------------------------
# Weights into a model


@dataclass
class LoadReport:
    """What :func:`load_model_weights` did, by parameter name.

    Attributes:
        loaded: keys copied into the model.
        missing: model keys absent from the state dict.
        unexpected: state-dict keys the model does not have.
        mismatched: keys present in both with different shapes, as ``name: file shape vs model shape``.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 10) -> str:
        """A few lines naming the problems (at most ``limit`` names each)."""

        def names(items: list[str]) -> str:
            more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        lines = [f"loaded {len(self.loaded)} tensors"]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("shape mismatch", self.mismatched)):
            if items:
                lines.append(f"{title} ({len(items)}): {names(items)}")
        return "; ".join(lines)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from keys that start with it (DDP/DataParallel save ``module.``)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def load_model_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    key_map: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> LoadReport:
    """Copy ``state_dict`` into ``model`` and report missing/unexpected/mis-shaped keys by name.

    Args:
        model: target module (a DDP wrapper is unwrapped).
        state_dict: weights; a ``module.`` prefix (DDP) is stripped first.
        strict: raise on any missing, unexpected or mis-shaped key; otherwise load the matching
            tensors, skip the rest and return the report (the caller logs ``report.summary()``).
        key_map: optional function renaming a foreign layout into the model's keys (applied after
            the prefix is stripped), e.g. a mapping for an original release checkpoint.

    Returns:
        :class:`LoadReport`.

    Raises:
        StadError: ``strict`` and the keys or shapes differ (the message lists them).
    """
    model = unwrap_model(model)
    weights = strip_prefix(dict(state_dict))
    if key_map is not None:
        weights = key_map(weights)
    own = model.state_dict()
    report = LoadReport()
    report.missing = [k for k in own if k not in weights]
    report.unexpected = [k for k in weights if k not in own]
    for key, value in weights.items():
        if key not in own:
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(own[key].shape)}")
        else:
            report.loaded.append(key)
    if strict and not report.ok:
        raise StadError(f"weights do not match {type(model).__name__}: {report.summary()}")
    result = model.load_state_dict({k: weights[k] for k in report.loaded}, strict=False)
    # Every key in report.loaded exists in the model, so load_state_dict can only report our missing ones.
    assert not result.unexpected_keys, result.unexpected_keys
    return report


def export_inference_checkpoint(src: str | Path, dst: str | Path, *, half: bool = True) -> Path:
    """Write a slim copy of a stad checkpoint for inference: model weights (float16 when ``half``) and config,
    without optimizer, scheduler and random states. Loads like any stad checkpoint (weights are cast back to
    the model's dtype on loading).
    """
    checkpoint = load_checkpoint(src, map_location="cpu")
    weights = {
        key: value.half() if half and torch.is_floating_point(value) else value for key, value in checkpoint["model"].items()
    }
    slim = {
        **{key: checkpoint[key] for key in ("format", "stad_version", "epoch", "step", "config")},
        "model": weights,
        "optimizer": None,
        "scheduler": None,
        "scaler": None,
        "rng": None,
        "extra": {k: v for k, v in checkpoint.get("extra", {}).items() if k in ("best_value", "best_epoch", "history")},
    }
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    return _atomic_save(slim, dst)
