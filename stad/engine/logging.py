"""Training logs: TensorBoard scalars, tqdm progress bars and running averages.

Only the main process (rank 0) writes: :class:`TrainLogger` opens no TensorBoard writer and
:func:`progress` shows no bar on other ranks. The logger is passed explicitly to the loops
(STYLE.md anti-pattern 7: no global event storage).

TensorBoard tags: ``train/<loss name>``, ``train/lr``, ``train/clips_per_s`` (per logged
iteration, x = global step) and ``val/<metric>`` (x = epoch).

:class:`StepSeries` keeps the same per-iteration losses and learning rate in memory, bounded, for
the ``curves.png`` plot (``stad.engine.curves``); ``fit`` saves it in the checkpoint's ``extra``
so a resumed run continues the curves.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, TypeVar

from tqdm.auto import tqdm

__all__ = ["MeanMeter", "StepSeries", "ThroughputMeter", "TrainLogger", "format_values", "progress"]

ItemT = TypeVar("ItemT")


def progress(iterable: Iterable[ItemT], *, total: int | None = None, desc: str = "", enabled: bool = True) -> tqdm:
    """A tqdm bar over ``iterable`` (disabled when ``enabled`` is false, e.g. on ranks > 0)."""
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False)


class MeanMeter:
    """Running means of named scalars (e.g. the losses of an epoch)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def update(self, values: Mapping[str, float], n: int = 1) -> None:
        """Add ``values`` measured on ``n`` samples (weights the mean)."""
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value) * n
            self.counts[name] = self.counts.get(name, 0) + n

    def means(self) -> dict[str, float]:
        return {name: self.sums[name] / self.counts[name] for name in self.sums}


class ThroughputMeter:
    """Items per second over the last window (reset with :meth:`reset`)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.items = 0

    def update(self, n: int) -> None:
        self.items += n

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.items / elapsed if elapsed > 0 else math.nan


class TrainLogger:
    """TensorBoard scalars written by the main process only.

    Args:
        log_dir: folder of the event files (created), or None for no TensorBoard.
        enabled: False on ranks > 0: every call is a no-op.
    """

    def __init__(self, log_dir: str | Path | None, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.writer = None
        if enabled and log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when used

            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """Write ``prefix/name`` = value for every entry at x = ``step``."""
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> "TrainLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StepSeries:
    """Named scalars at logged global steps (losses, ``lr``), bounded by averaging neighbours.

    Every stored point is the mean of ``stride`` consecutive logged iterations (its ``step`` the
    mean of theirs). When ``max_points`` points are stored, neighbours are merged pairwise and
    ``stride`` doubles, so all points keep the same weight and memory stays bounded however long
    the run. The newest iterations that do not yet fill a point wait in a pending bucket, which
    :meth:`columns` includes as a last, partial point. Means skip NaN/inf (a point whose values
    are all non-finite is NaN); a name first seen later is NaN before.

    Args:
        max_points: points kept before merging (even, >= 2); default 2000.
    """

    def __init__(self, max_points: int = 2000) -> None:
        if max_points < 2 or max_points % 2:
            raise ValueError(f"max_points must be an even number >= 2, got {max_points}")
        self.max_points = max_points
        self.stride = 1
        self._columns: dict[str, list[float]] = {"step": []}  # step + one column per name, NaN-padded
        self._pending: list[dict[str, float]] = []  # < stride raw records {"step": s, name: value}

    def __len__(self) -> int:
        """Stored points plus the partial one (if any)."""
        return len(self._columns["step"]) + bool(self._pending)

    def append(self, step: int, values: Mapping[str, float]) -> None:
        """Record ``values`` (name -> float) logged at global step ``step``."""
        if "step" in values:
            raise ValueError(f"'step' is reserved for the x axis, got values {sorted(values)}")
        self._pending.append({"step": float(step), **{name: float(value) for name, value in values.items()}})
        if len(self._pending) < self.stride:
            return
        self._store(_nan_mean_records(self._pending))
        self._pending = []
        while len(self._columns["step"]) >= self.max_points:
            self._merge_neighbours()

    def columns(self) -> dict[str, list[float]]:
        """``{"step": [...], name: [...]}``, equal-length lists (the pending partial point last)."""
        columns = {name: list(values) for name, values in self._columns.items()}
        if self._pending:
            last = _nan_mean_records(self._pending)
            n = len(columns["step"])
            for name in last:
                columns.setdefault(name, [math.nan] * n)
            for name, values in columns.items():
                values.append(last.get(name, math.nan))
        return columns

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (``torch.load(weights_only=True)`` can read them)."""
        return {"stride": self.stride, "columns": {k: list(v) for k, v in self._columns.items()},
                "pending": [dict(record) for record in self._pending]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (merging further if this series keeps fewer points)."""
        columns = {name: [float(v) for v in values] for name, values in state["columns"].items()}
        lengths = {len(values) for values in columns.values()}
        if "step" not in columns or len(lengths) != 1:
            raise ValueError(f"a step series needs a 'step' column and equal-length columns, got lengths "
                             f"{ {name: len(values) for name, values in columns.items()} }")
        self.stride = int(state["stride"])
        self._columns = columns
        self._pending = [{name: float(value) for name, value in record.items()} for record in state["pending"]]
        while len(self._columns["step"]) >= self.max_points:
            self._merge_neighbours()

    def _store(self, point: Mapping[str, float]) -> None:
        n = len(self._columns["step"])
        for name in point:
            self._columns.setdefault(name, [math.nan] * n)
        for name, values in self._columns.items():
            values.append(point.get(name, math.nan))

    def _merge_neighbours(self) -> None:
        """Points (0, 1), (2, 3) ... -> their means; an odd last point stays as it is."""
        for name, values in self._columns.items():
            merged = [_nan_mean(values[i:i + 2]) for i in range(0, len(values) - 1, 2)]
            if len(values) % 2:
                merged.append(values[-1])
            self._columns[name] = merged
        self.stride *= 2


def _nan_mean(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _nan_mean_records(records: list[dict[str, float]]) -> dict[str, float]:
    names = dict.fromkeys(name for record in records for name in record)
    return {name: _nan_mean(record.get(name, math.nan) for record in records) for name in names}


def format_values(values: Mapping[str, float], digits: int = 4) -> Iterator[str]:
    """``name=value`` strings for progress bars and console lines."""
    for name, value in values.items():
        yield f"{name}={value:.{digits}g}"
