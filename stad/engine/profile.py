"""``stad profile``: per-module wall-clock timing of the online pipeline (:func:`stad.engine.stream.run_stream`),
as the KORSAL paper's speed table (:class:`stad.engine.timing.ModuleTimer`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stad.engine.timing import STREAM_MODULES, ModuleTimer

__all__ = ["STREAM_MODULES", "ModuleTimer", "ProfileResult", "load_profile_model", "profile_pipeline"]


def load_profile_model(
    spec: str | Path, overrides: Sequence[str] = (), *, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, list[str], tuple[int, int]]:
    """A frame detector to profile, its class names and its input size ``(H, W)``.

    ``spec`` is a stad checkpoint (``.pt``/``.pth``: trained weights) or a YAML config (a randomly initialised
    model; ``model.labels`` or ``model.num_classes`` gives the classes, no data set is read).
    """
    from dataclasses import replace

    from stad.config import load_config
    from stad.engine.families import family_name
    from stad.engine.families.common import load_detector
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
    if family_name(cfg.model.name) != "frame":
        raise StadError(f"{spec}: a {cfg.model.name!r} model of the {family_name(cfg.model.name)} family; stad profile "
                        f"times the online pipeline of frame detectors (keypoint)")
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
