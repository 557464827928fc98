"""``stad stream SOURCE --checkpoint CKPT``: online detection and linking on a video, frame folder or camera."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "stream",
        help="online action tubes on a video file, frame folder or camera (annotated MP4 + tubes JSON as it goes)",
        description=(
            "Run a frame detector (model.name keypoint) frame by frame over SOURCE: decode, temporal cue, detect, link "
            "tubes online (KORSAL extrapolation through missed detections), draw. Writes <name>_tubes.mp4 and "
            "<name>_tubes.json to --out as it goes; Ctrl-C stops cleanly and keeps everything so far. Prints the "
            "per-module timing table at the end. Frame numbers in the JSON are frames of the written MP4."
        ),
    )
    parser.add_argument("source", help="video file, folder of .jpg/.png frames, or a camera index (0, 1, ...)")
    parser.add_argument("--checkpoint", required=True, help="stad checkpoint (.pt) of a keypoint model")
    parser.add_argument("--out", default="stream_output", help="output folder (default: stream_output)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="network input size (default: the checkpoint's data.input_size)")
    parser.add_argument("--realtime", action="store_true", help="drop frames rather than fall behind (files are read at their frame rate)")
    parser.add_argument("--show", action="store_true", help="show the annotated stream in a window (q or Esc quits)")
    parser.add_argument("--max-frames", type=int, help="stop after this many processed frames")
    parser.add_argument("--min-score", type=float, default=0.1, help="draw live tubes scoring at least this (default 0.1)")
    parser.add_argument("--max-gap", type=int, help="frames a tube is extrapolated through missed detections (default: the checkpoint's eval.options, else 5)")
    parser.add_argument("--no-extrapolation", action="store_true", help="end a tube at its first missed detection (max_gap 0)")
    parser.add_argument("--scale", type=int, help="integer upscaling of the drawn frames (default: longer side about 480 px)")
    parser.add_argument("--no-video", action="store_true", help="do not write the annotated MP4 (tubes JSON only)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    import torch

    from stad.engine.families import family_name
    from stad.engine.families.common import load_detector
    from stad.engine.families.frame import online_link_options
    from stad.engine.stream import StreamConfig, open_source, run_stream
    from stad.engine.train import resolve_device
    from stad.errors import StadError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scale is not None and args.scale < 1:
        raise StadError(f"--scale must be >= 1, got {args.scale}")
    if args.max_frames is not None and args.max_frames < 1:
        raise StadError(f"--max-frames must be >= 1, got {args.max_frames}")
    device = resolve_device(args.device)
    model, cfg = load_detector(args.checkpoint, device=device)
    if family_name(cfg.model.name) != "frame":
        raise StadError(f"{args.checkpoint} holds a {cfg.model.name!r} model of the {family_name(cfg.model.name)} family; "
                        f"stad stream runs frame detectors (keypoint) online; use stad detect for it")
    labels = list(cfg.model.labels) or [str(i) for i in range(cfg.model.num_classes)]
    link = online_link_options({k: v for k, v in cfg.eval.options.items() if k != "frame_batch"})
    if args.no_extrapolation:
        link["max_gap"] = 0
    elif args.max_gap is not None:
        link["max_gap"] = args.max_gap
    stream_cfg = StreamConfig(
        input_size=tuple(args.size) if args.size else tuple(cfg.data.input_size), realtime=args.realtime, show=args.show,
        max_frames=args.max_frames, min_draw_score=args.min_score, scale=args.scale, write_video=not args.no_video, link=link,
    )
    source = open_source(args.source)
    result = run_stream(model, source, args.out, labels=labels, device=device, cfg=stream_cfg)
    print(result.timer.table(frames=result.frames, wall=result.wall))
    print(f"{result.frames} frames processed ({result.dropped} dropped), {len(result.tubes)} tubes; "
          f"{result.frames / result.wall if result.wall > 0 else 0:.1f} frames/s end to end")
    print(f"tubes: {result.tubes_json}" + (f"; video: {result.video}" if result.video else ""))
    if result.interrupted:
        print("interrupted: everything processed so far was written")
        return 130
    return 0
