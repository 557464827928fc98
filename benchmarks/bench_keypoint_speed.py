"""KORSAL key-point pipeline speed on the CPU: whole-pipeline frames/s and per-module milliseconds per resolution.

Runs the ``stad stream`` pipeline (:func:`stad.engine.profile.profile_pipeline`: decode hand-over, preprocess,
temporal cue, network, decoding, online linking, drawing + MP4 encoding) on a synthetic video rendered at each
resolution (frame size = network input size), with the model of ``--config`` and random weights (the speed does not
depend on them), and finds the largest resolution that reaches ``--target`` frames/s (real time: 25).

Usage::

    .venv/bin/python benchmarks/bench_keypoint_speed.py --threads 2
    .venv/bin/python benchmarks/bench_keypoint_speed.py --sizes 128x160 240x320 --cue none --threads 1

Prints a Markdown table (best of ``--repeats`` runs); the figures go to ``benchmarks/RESULTS.md`` ("KORSAL speed").
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from stad.config import load_config
from stad.engine.profile import STREAM_MODULES, profile_pipeline
from stad.models.registry import build_model


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/keypoint_r18w025_synth_small.yaml", help="keypoint model config")
    parser.add_argument("--sizes", nargs="+", default=["96x128", "128x160", "192x256", "240x320", "288x384"],
                        help="resolutions HxW (default: 96x128 .. 288x384)")
    parser.add_argument("--cue", help="override model.options.cue (ssim, diff, prev, none)")
    parser.add_argument("--classes", type=int, default=10, help="action classes (synthetic: 10)")
    parser.add_argument("--frames", type=int, default=60, help="timed frames per run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", type=float, default=25.0, help="frames/s to reach (default 25)")
    return parser


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    overrides = [f"model.options.cue={args.cue}"] if args.cue else []
    cfg = load_config(args.config, overrides)
    model_cfg = replace(cfg.model, num_classes=args.classes, labels=[f"class{i}" for i in range(args.classes)], weights=None)
    torch.manual_seed(0)
    model = build_model(model_cfg).eval()
    labels = list(model_cfg.labels)
    rows, best = [], None
    for text in args.sizes:
        h, w = (int(v) for v in text.lower().split("x"))
        runs = [profile_pipeline(model, labels=labels, size=(h, w), frames=args.frames, warmup=args.warmup) for _ in range(args.repeats)]
        run = max(runs, key=lambda r: r.frames / r.wall)
        fps = run.frames / run.wall
        without_drawing = run.frames / max(run.wall - run.timer.times["drawing/writing"].seconds, 1e-9)
        ms = [1000 * run.timer.times[m].seconds / run.frames for m in STREAM_MODULES]
        rows.append((f"{h}x{w}", fps, without_drawing, ms))
        if fps >= args.target:
            best = f"{h}x{w}"
    opts = model_cfg.options
    print(f"model: {cfg.model.backbone} width {opts.get('width', 1.0)}, cue {opts.get('cue', 'ssim')}, "
          f"{args.classes} classes; {args.threads} CPU thread(s); {args.frames} frames, best of {args.repeats}\n")
    print("| input HxW | frames/s (whole pipeline) | frames/s (no drawing/writing) | "
          + " | ".join(f"{m} ms" for m in STREAM_MODULES) + " |")
    print("|---|---:|---:|" + "---:|" * len(STREAM_MODULES))
    for size, fps, nodraw, ms in rows:
        print(f"| {size} | {fps:.1f} | {nodraw:.1f} | " + " | ".join(f"{v:.2f}" for v in ms) + " |")
    print(f"\nlargest resolution reaching {args.target:g} frames/s: {best or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
