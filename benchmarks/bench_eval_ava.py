"""Speed and memory of AVA frame-mAP (``stad.eval.ava_map``) at AVA v2.2 val scale.

Generates seeded AVA-format files (64 videos x 897 keyframes, ~1M prediction rows with 4-decimal
scores, so ties are as frequent as in real prediction files, and keyframes over the 50-detection cap),
then times reading + evaluation in a fresh process and reports its peak memory. ``--check-videos N``
also evaluates the first N videos with the straight loop implementation of the official rules from
the tests and prints both mAPs.

Usage::

    .venv/bin/python benchmarks/bench_eval_ava.py [--videos 64] [--out /tmp/stad_bench_ava] [--record]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LABELMAP_IDS = [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37,
                38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68,
                69, 70, 72, 73, 74, 76, 77, 78, 79, 80]  # the 60 ids of ava_action_list_v2.1_for_activitynet_2018


def generate(out: Path, *, videos: int, seed: int) -> None:
    """Write gt.csv, det.csv, labelmap.pbtxt and excluded.csv under ``out`` (seeded, deterministic)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    seconds = np.arange(902, 1799)
    gt_lines: list[str] = []
    det_lines: list[str] = []
    excluded = []
    for v in range(videos):
        video = f"v{v:03d}_{rng.integers(10**6):06d}"
        for ts in seconds:
            if rng.random() < 0.002:
                excluded.append(f"{video},{ts:04d}")
            persons = rng.poisson(2.5)
            xy = rng.random((persons, 2)) * 0.6
            wh = 0.1 + rng.random((persons, 2)) * 0.35
            boxes = np.round(np.concatenate([xy, np.minimum(xy + wh, 1.0)], axis=1), 3)
            person_actions = []
            for p, box in enumerate(boxes):
                box_text = ",".join(f"{c:.3f}" for c in box)
                actions = rng.choice(80, size=1 + rng.poisson(0.8), replace=False) + 1
                person_actions.append(actions)
                gt_lines += [f"{video},{ts:04d},{box_text},{action},{p}" for action in actions]
            # detections: jittered GT boxes (their true actions score higher) plus false boxes;
            # several classes per box with 4-decimal scores; every tenth keyframe goes over the cap
            false_boxes = rng.poisson(0.8)
            det_boxes = np.concatenate([boxes + rng.normal(0, 0.03, boxes.shape), rng.random((false_boxes, 4))])
            det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 0.02)
            classes_per_box = 5 if rng.random() < 0.9 else 25
            for b, box in enumerate(det_boxes):
                box_text = ",".join(f"{c:.3f}" for c in box)
                actions = rng.choice(80, size=classes_per_box, replace=False) + 1
                scores = rng.beta(0.5, 4.0, size=classes_per_box)
                if b < persons:
                    true = person_actions[b]
                    actions = np.concatenate([true, actions[~np.isin(actions, true)]])[:classes_per_box]
                    scores[: len(true)] = rng.beta(2.0, 2.0, size=len(true))[:classes_per_box]
                det_lines += [f"{video},{ts:04d},{box_text},{a},{s:.4f}" for a, s in zip(actions, np.round(scores, 4))]
    (out / "gt.csv").write_text("\n".join(gt_lines) + "\n")
    (out / "det.csv").write_text("\n".join(det_lines) + "\n")
    (out / "excluded.csv").write_text("\n".join(excluded) + ("\n" if excluded else ""))
    (out / "labelmap.pbtxt").write_text("".join(f'item {{\n  name: "a{i}"\n  id: {i}\n}}\n' for i in LABELMAP_IDS))


