"""MOC inference speed on the CPU: frames per second over a whole video, with and without feature reuse.

For a video of ``T`` frames MOC decodes one K-frame window per start frame (``T - K + 1`` windows). Without feature
reuse every window runs the backbone on its K frames (K backbone passes per frame); with reuse
(:func:`stad.engine.families.tubelet.detect_video_tubelets`, the default) every frame's backbone + neck features are computed
once and kept in a rolling buffer for the K windows that contain it. Each configuration also runs with the input in
``torch.channels_last`` memory format. Timed: preprocessing, backbone, neck, heads and decoding of every window
(tube linking is timed separately in bench_tubes.py). Random weights (the speed does not depend on them).

Usage::

    .venv/bin/python benchmarks/bench_moc_speed.py --arch resnet18 dla34 --size 288 --threads 2

Prints a Markdown table (frames/s = T / seconds, best of ``--repeats``); the figures go to ``benchmarks/RESULTS.md``
("MOC inference speed").
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from stad.config import ModelConfig
from stad.engine.families.tubelet import TubeletInferenceConfig, detect_video_tubelets
from stad.models.moc import build_moc


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["resnet18", "dla34"], help="backbones (deformable necks, as released)")
    parser.add_argument("--size", type=int, default=288, help="input height = width (default 288)")
    parser.add_argument("--K", type=int, default=7)
    parser.add_argument("--classes", type=int, default=24, help="action classes (UCF101-24: 24)")
    parser.add_argument("--frames", type=int, default=24, help="frames of the timed video (reuse)")
    parser.add_argument("--frames-recompute", type=int, default=10, help="frames of the timed video (no reuse: slow)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    return parser


def _time(model: torch.nn.Module, frames: np.ndarray, cfg: TubeletInferenceConfig, repeats: int) -> float:
    """Best frames/s of ``repeats`` runs over the whole video."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        detect_video_tubelets(model, iter(frames), orig_size=frames.shape[1:3], device="cpu", cfg=cfg)
        best = min(best, time.perf_counter() - start)
    return len(frames) / best


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.size}x{args.size}, K={args.K}, "
          f"{args.classes} classes, batch 1 (one window per call)\n")
    print("| backbone | feature reuse | channels_last | frames/s | ms/frame |")
    print("|---|---|---|---:|---:|")
    for arch in args.arch:
        model = build_moc(ModelConfig(backbone=arch, num_classes=args.classes, options={"K": args.K, "deformable": True})).eval()
        for reuse in (False, True):
            T = args.frames if reuse else args.frames_recompute  # noqa: N806
            frames = rng.integers(0, 256, size=(T, 240, 320, 3), dtype=np.uint8)  # UCF101-24 frames, resized to size
            for channels_last in (False, True):
                model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                cfg = TubeletInferenceConfig(input_size=(args.size, args.size), window_batch=1, frame_chunk=1 if reuse else 8,
                                             reuse_features=reuse, channels_last=channels_last)
                _time(model, frames[: args.K + 1], cfg, 1)  # warm-up (allocator, oneDNN primitives)
                fps = _time(model, frames, cfg, args.repeats)
                print(f"| {arch} | {'yes' if reuse else 'no'} | {'yes' if channels_last else 'no'} | {fps:.2f} | {1000 / fps:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
