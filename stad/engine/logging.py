"""Training logs: TensorBoard scalars, tqdm progress bars and running averages.

Only the main process (rank 0) writes: :class:`TrainLogger` opens no TensorBoard writer and
:func:`progress` shows no bar on other ranks. The logger is passed explicitly to the loops
(STYLE.md anti-pattern 7: no global event storage).

TensorBoard tags: ``train/<loss name>``, ``train/lr``, ``train/clips_per_s`` (per logged
iteration, x = global step) and ``val/<metric>`` (x = epoch).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping, TypeVar

from tqdm.auto import tqdm

__all__ = ["MeanMeter", "ThroughputMeter", "TrainLogger", "format_values", "progress"]

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


def format_values(values: Mapping[str, float], digits: int = 4) -> Iterator[str]:
    """``name=value`` strings for progress bars and console lines."""
    for name, value in values.items():
        yield f"{name}={value:.{digits}g}"
