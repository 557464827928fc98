"""``stad demo``: the end-to-end demonstration on the synthetic benchmark.

1. renders the ``small`` synthetic preset into ``OUT/synth-small`` (reused when a complete rendering of the same
   configuration is there), validates it and prints statistics; writes ``OUT/preview.mp4`` with the ground-truth
   tubes drawn (class name and visibility on every box);
2. runs the bundled MOC checkpoint (``stad/assets/moc_r18w025_synth_small.pt``, trained on the train split by
   ``configs/moc_r18w025_synth_small.yaml``) over every test video: tubelets, tubes, frame detections;
3. prints frame-mAP and video-mAP (ACT protocol) and writes ``OUT/detections.mp4`` (ground truth left, detected
   tubes right, coloured by identity with class and score), ``OUT/detections.csv``, ``OUT/tubes.json`` and
   ``OUT/report.md``.

Example::

    stad demo --out demo_output
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BUNDLED_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "moc_r18w025_synth_small.pt"


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
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_CHECKPOINT,
                        help="detector checkpoint (default: the bundled MOC model trained on the synthetic benchmark)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--no-detect", action="store_true", help="only render, validate and preview the data")
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
        problems: validation problems (``stad.structures.Problem``).
        preview: the preview MP4.
        metrics: frame-mAP / video-mAP of the detector (None when detection was not run).
        detections_video: the MP4 with ground truth and detected tubes (None when detection was not run).
    """

    dataset_dir: Path
    reused: bool
    summary: object
    problems: list
    preview: Path
    metrics: dict | None = None
    detections_video: Path | None = None


def run_demo(out_dir: str | Path = "demo_output", *, preset: str = "small", seed: int = 0, preview_videos: int = 4,
             checkpoint: str | Path | None = BUNDLED_CHECKPOINT, device: str = "auto", progress: bool = True,
             log: Callable[[str], None] = print) -> DemoResult:
    """Render (or reuse), validate, summarize and preview the synthetic data set; see the module docstring.

    Args:
        out_dir: output folder; the data set goes to ``out_dir/synth-<preset>``, the video to ``out_dir/preview.mp4``.
        preset: synthetic preset (``small`` for the demo, ``tiny`` in tests).
        seed: data set seed.
        preview_videos: number of test videos tiled in the preview (and in the detections video).
        checkpoint: detector to run on the test videos; None only renders, validates and previews.
        device: where the detector runs.
        progress: show progress bars.
        log: where the report lines go.
    """
    from stad.data.synthetic import load_annotations, plan_dataset, render_dataset, summarize

    out = Path(out_dir)
    data_dir = out / f"synth-{preset}"
    plan = plan_dataset(data_dir, {"preset": preset, "seed": seed}, layout="act")  # never renders over a data set
    reused = plan.action == "use"
    if reused:
        log(f"reusing the synthetic data set in {data_dir}")
        ann = load_annotations(data_dir)
    else:
        cfg = plan.config
        assert cfg is not None
        what = "resuming the interrupted rendering of" if plan.action == "resume" else "rendering"
        log(f"{what} the synthetic '{preset}' preset ({cfg.videos} videos x {cfg.frames} frames, "
            f"{cfg.height}x{cfg.width}) into {data_dir}")
        ann = render_dataset(cfg, data_dir, layout="act", progress=progress)

    problems = _validate(data_dir, log)
    summary = summarize(ann)
    log("statistics:")
    log(summary.format())
    fps = plan.config.fps if plan.config is not None else 30
    preview = write_preview(ann, data_dir, out / "preview.mp4", videos=preview_videos, fps=min(fps, 15))
    log(f"preview with the ground-truth tubes: {preview}")
    result = DemoResult(dataset_dir=data_dir, reused=reused, summary=summary, problems=problems, preview=preview)
    if checkpoint is not None:
        result.metrics, result.detections_video = detect_and_evaluate(
            ann, data_dir, out, checkpoint=checkpoint, device=device, videos=preview_videos, progress=progress, log=log
        )
    return result


