"""Speed of tube building (ACT/MOC offline linking) and tubelets -> frame detections at UCF101-24 scale.

Synthetic, seeded tubelets shaped like MOC-Detector's decoder output: per video (320x240, one
action class, 1-3 actors on sub-ranges of the video) and per start frame ("window"), the top
``--per-window`` (100, MOC's N) tubelets over all classes: jittered candidates around each present
actor, mostly of the video's class and with high scores, plus low-scored clutter of any class.
Videos are generated and processed in chunks so memory stays bounded; only processing is timed,
as wall time and as CPU time of this process (the CPU time is the fair number on a shared machine;
with --workers > 1 the work happens in other processes, so only wall time is reported).

Usage:
  python benchmarks/bench_tubes.py                    # 900 videos, ~170 frames, K=7 (UCF101-24 test scale)
  python benchmarks/bench_tubes.py --videos 100 --frames-videos 20 --workers 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from stad.structures import Tubelets
from stad.tubes import build_tubes_for_videos, tubelets_to_frame_detections

WIDTH, HEIGHT = 320, 240


def synthetic_video(rng: np.random.Generator, *, nframes: int, K: int, num_classes: int, per_window: int) -> Tubelets:
    """MOC-like tubelets of one video: ``per_window`` tubelets at every start frame 1..nframes-K+1."""
    n_windows = nframes - K + 1
    video_class = int(rng.integers(num_classes))
    n_actors = int(rng.integers(1, 4))
    frames = np.arange(1, nframes + 1)
    starts = np.repeat(np.arange(1, n_windows + 1), per_window)  # [W * P]
    slot = np.tile(np.arange(per_window), n_windows)  # [W * P] peak index within its window
    label = rng.integers(0, num_classes, starts.size)
    score = rng.uniform(0.0, 0.15, starts.size) ** 2  # clutter: low scores
    # Clutter boxes: random, static over the K frames with a little noise.
    xy = rng.uniform([0, 0], [WIDTH - 40, HEIGHT - 60], (starts.size, 1, 2))
    wh = rng.uniform([20, 40], [80, 160], (starts.size, 1, 2))
    noise = rng.normal(0, 1.5, (starts.size, K, 4))
    shape = (starts.size, K, 2)
    boxes = np.concatenate([np.broadcast_to(xy, shape), np.broadcast_to(xy + wh, shape)], axis=-1)  # [N, K, 4]
    boxes = boxes + noise
    used = 0
    for _ in range(n_actors):
        first = int(rng.integers(1, max(2, nframes // 2)))
        last = int(rng.integers(min(first + 40, nframes), nframes + 1))
        p0 = rng.uniform([40, 40], [WIDTH - 80, HEIGHT - 120])
        velocity = rng.normal(0, 0.8, 2)
        size = rng.uniform([40, 90], [80, 160])
        centre = p0 + velocity * (frames - 1)[:, None]  # [T, 2]
        track = np.c_[centre - size / 2, centre + size / 2]  # [T, 4]
        m = int(rng.integers(10, 25))  # decoder peaks per window near this actor
        present = (starts >= first) & (starts + K - 1 <= last) & (slot >= used) & (slot < used + m)
        idx = np.flatnonzero(present)
        win = starts[idx][:, None] - 1 + np.arange(K)  # [n, K] 0-based frames
        jitter = rng.normal(0, 6.0, (idx.size, 1, 4)) + rng.normal(0, 1.0, (idx.size, K, 4))
        boxes[idx] = track[win] + jitter
        label[idx] = np.where(rng.random(idx.size) < 0.8, video_class, rng.integers(0, num_classes, idx.size))
        score[idx] = rng.uniform(0.2, 0.95, idx.size) * rng.uniform(0.5, 1.0, (idx.size,))
        used += m
    boxes[..., 0::2] = np.sort(np.clip(boxes[..., 0::2], 0, WIDTH - 1), axis=-1)  # x1 <= x2 despite the jitter
    boxes[..., 1::2] = np.sort(np.clip(boxes[..., 1::2], 0, HEIGHT - 1), axis=-1)
    return Tubelets(start=starts, label=label, score=score, boxes=boxes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=900)
    parser.add_argument("--min-frames", type=int, default=100)
    parser.add_argument("--max-frames", type=int, default=240, help="frames per video ~ U[min, max] (mean ~170)")
    parser.add_argument("--K", type=int, default=7)
    parser.add_argument("--classes", type=int, default=24)
    parser.add_argument("--per-window", type=int, default=100, help="tubelets per start frame (MOC's N)")
    parser.add_argument("--frames-videos", type=int, default=50, help="videos also converted to frame detections")
    parser.add_argument("--chunk", type=int, default=50, help="videos generated and linked together")
    parser.add_argument("--workers", type=int, default=0, help="processes for build_tubes_for_videos")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    build_s = frames_s = build_cpu = frames_cpu = 0.0  # wall and CPU (process) seconds
    windows = frame_windows = tubelets = n_tubes = n_dets = 0
    done = 0
    while done < args.videos:
        rng = np.random.default_rng([args.seed, done])
        names = [f"v{done + i:04d}" for i in range(min(args.chunk, args.videos - done))]
        nframes = {v: int(rng.integers(args.min_frames, args.max_frames + 1)) for v in names}
        per_video = {
            v: synthetic_video(rng, nframes=nframes[v], K=args.K, num_classes=args.classes, per_window=args.per_window)
            for v in names
        }
        windows += sum(n - args.K + 1 for n in nframes.values())
        tubelets += sum(len(t) for t in per_video.values())
        t0, c0 = time.perf_counter(), time.process_time()
        tubes = build_tubes_for_videos(per_video, num_classes=args.classes, nframes=nframes, workers=args.workers)
        build_s += time.perf_counter() - t0
        build_cpu += time.process_time() - c0
        n_tubes += sum(len(t) for t in tubes.values())
        convert = [v for v in names if done + names.index(v) < args.frames_videos]
        if convert:
            t0, c0 = time.perf_counter(), time.process_time()
            dets = tubelets_to_frame_detections({v: per_video[v] for v in convert}, convert)
            frames_s += time.perf_counter() - t0
            frames_cpu += time.process_time() - c0
            frame_windows += sum(nframes[v] - args.K + 1 for v in convert)
            n_dets += len(dets)
        done += len(names)
        print(f"  {done}/{args.videos} videos: build {build_s:.1f} s, frames {frames_s:.1f} s", flush=True)

    print(f"videos {args.videos}, K={args.K}, classes {args.classes}, {args.per_window} tubelets per window")
    print(f"build_tubes_for_videos (workers={args.workers}): {windows} windows, {tubelets} tubelets -> {n_tubes} tubes")
    print(f"  wall {build_s:.2f} s = {1e3 * build_s / windows:.3f} ms per window", end="")
    print("" if args.workers > 1 else f"; CPU {build_cpu:.2f} s = {1e3 * build_cpu / windows:.3f} ms per window")
    if frame_windows:
        print(f"tubelets_to_frame_detections: {frame_windows} windows -> {n_dets} frame detections")
        print(f"  wall {frames_s:.2f} s = {1e3 * frames_s / frame_windows:.3f} ms per window", end="")
        print(f"; CPU {frames_cpu:.2f} s = {1e3 * frames_cpu / frame_windows:.3f} ms per window")


if __name__ == "__main__":
    main()
