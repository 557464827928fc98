"""Per-frame speed of the online tube linker (``stad.tubes.link_online.OnlineLinker``) at a realistic load.

Synthetic, seeded detections of a 320x240 video (UCF101-24 size): 1-3 actors moving at constant
velocity (each occluded on a few short stretches), 4-12 jittered detections around each visible
actor and uniform clutter, 10-50 detections per frame in all. Two input forms:

* ``dense``: per-class scores ``(N, C)`` (SSD/ROAD style): the actor's class high, the others low;
* ``labels``: one class and score per detection (key-point/CenterNet/KORSAL style), actors' detections
  mostly of their class.

Only ``update`` (and the final ``finish``) are timed; the detections are generated beforehand.

Usage:
  python benchmarks/bench_link_online.py                       # 24 classes, 1000 frames, both forms
  python benchmarks/bench_link_online.py --frames 200 --min-dets 50 --max-dets 50 --repeats 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from stad.tubes.link_online import OnlineLinker

WIDTH, HEIGHT = 320, 240


def synthetic_stream(
    rng: np.random.Generator, *, frames: int, num_classes: int, min_dets: int, max_dets: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per frame ``(boxes [N, 4], dense scores [N, C], labels [N])`` with N in [min_dets, max_dets]."""
    n_actors = int(rng.integers(1, 4))
    cls = rng.integers(0, num_classes, n_actors)
    p0 = rng.uniform([20, 20], [WIDTH - 80, HEIGHT - 140], (n_actors, 2))
    velocity = rng.normal(0, 1.0, (n_actors, 2))
    size = rng.uniform([30, 80], [70, 140], (n_actors, 2))
    hidden = np.zeros((n_actors, frames), bool)  # short occlusions
    for a in range(n_actors):
        for start in rng.integers(0, frames, max(1, frames // 150)):
            hidden[a, start : start + int(rng.integers(2, 8))] = True
    out = []
    for t in range(frames):
        n_total = int(rng.integers(min_dets, max_dets + 1))
        boxes, dense, labels = [], [], []
        for a in np.flatnonzero(~hidden[:, t]):
            m = min(int(rng.integers(4, 13)), n_total - sum(len(b) for b in boxes))
            if m <= 0:
                break
            centre = np.clip(p0[a] + velocity[a] * t, 0, [WIDTH, HEIGHT])
            box = np.r_[centre - size[a] / 2, centre + size[a] / 2] + rng.normal(0, 4.0, (m, 4))
            scores = rng.uniform(0, 0.05, (m, num_classes))
            scores[:, cls[a]] = rng.uniform(0.3, 0.95, m)
            boxes.append(box)
            dense.append(scores)
            labels.append(np.where(rng.random(m) < 0.8, cls[a], rng.integers(0, num_classes, m)))
        n_clutter = n_total - sum(len(b) for b in boxes)
        xy = rng.uniform([0, 0], [WIDTH - 40, HEIGHT - 60], (n_clutter, 2))
        boxes.append(np.c_[xy, xy + rng.uniform([15, 30], [60, 120], (n_clutter, 2))])
        dense.append(rng.uniform(0, 0.3, (n_clutter, num_classes)) ** 2)
        labels.append(rng.integers(0, num_classes, n_clutter))
        b = np.concatenate(boxes)
        b[:, 0::2] = np.clip(b[:, 0::2], 0, WIDTH - 1)
        b[:, 1::2] = np.clip(b[:, 1::2], 0, HEIGHT - 1)
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2])
        out.append((b, np.concatenate(dense), np.concatenate(labels)))
    return out


def time_stream(stream, *, form: str, num_classes: int, **linker_args) -> tuple[float, float, float, int, int]:
    """Wall and CPU seconds in ``update``, wall seconds in ``finish``, mean live tubes, number of tubes."""
    linker = OnlineLinker(num_classes, image_size=(HEIGHT, WIDTH), **linker_args)
    live = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    for t, (boxes, dense, labels) in enumerate(stream, start=1):
        if form == "dense":
            linker.update(t, boxes, dense)
        else:
            linker.update(t, boxes, dense[np.arange(len(labels)), labels], labels)
        live += linker.num_live
    t1 = time.perf_counter()
    c1 = time.process_time()
    tubes = linker.finish()
    t2 = time.perf_counter()
    return t1 - t0, c1 - c0, t2 - t1, live // len(stream), len(tubes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=24)
    parser.add_argument("--min-dets", type=int, default=10)
    parser.add_argument("--max-dets", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    stream = synthetic_stream(
        np.random.default_rng(args.seed),
        frames=args.frames,
        num_classes=args.classes,
        min_dets=args.min_dets,
        max_dets=args.max_dets,
    )
    n_dets = sum(len(b) for b, _, _ in stream)
    print(f"{args.frames} frames, {args.classes} classes, {n_dets / args.frames:.1f} detections per frame (mean)")
    for form in ("dense", "labels"):
        runs = [time_stream(stream, form=form, num_classes=args.classes) for _ in range(args.repeats)]
        update_s, cpu_s, finish_s, live, n_tubes = min(runs)
        print(
            f"  {form:6s}: {1e3 * update_s / args.frames:.3f} ms/frame update (best of {args.repeats}; "
            f"{1e3 * cpu_s / args.frames:.3f} CPU ms/frame), finish {1e3 * finish_s:.1f} ms, "
            f"{live} live tubes on average, {n_tubes} tubes of >= 8 frames"
        )


if __name__ == "__main__":
    main()