def evaluate(folder: Path, *, trace: bool) -> dict:
    """Read + evaluate in this process; returns wall/CPU seconds and memory (tracemalloc slows Python
    code a lot, so a traced run is only used for its peak and a separate run gives the times)."""
    from stad.data.ava import read_ava_annotations, read_ava_predictions, read_excluded_timestamps, read_labelmap
    from stad.eval.ava_map import ava_map

    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace:
        tracemalloc.start()
    start, cpu_start = time.perf_counter(), time.process_time()
    labelmap = read_labelmap(folder / "labelmap.pbtxt")
    excluded = read_excluded_timestamps(folder / "excluded.csv")
    gt = read_ava_annotations(folder / "gt.csv")
    det = read_ava_predictions(folder / "det.csv")
    read_s, read_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    result = ava_map(gt, det, labelmap, excluded=excluded)
    total_s, total_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    figures = {
        "gt_rows": len(gt),
        "det_rows": len(det),
        "read_s": round(read_s, 2),
        "eval_s": round(total_s - read_s, 2),
        "total_s": round(total_s, 2),
        "read_cpu_s": round(read_cpu_s, 2),
        "eval_cpu_s": round(total_cpu_s - read_cpu_s, 2),
        "total_cpu_s": round(total_cpu_s, 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_imports_mb": round(baseline_rss / 1024),
        "replayed_keyframes": result.replayed_keyframes,
        "mAP": result.mAP,
    }
    if trace:
        figures["traced_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    return figures


def check(folder: Path, videos: int) -> tuple[float, float]:
    """mAP of stad and of the tests' loop implementation on the rows of the first ``videos`` videos."""
    sys.path.insert(0, str(REPO / "tests" / "eval"))
    from test_ava_map import evaluate as stad_evaluate  # noqa: E402 - the tests' helpers
    from test_ava_map import loop_ava_map

    def lines(name: str) -> list[list[str]]:
        rows = [line.split(",") for line in (folder / name).read_text().splitlines() if line]
        keep = sorted({row[0] for row in rows})[:videos]
        return [row for row in rows if row[0] in keep]

    gt_lines, det_lines = lines("gt.csv"), lines("det.csv")
    excluded = {(v, int(t)) for v, t in (line.split(",") for line in (folder / "excluded.csv").read_text().split())}
    expected, _ = loop_ava_map(gt_lines, det_lines, LABELMAP_IDS, excluded)
    return stad_evaluate(gt_lines, det_lines, LABELMAP_IDS, excluded).mAP, expected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/stad_bench_ava"))
    parser.add_argument("--check-videos", type=int, default=0, help="compare with the loop implementation on N videos")
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    parser.add_argument("--evaluate-only", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evaluate_only is not None:
        print(json.dumps(evaluate(args.evaluate_only, trace=args.trace)))
        return 0
    folder = args.out / f"videos{args.videos}_seed{args.seed}"
    if not (folder / "labelmap.pbtxt").is_file():
        start = time.perf_counter()
        generate(folder, videos=args.videos, seed=args.seed)
        print(f"generated {folder} in {time.perf_counter() - start:.1f} s")
    # Fresh processes, so that peak memory is the evaluation's own: one timed, one under tracemalloc.
    def child(*extra: str) -> dict:
        run = subprocess.run(
            [sys.executable, __file__, "--evaluate-only", str(folder), *extra], check=True, capture_output=True, text=True
        )
        return json.loads(run.stdout.strip().splitlines()[-1])

    figures = child()
    figures["traced_peak_mb"] = child("--trace")["traced_peak_mb"]
    print(json.dumps(figures, indent=2))
    check_line = ""
    if args.check_videos:
        ours, loop = check(folder, args.check_videos)
        check_line = (
            f"On the first {args.check_videos} videos the tests' loop implementation of the official rules gives "
            f"mAP {loop!r} and stad {ours!r} (difference {abs(ours - loop):.3g})."
        )
        print(check_line)
    if args.record:
        _record(figures, args, check_line)
    return 0


def _record(figures: dict, args: argparse.Namespace, check_line: str) -> None:
    import datetime
    import os
    import platform

    results = REPO / "benchmarks" / "RESULTS.md"
    text = results.read_text() if results.is_file() else "# Benchmark results\n"
    header = "## AVA evaluation speed"
    check_flag = f" --check-videos {args.check_videos}" if args.check_videos else ""
    body = (
        f"{header}\n\n"
        f"`.venv/bin/python benchmarks/bench_eval_ava.py --videos {args.videos} --seed {args.seed}{check_flag} --record` "
        f"({datetime.date.today()}, {platform.machine()}, one process, numpy {np.__version__}, load average "
        f"{os.getloadavg()[0]:.1f} on the shared machine).\n"
        f"Seeded synthetic AVA-val-scale files: {args.videos} videos x 897 keyframes, "
        f"{figures['gt_rows']} GT rows, {figures['det_rows']} prediction rows (4-decimal scores, every tenth "
        f"keyframe over the 50-detection cap). Read = label map + exclusions + both CSVs; evaluate = `ava_map`.\n\n"
        "| | read | evaluate | total |\n|---|---|---|---|\n"
        f"| wall s | {figures['read_s']} | {figures['eval_s']} | {figures['total_s']} |\n"
        f"| CPU s | {figures['read_cpu_s']} | {figures['eval_cpu_s']} | {figures['total_cpu_s']} |\n\n"
        f"Peak memory: {figures['traced_peak_mb']} MB traced (tracemalloc, separate run), {figures['max_rss_mb']} MB max "
        f"RSS of the evaluating process ({figures['rss_after_imports_mb']} MB after imports). mAP {figures['mAP']:.4f}; {figures['replayed_keyframes']} keyframes replayed with the "
        "reference's heap order (ties). The machine is shared, so wall time can exceed CPU time.\n"
        f"{check_line}\n\n"
        "The official ActivityNet evaluator is reported to take about 85 s at this scale (not run here).\n"
    )
    if header in text:
        start = text.index(header)
        end = text.find("\n## ", start + len(header))
        text = text[:start] + body + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    results.write_text(text)
    print(f"recorded in {results}")


if __name__ == "__main__":
    raise SystemExit(main())
