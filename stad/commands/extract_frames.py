"""stad extract-frames VIDEO_DIR OUT_DIR: decode videos into JPEG frame folders (resumable).

AVA layout: OUT_DIR/frames/<video_id>/img_%05d.jpg resampled to --fps (default 30) by
timestamps. ACT layout: OUT_DIR/rgb-images/<video_id>/%05d.jpg, every decoded frame unless
--fps is given. Videos whose folder exists are skipped; a video that fails is reported by name,
the others continue, and the exit status is 1. Example:

  stad extract-frames videos/ data/ava --fps 30
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "extract-frames",
        help="decode video files (PyAV) into AVA or ACT JPEG frame folders",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("video_dir", help="folder of video files (searched recursively)")
    parser.add_argument("out_dir", help="root of the frame layout")
    parser.add_argument("--layout", choices=("ava", "act"), default="ava", help="frame layout (default ava)")
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (default: 30 for ava, every decoded frame for act)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from stad.data.video import extract_frames
    from stad.errors import StadError

    fps = args.fps if args.fps is not None else (30.0 if args.layout == "ava" else None)
    if fps is not None and fps <= 0:
        raise StadError(f"--fps must be > 0, got {fps}")
    result = extract_frames(args.video_dir, args.out_dir, layout=args.layout, fps=fps, quality=args.quality, progress=not args.no_progress)
    total = len(result.written) + len(result.skipped) + len(result.failed)
    if total == 0:
        raise StadError(f"no video files found under {args.video_dir}")
    print(f"{len(result.written)} written ({sum(result.frames.values())} frames), {len(result.skipped)} skipped (complete), {len(result.failed)} failed")
    for video_id, reason in result.failed.items():
        print(f"failed: {video_id}: {reason}", file=sys.stderr)
    return 1 if result.failed else 0
