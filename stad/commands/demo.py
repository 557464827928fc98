"""``stad demo``: the end-to-end demonstration on the synthetic benchmark.

For now it renders the ``small`` synthetic preset into ``OUT/synth-small`` (reused when a complete rendering of
the same configuration is there), validates it, prints statistics and writes ``OUT/preview.mp4`` with the
ground-truth tubes drawn (class name and visibility on every box). Later steps (training a detector, linking,
evaluation) extend :func:`run_demo`.

Example::

    stad demo --out demo_output
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="render the synthetic benchmark, validate it, print statistics, write a preview video",
        description="End-to-end demo on the synthetic benchmark (renders it on first use).",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default ./demo_output)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data set (default 0)")
    parser.add_argument("--preview-videos", type=int, default=4, help="test videos in the preview (default 4)")
    # Hidden: tests run the demo on the tiny preset to stay fast.
    parser.add_argument("--preset", default="small", help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=main)
    return parser


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        dataset_dir: the synthetic data set (ACT layout).
        reused: True when an existing complete rendering was reused.
        summary: statistics of its ground truth (``stad.data.synthetic.DatasetSummary``).
        problems: validation problems (``stad.structures.Problem``), or None when validation was unavailable.
        preview: the preview MP4.
    """

    dataset_dir: Path
    reused: bool
    summary: object
    problems: list | None
    preview: Path


def run_demo(out_dir: str | Path = "demo_output", *, preset: str = "small", seed: int = 0, preview_videos: int = 4,
             progress: bool = True, log: Callable[[str], None] = print) -> DemoResult:
    """Render (or reuse), validate, summarize and preview the synthetic data set; see the module docstring.

    Args:
        out_dir: output folder; the data set goes to ``out_dir/synth-<preset>``, the video to ``out_dir/preview.mp4``.
        preset: synthetic preset (``small`` for the demo, ``tiny`` in tests).
        seed: data set seed.
        preview_videos: number of test videos tiled in the preview.
        progress: show progress bars.
        log: where the report lines go.
    """
    from stad.data.synthetic import SynthConfig, is_complete, load_annotations, render_dataset, summarize

    out = Path(out_dir)
    cfg = SynthConfig.preset(preset, seed=seed)
    data_dir = out / f"synth-{preset}"
    reused = is_complete(cfg, data_dir, layout="act")
    if reused:
        log(f"reusing the synthetic data set in {data_dir}")
        ann = load_annotations(data_dir)
    else:
        log(f"rendering the synthetic '{preset}' preset ({cfg.videos} videos x {cfg.frames} frames, "
            f"{cfg.height}x{cfg.width}) into {data_dir}")
        ann = render_dataset(cfg, data_dir, layout="act", progress=progress)

    problems = _validate(data_dir, log)
    summary = summarize(ann)
    log("statistics:")
    log(summary.format())
    preview = write_preview(ann, data_dir, out / "preview.mp4", videos=preview_videos, fps=min(cfg.fps, 15))
    log(f"preview with the ground-truth tubes: {preview}")
    return DemoResult(dataset_dir=data_dir, reused=reused, summary=summary, problems=problems, preview=preview)


def _validate(data_dir: Path, log: Callable[[str], None]) -> list | None:
    """Validate with ``stad.data.validate`` when that module exists; None (and a message) when it does not."""
    try:
        from stad.data.validate import validate_dataset
    except ModuleNotFoundError as err:
        if err.name != "stad.data.validate":
            raise
        log("validation skipped: stad.data.validate is not available in this installation")
        return None
    report = validate_dataset(data_dir)
    log(report.format_table())
    for problem in report.problems:
        log(f"problem: {problem}")
    log("validation: " + (f"{len(report.problems)} problem(s)" if report.problems else "no problems"))
    return list(report.problems)


def write_preview(ann, data_dir: Path, path: Path, *, videos: int = 4, fps: int = 15) -> Path:
    """Tile the first ``videos`` test videos (frames read back from the JPEGs) with their tubes drawn; write MP4.

    Every box shows the class name and its visibility (``v=0.73``); colours follow the tube's index in its video.
    """
    import numpy as np

    from stad.data.frames import act_frame_path, read_rgb
    from stad.viz.draw import TubeOverlay, draw_tubes, tile_videos
    from stad.viz.video import write_video

    names = (ann.test_videos[0] if ann.test_videos and ann.test_videos[0] else ann.videos)[:max(1, videos)]
    rendered = []
    for name in names:
        frames = np.stack([read_rgb(act_frame_path(data_dir, name, t)) for t in range(1, ann.nframes[name] + 1)])
        overlays = []
        for label, tubes in sorted(ann.gttubes[name].items()):
            vis = (ann.visibility or {}).get(name, {}).get(label, [None] * len(tubes))
            for tube, v in zip(tubes, vis):
                texts = [f"v={x:.2f}" for x in v] if v is not None else None
                overlays.append(TubeOverlay(identity=len(overlays), boxes=tube, text=ann.labels[label],
                                            frame_texts=texts))
        scale = max(1, math.ceil(240 / frames.shape[1]))
        rendered.append(draw_tubes(frames, overlays, scale=scale, font_scale=0.35))
    sizes = {v.shape[1:] for v in rendered}
    if len(sizes) > 1:  # different resolutions: show them one after the other at the first size
        rendered = [v for v in rendered if v.shape[1:] == rendered[0].shape[1:]]
    return write_video(path, tile_videos(rendered, columns=2), fps=fps)


def main(args: argparse.Namespace) -> int:
    result = run_demo(args.out, preset=args.preset, seed=args.seed, preview_videos=args.preview_videos,
                      progress=not args.no_progress)
    return 1 if result.problems else 0