def detect_and_evaluate(ann, data_dir: Path, out: Path, *, checkpoint: str | Path, device: str = "auto",
                        videos: int = 4, progress: bool = True, log: Callable[[str], None] = print) -> tuple[dict, Path]:
    """Run ``checkpoint`` on the test videos of split 1, print frame-/video-mAP, write predictions and a video."""
    import time

    from stad.engine.families.common import format_report, load_detector
    from stad.engine.families.tubelet import inference_config, link_config, predict_videos, write_predictions
    from stad.engine.infer import evaluate_predictions
    from stad.engine.train import resolve_device
    from stad.errors import StadError

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"detector checkpoint not found: {checkpoint}")
    dev = resolve_device(device)
    model, cfg = load_detector(checkpoint, device=dev)
    if cfg.model.labels and list(cfg.model.labels) != list(ann.labels):
        raise StadError(f"{checkpoint} predicts {cfg.model.labels}, the data set has {ann.labels}")
    test_videos = ann.split_videos(1, "test")
    log(f"detecting with {checkpoint.name} ({cfg.model.name}, {cfg.model.backbone}, K={cfg.data.K}, "
        f"input {cfg.data.input_size[0]}x{cfg.data.input_size[1]}) on {len(test_videos)} test videos ...")
    started = time.perf_counter()
    preds = predict_videos(model, ann, data_dir, test_videos, device=dev, cfg=inference_config(cfg),
                           link=link_config(cfg), progress=progress)
    seconds = time.perf_counter() - started
    frames = sum(int(ann.nframes[v]) for v in test_videos)
    log(f"{frames} frames in {seconds:.1f} s ({frames / seconds:.1f} frames/s, detection + linking, {dev})")
    metrics = evaluate_predictions(ann, preds, split=1)
    write_predictions(preds, out)
    (out / "report.md").write_text(format_report(metrics))
    log(format_report(metrics))
    log("frame-mAP@0.5 {:.2f} | video-mAP@0.2 {:.2f} | @0.5 {:.2f} | @0.75 {:.2f} | @0.5:0.95 {:.2f}".format(
        *(100 * metrics[k] for k in ("frame_mAP", "video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.75", "video_mAP@0.5:0.95"))))
    video = write_detections_video(ann, data_dir, preds.tubes, out / "detections.mp4", videos=test_videos[:max(1, videos)])
    log(f"ground truth (left) and detected tubes (right): {video}")
    log(f"predictions: {out / 'detections.csv'}, {out / 'tubes.json'}; report: {out / 'report.md'}")
    return {k: v for k, v in metrics.items() if not k.startswith("_")}, video


def _validate(data_dir: Path, log: Callable[[str], None]) -> list:
    """Validate the rendered data set (``stad.data.validate``), log the table and every problem."""
    from stad.data.validate import validate_dataset

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


def write_detections_video(ann, data_dir: Path, tubes: dict, path: Path, *, videos: list[str], min_score: float = 0.1,
                           fps: int = 15) -> Path:
    """For each video, ground truth (left) beside the detected tubes scoring >= ``min_score`` (right); MP4."""
    import numpy as np

    from stad.data.frames import act_frame_path, read_rgb
    from stad.viz.draw import TubeOverlay, draw_tubes, tile_videos
    from stad.viz.video import write_video

    panels = []
    for name in videos:
        frames = np.stack([read_rgb(act_frame_path(data_dir, name, t)) for t in range(1, ann.nframes[name] + 1)])
        scale = max(1, math.ceil(240 / frames.shape[1]))
        gt = [TubeOverlay(identity=i, boxes=tube, text=ann.labels[label])
              for i, (label, tube) in enumerate((lb, t) for lb, ts in sorted(ann.gttubes[name].items()) for t in ts)]
        detected = sorted((t for t in tubes.get(name, []) if t.score >= min_score), key=lambda t: -t.score)
        det = [TubeOverlay(identity=i, boxes=t.boxes[:, :5], text=f"{ann.labels[t.label]} {t.score:.2f}")
               for i, t in enumerate(detected)]
        panels.append(draw_tubes(frames, gt, scale=scale, font_scale=0.35))
        panels.append(draw_tubes(frames, det, scale=scale, font_scale=0.35))
    return write_video(path, tile_videos(panels, columns=2), fps=fps)


def main(args: argparse.Namespace) -> int:
    result = run_demo(args.out, preset=args.preset, seed=args.seed, preview_videos=args.preview_videos,
                      checkpoint=None if args.no_detect else args.checkpoint, device=args.device,
                      progress=not args.no_progress)
    return 1 if result.problems else 0
