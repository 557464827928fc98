"""Rendering speed of the synthetic benchmark (frames per second), per preset.

Measures, on ``--videos`` videos of each preset (one process, one thread of Python):

* render: ``render_video`` in memory (scene sampling + drawing + noise), no files;
* render + JPEG: ``render_dataset`` in the ACT layout into a temporary folder (what ``stad synth`` does).

Each figure is the best of ``--repeats`` runs, as frames per wall-clock second and, in parentheses, per CPU second
of this process (less sensitive to other jobs sharing the machine; file-system waits are not CPU time).

Usage::

    .venv/bin/python benchmarks/bench_synth.py --presets tiny small benchmark --videos 16

Prints a Markdown table; the figures go to ``benchmarks/RESULTS.md`` ("Synthetic rendering speed").
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from stad.data.synthetic import SynthConfig, render_dataset, render_video


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "benchmark"])
    parser.add_argument("--videos", type=int, default=16, help="videos per preset (capped at the preset's count)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    return parser


def _best(fn, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU (process) seconds of ``repeats`` runs of ``fn``."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def main(args: argparse.Namespace) -> int:
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    print("| preset | size (HxW) | videos x frames | render only: frames/s wall (per CPU-s) "
          "| render + JPEG write: frames/s wall (per CPU-s) |")
    print("|---|---|---|---|---|")
    for name in args.presets:
        base = SynthConfig.preset(name)
        cfg = SynthConfig.preset(name, videos=min(args.videos, base.videos))
        frames = cfg.videos * cfg.frames
        render_s = _best(lambda: [render_video(cfg, i) for i in range(cfg.videos)], args.repeats)

        def write() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                render_dataset(cfg, tmp)

        write_s = _best(write, args.repeats)
        print(f"| {name} | {cfg.height}x{cfg.width} | {cfg.videos} x {cfg.frames} "
              f"| {frames / render_s[0]:,.0f} ({frames / render_s[1]:,.0f}) "
              f"| {frames / write_s[0]:,.0f} ({frames / write_s[1]:,.0f}) |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
