"""Per-module wall-clock timing of the online pipeline, as the KORSAL paper's speed table.

:class:`ModuleTimer` sums the seconds spent in each named stage (``with timer.time("network"): ...``) and prints a
Markdown table: total seconds, milliseconds per frame, share of the total and the frame rate the stage alone would
allow. On CUDA the timer synchronises the device before reading the clock (asynchronous kernels would otherwise be
billed to the next stage). Used by :mod:`stad.engine.stream` and :mod:`stad.engine.profile`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch


# The stages of stad.engine.stream, in pipeline order.
STREAM_MODULES: tuple[str, ...] = ("decode", "preprocess", "temporal cue", "network", "decoding", "linking", "drawing/writing")


@dataclass
class ModuleTime:
    """Time of one stage: ``seconds`` in total over ``calls`` calls."""

    seconds: float = 0.0
    calls: int = 0


class ModuleTimer:
    """Accumulates the wall-clock time of named pipeline stages (thread-safe).

    Args:
        modules: stage names in table order (others are appended when first timed).
        device: the model's device; on CUDA the clock is read after ``torch.cuda.synchronize``.
    """

    def __init__(self, modules: Sequence[str] = STREAM_MODULES, *, device: torch.device | str | None = None) -> None:
        self.times: dict[str, ModuleTime] = {name: ModuleTime() for name in modules}
        self._cuda = device is not None and torch.device(device).type == "cuda"
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float, calls: int = 1) -> None:
        """Add ``seconds`` to stage ``name``."""
        with self._lock:
            entry = self.times.setdefault(name, ModuleTime())
            entry.seconds += float(seconds)
            entry.calls += int(calls)

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        """Time the body of a ``with`` block as stage ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._cuda:
                torch.cuda.synchronize()
            self.add(name, time.perf_counter() - start)

    @property
    def total(self) -> float:
        """Sum over all stages, in seconds."""
        return sum(t.seconds for t in self.times.values())

    def table(self, *, frames: int, wall: float | None = None) -> str:
        """Markdown table of the stages for ``frames`` processed frames.

        Columns: stage, total seconds, ms per frame, share of the summed stage time, frames/s of the stage alone.
        The last rows give the sum and, when ``wall`` (seconds of the whole run) is given, the end-to-end rate
        ``frames / wall``.
        """
        frames = max(int(frames), 1)
        total = self.total
        lines = ["| module | total s | ms/frame | share | frames/s alone |", "|---|---:|---:|---:|---:|"]
        for name, t in self.times.items():
            per_frame = 1000 * t.seconds / frames
            share = 100 * t.seconds / total if total > 0 else 0.0
            alone = f"{frames / t.seconds:.1f}" if t.seconds > 0 else "-"
            lines.append(f"| {name} | {t.seconds:.3f} | {per_frame:.2f} | {share:.1f}% | {alone} |")
        lines.append(f"| **sum of modules** | {total:.3f} | {1000 * total / frames:.2f} | 100% | "
                     f"{frames / total if total > 0 else float('nan'):.1f} |")
        if wall is not None and wall > 0:
            lines.append(f"| **end to end ({frames} frames)** | {wall:.3f} | {1000 * wall / frames:.2f} | | {frames / wall:.1f} |")
        return "\n".join(lines)
