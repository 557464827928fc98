"""STEP inference speed on the CPU: keyframes/s of the full-size network and of the CPU variant.

Times ``STEPDetector.detect`` (backbone + context + the 3 steps + post-processing) on random 36-frame clips with
random weights (speed does not depend on them), batch ``--batch``, after one untimed warm-up call; data loading is
not included. Variants: ``full`` = configs/step_i3d_ava.yaml's network (Inception-I3D to Mixed_4f, 400x400,
60 classes), ``cpu`` = configs/step_i3dw8_synth.yaml's (channels / 8, 128x128, 12 classes).

Usage::

    .venv/bin/python benchmarks/bench_step_speed.py --threads 2
    .venv/bin/python benchmarks/bench_step_speed.py --variants cpu --batch 8 --repeats 5

Prints a Markdown table; the figures go to ``benchmarks/RESULTS.md`` ("STEP").
"""

from __future__ import annotations

import argparse
import time

import torch

from stad.config import config_from_dict, load_config
from stad.models.registry import build_model

VARIANTS = {
    "full": ("configs/step_i3d_ava.yaml", 60),
    "cpu": ("configs/step_i3dw8_synth.yaml", 12),
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["full", "cpu"], choices=sorted(VARIANTS))
    parser.add_argument("--batch", type=int, default=1, help="keyframe clips per detect call (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per variant (default 2)")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def build(variant: str) -> tuple[torch.nn.Module, int]:
    path, classes = VARIANTS[variant]
    cfg = load_config(path)
    options = {k: v for k, v in cfg.model.options.items() if k not in ("backbone_weights", "cls_pretrained")}
    options["input_size"] = list(cfg.data.input_size)
    model_cfg = config_from_dict({"model": {"name": "step", "num_classes": classes, "options": options}}).model
    torch.manual_seed(0)
    return build_model(model_cfg).eval(), int(cfg.data.input_size[0])


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    print(f"| variant | input | batch | s per call | keyframes/s | threads |\n|---|---|---:|---:|---:|---:|")
    for variant in args.variants:
        model, size = build(variant)
        clip = torch.randn(args.batch, 36, 3, size, size)
        with torch.inference_mode():
            model.detect({"clip": clip})
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model.detect({"clip": clip})
                times.append(time.perf_counter() - start)
        best = min(times)
        print(f"| {variant} | 36x{size}x{size} | {args.batch} | {best:.2f} | {args.batch / best:.2f} | {args.threads} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
