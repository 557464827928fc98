"""``stad profile CONFIG_OR_CHECKPOINT``: per-module timing of the online pipeline (random weights allowed)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "profile",
        help="time each module of the online pipeline (decode, cue, network, decoding, linking, drawing)",
        description=(
            "Run the stad stream pipeline on a synthetic video (or --source) and print the per-module timing table. "
            "A YAML config gives a randomly initialised model (no data set needed); a checkpoint its trained one."
        ),
    )
    parser.add_argument("model", help="YAML config (model.name keypoint; random weights) or stad checkpoint (.pt)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (with a YAML config)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="frame and network input size (default: data.input_size)")
    parser.add_argument("--frames", type=int, default=100, help="frames to process (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="frames run first and not timed (default 5)")
    parser.add_argument("--source", help="a video file or frame folder instead of the synthetic video")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", help="keep the annotated MP4 and tubes JSON in this folder (default: a temporary one)")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    import torch

    from stad.engine.profile import load_profile_model, profile_pipeline
    from stad.engine.train import resolve_device
    from stad.errors import StadError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.frames < 1 or args.warmup < 0:
        raise StadError(f"--frames must be >= 1 and --warmup >= 0, got {args.frames} and {args.warmup}")
    device = resolve_device(args.device)
    model, labels, size = load_profile_model(args.model, list(args.overrides), device=device)
    size = tuple(args.size) if args.size else size
    result = profile_pipeline(model, labels=labels, size=size, frames=args.frames, warmup=args.warmup, device=device,
                              source=args.source, out_dir=args.out)
    print(f"input {size[0]}x{size[1]}, {result.frames} frames, {torch.get_num_threads()} CPU thread(s), device {device}")
    print(result.timer.table(frames=result.frames, wall=result.wall))
    return 0
