"""Per-module wall-clock timing of the online pipeline, as the KORSAL paper's speed table.

:class:`ModuleTimer` sums the seconds spent in each named stage (``with timer.time("network"): ...``) and prints a
Markdown table: total seconds, milliseconds per frame, share of the total and the frame rate the stage alone would
allow. On CUDA the timer synchronises the device before reading the clock (asynchronous kernels would otherwise be
billed to the next stage).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


# ---------------------------------------------------------------------------------------------------
# The `stad profile` run


def load_profile_model(
    spec: str | Path, overrides: Sequence[str] = (), *, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, list[str], tuple[int, int]]:
    """A frame detector to profile, its class names and its input size ``(H, W)``.

    ``spec`` is a stad checkpoint (``.pt``/``.pth``: trained weights) or a YAML config (a randomly initialised
    model; ``model.labels`` or ``model.num_classes`` gives the classes, no data set is read).
    """
    from dataclasses import replace

    from stad.config import load_config
    from stad.engine.runner import load_detector
    from stad.errors import StadError
    from stad.models.registry import build_model

    path = Path(spec)
    if path.suffix in (".pt", ".pth"):
        if overrides:
            raise StadError("config overrides apply to a YAML config, not to a checkpoint")
        model, cfg = load_detector(path, device=device)
    else:
        cfg = load_config(path, list(overrides))
        if cfg.model.labels:
            cfg = replace(cfg, model=replace(cfg.model, num_classes=len(cfg.model.labels)))
        model = build_model(replace(cfg.model, weights=None)).to(device).eval()
    if not hasattr(model, "detect_frames"):
        raise StadError(f"{spec}: a {cfg.model.name!r} model; profiling needs a frame detector (keypoint)")
    labels = list(cfg.model.labels) or [f"class{i}" for i in range(cfg.model.num_classes)]
    return model, labels, tuple(int(v) for v in cfg.data.input_size)  # type: ignore[return-value]


@dataclass
class ProfileResult:
    """Timing of :func:`profile_pipeline`: ``frames`` timed frames, per-module ``timer``, end-to-end ``wall`` seconds."""

    frames: int
    timer: ModuleTimer
    wall: float


def profile_pipeline(
    model: torch.nn.Module,
    *,
    labels: Sequence[str],
    size: tuple[int, int],
    frames: int = 100,
    warmup: int = 5,
    device: torch.device | str = "cpu",
    source: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> ProfileResult:
    """Time the :func:`stad.engine.stream.run_stream` pipeline on ``frames`` frames (after ``warmup`` untimed ones).

    Frames come from ``source`` (video file or frame folder, decoded ahead of time and repeated if short) or from a
    synthetic video rendered at ``size`` (``stad.data.synthetic``); either way the "decode" row then measures
    handing over decoded frames, and the network input is ``size``. The annotated MP4 and tubes JSON go to
    ``out_dir`` (a temporary folder by default), drawn at the video's own size (no upscaling), so drawing and
    encoding are timed too.
    """
    import tempfile

    from stad.engine.stream import FrameSource, StreamConfig, run_stream

    h, w = size
    total = frames + warmup
    if source is not None:
        from stad.engine.infer import read_source

        video, fps = read_source(source)
        video = np.concatenate([video] * (total // len(video) + 1))[:total]
    else:
        from stad.data.synthetic import SynthConfig, render_video

        synth = SynthConfig.preset("tiny", frames=max(total, 16), height=h, width=w)  # the renderer needs >= 12
        video, fps = render_video(synth, 0).frames[:total], float(synth.fps)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(out_dir) if out_dir is not None else Path(tmp)
        cfg = StreamConfig(input_size=(h, w), scale=1)  # drawn and encoded at the video's own size
        if warmup:
            run_stream(model, FrameSource("warmup", fps, iter(video[:warmup])), target, labels=labels, device=device, cfg=cfg)
        timer = ModuleTimer(device=device)
        result = run_stream(model, FrameSource("profile", fps, iter(video[warmup:])), target, labels=labels, device=device,
                            cfg=cfg, timer=timer)
    return ProfileResult(frames=result.frames, timer=timer, wall=result.wall)
