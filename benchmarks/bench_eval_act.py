"""Speed and peak memory of the ACT-protocol evaluation at UCF101-24 scale (seeded synthetic inputs).

Scale (split-1 test set of UCF101-24): 910 videos, ~150k frames, 24 classes, one class per video with
1-3 ground-truth tubes; ~10 detections per frame (~1.5M rows in the frame detections CSV); 10 tubes per
video and class for video-mAP (~218k tubes, lengths uniform in 15..T).

Every measured phase runs in a fresh subprocess so that its peak RSS (``ru_maxrss``) is its own.

    .venv/bin/python benchmarks/bench_eval_act.py            # all phases, prints a Markdown table
    .venv/bin/python benchmarks/bench_eval_act.py --small    # 1/10 scale, quick check
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stad.data.act import load_act, save_act
from stad.structures import FrameDetections, Tube, TubeAnnotations

SEED = 0
N_CLASSES = 24


def make_ground_truth(rng: np.random.Generator, n_videos: int) -> TubeAnnotations:
    """UCF101-24-like ground truth: T in 60..270 (mean ~165), one class per video, 1-3 tubes."""
    gttubes, nframes, resolution = {}, {}, {}
    for i in range(n_videos):
        v = f"Class{i % N_CLASSES:02d}/v_{i:04d}"
        T = int(rng.integers(60, 271))
        c = i % N_CLASSES
        tubes = []
        for _ in range(int(rng.integers(1, 4))):
            s = int(rng.integers(1, T // 2))
            e = int(rng.integers(s + 15, T + 1))
            x, y = rng.uniform(0, 200), rng.uniform(0, 120)
            w, h = rng.uniform(40, 110), rng.uniform(60, 110)
            drift = np.cumsum(rng.normal(0, 1.0, (e - s + 1, 2)), axis=0)
            f = np.arange(s, e + 1, dtype=float)
            boxes = np.stack([x + drift[:, 0], y + drift[:, 1], x + w + drift[:, 0], y + h + drift[:, 1]], 1)
            tubes.append(np.column_stack([f, np.clip(boxes, 0, [319, 239, 319, 239])]))
        gttubes[v] = {c: tubes}
        nframes[v] = T
        resolution[v] = (240, 320)
    videos = sorted(nframes)
    return TubeAnnotations(labels=[f"class{c:02d}" for c in range(N_CLASSES)], gttubes=gttubes, nframes=nframes,
                           resolution=resolution, train_videos=[[]], test_videos=[videos], name="bench")


def make_frame_detections(rng: np.random.Generator, gt: TubeAnnotations, per_frame: int = 10) -> FrameDetections:
    """~``per_frame`` detections on every frame: jittered GT boxes (true class 70%) and random boxes."""
    videos = gt.test_videos[0]
    parts = []
    for iv, v in enumerate(videos):
        T = gt.nframes[v]
        n = T * per_frame
        frame = rng.integers(1, T + 1, n)
        label = rng.integers(0, N_CLASSES, n)
        x1, y1 = rng.uniform(0, 250, n), rng.uniform(0, 170, n)
        boxes = np.column_stack([x1, y1, x1 + rng.uniform(20, 70, n), y1 + rng.uniform(30, 70, n)])
        score = rng.random(n) * 0.5
        for c, tubes in gt.gttubes[v].items():
            for t in tubes:  # two detections per GT box: one good, one sloppy
                m = t.shape[0]
                f = np.repeat(t[:, 0].astype(int), 2)
                b = np.repeat(t[:, 1:5], 2, axis=0) + rng.normal(0, [[3.0], [12.0]] * m, (2 * m, 4))
                b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
                lab = np.where(rng.random(2 * m) < 0.7, c, rng.integers(0, N_CLASSES, 2 * m))
                frame = np.r_[frame, f]
                label = np.r_[label, lab]
                boxes = np.r_[boxes, b]
                score = np.r_[score, 0.3 + 0.7 * rng.random(2 * m)]
        parts.append((np.full(frame.size, iv), frame, label, np.round(score, 4), np.round(boxes, 2)))
    cols = [np.concatenate([p[i] for p in parts]) for i in range(5)]
    return FrameDetections(list(videos), cols[0], cols[1], cols[2], cols[3], cols[4])


def make_tubes(rng: np.random.Generator, gt: TubeAnnotations, per_class: int = 10) -> dict[str, list[Tube]]:
    """``per_class`` tubes per video and class (float32 boxes, as the ACT/MOC linker writes them)."""
    out = {}
    for v in gt.test_videos[0]:
        T = gt.nframes[v]
        true_c, true_tubes = next(iter(gt.gttubes[v].items()))
        tubes = []
        for c in range(N_CLASSES):
            for k in range(per_class):
                if c == true_c and k < len(true_tubes):  # a noisy copy of a GT tube
                    g = true_tubes[k]
                    s0, e0 = int(g[0, 0]), int(g[-1, 0])
                    s = max(1, s0 + int(rng.integers(-5, 6)))
                    e = min(T, max(s + 14, e0 + int(rng.integers(-5, 6))))
                    f = np.arange(s, e + 1)
                    base = g[np.clip(f - s0, 0, len(g) - 1), 1:5] + rng.normal(0, 3, (f.size, 4))
                    score = 0.5 + 0.5 * rng.random()
                else:
                    L = int(rng.integers(15, T + 1))
                    s = int(rng.integers(1, T - L + 2))
                    f = np.arange(s, s + L)
                    x, y = rng.uniform(0, 230), rng.uniform(0, 150)
                    base = np.array([x, y, x + 60, y + 80]) + np.cumsum(rng.normal(0, 1, (L, 4)), axis=0)
                    score = 0.5 * rng.random()
                base[:, 2:] = np.maximum(base[:, 2:], base[:, :2] + 1)
                boxes = np.column_stack([f, base, np.full(f.size, score)]).astype(np.float32)
                tubes.append(Tube(label=c, score=float(np.float32(score)), boxes=boxes))
        out[v] = tubes
    return out


def _peak_mb() -> float:
    """Peak RSS of this process (VmHWM; ``ru_maxrss`` would include the parent's peak after fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def phase(name: str, folder: Path) -> dict:
    """Run one measured phase in this (fresh) process; returns timings and peak RSS."""
    from stad.eval.frame_map import frame_map
    from stad.eval.predictions import read_frame_detections, read_tubes
    from stad.eval.video_map import video_map

    gt = load_act(folder / "gt.pkl")
    base = _peak_mb()
    out: dict = {"phase": name, "rss_after_gt_mb": base}
    if name.startswith("frame"):
        protocol = name.split("-")[1]
        t0, c0 = time.perf_counter(), time.process_time()
        dets = read_frame_detections(folder / "dets.csv", gt)
        t1, c1 = time.perf_counter(), time.process_time()
        res = frame_map(gt, dets, protocol=protocol)
        t2, c2 = time.perf_counter(), time.process_time()
        out |= {"rows": len(dets), "read_s": t1 - t0, "eval_s": t2 - t1, "read_cpu_s": c1 - c0, "eval_cpu_s": c2 - c1,
                "mAP": res.mAP}
    elif name == "video":
        with (folder / "tubes.pkl").open("rb") as f:
            tubes = pickle.load(f)
        t1, c1 = time.perf_counter(), time.process_time()
        res = video_map(gt, tubes)
        t2, c2 = time.perf_counter(), time.process_time()
        out |= {"rows": sum(len(t) for t in tubes.values()), "eval_s": t2 - t1, "eval_cpu_s": c2 - c1, "mAP": res.mAP}
    elif name == "video-json":
        t0, c0 = time.perf_counter(), time.process_time()
        tubes = read_tubes(folder / "tubes_subset.json", gt)
        t1, c1 = time.perf_counter(), time.process_time()
        out |= {"rows": sum(len(t) for t in tubes.values()), "read_s": t1 - t0, "read_cpu_s": c1 - c0,
                "boxes": int(sum(t.boxes.shape[0] for ts in tubes.values() for t in ts))}
    out["peak_rss_mb"] = _peak_mb()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="1/10 scale")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.folder)))
        return
    from stad.eval.predictions import write_frame_detections, write_tubes

    n_videos = 91 if args.small else 910
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        gt = make_ground_truth(rng, n_videos)
        save_act(gt, folder / "gt.pkl")
        dets = make_frame_detections(rng, gt)
        write_frame_detections(dets, folder / "dets.csv")
        tubes = make_tubes(rng, gt)
        with (folder / "tubes.pkl").open("wb") as f:
            pickle.dump(tubes, f, protocol=5)
        subset = {v: ts[::10] for v, ts in tubes.items()}  # 1 tube per video and class, for the JSON reader
        write_tubes(subset, folder / "tubes_subset.json")
        n_frames = sum(gt.nframes.values())
        n_boxes = sum(t.boxes.shape[0] for ts in tubes.values() for t in ts)
        print(f"generated in {time.perf_counter() - t0:.1f} s: {n_videos} videos, {n_frames} frames, {len(dets)} detections "
              f"(CSV {(folder / 'dets.csv').stat().st_size / 1e6:.0f} MB), {sum(len(t) for t in tubes.values())} tubes "
              f"({n_boxes} boxes), JSON subset {(folder / 'tubes_subset.json').stat().st_size / 1e6:.0f} MB", flush=True)
        results = []
        for name in ("frame-act", "frame-voc", "frame-yowo", "video", "video-json"):
            proc = subprocess.run([sys.executable, __file__, "--phase", name, "--folder", str(folder)],
                                  capture_output=True, text=True, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(res)
            print(json.dumps(res), flush=True)
    print("\n| phase | rows | read: wall / CPU (s) | evaluate: wall / CPU (s) | peak RSS (MB) |")
    print("|:--|--:|--:|--:|--:|")
    for r in results:
        read = f"{r['read_s']:.2f} / {r['read_cpu_s']:.2f}" if "read_s" in r else "-"
        ev = f"{r['eval_s']:.2f} / {r['eval_cpu_s']:.2f}" if "eval_s" in r else "-"
        print(f"| {r['phase']} | {r['rows']} | {read} | {ev} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
