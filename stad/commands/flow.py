"""stad flow DATASET: compute the optical-flow stream of an ACT data set (resumable).

Reads DATASET/<name>-GT.pkl (exactly one) and DATASET/rgb-images/<video>/%05d.jpg and writes
DATASET/brox-images/<video>/%05d.jpg for frames 1..T in the ACT convention (channels x, y,
magnitude; value v -> round(127.5 + v * 127.5 / bound), see stad.data.flow). Videos whose T flow
images exist are skipped unless --overwrite; a video that fails is reported by name, the others
continue, and the exit status is 1. Example:

  stad flow data/synth --method dis --bound 20
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "flow",
        help="compute optical-flow JPEGs (brox-images) for an ACT data set with OpenCV",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", help="ACT root holding one *-GT.pkl and rgb-images/")
    parser.add_argument("--method", choices=("dis", "farneback"), default="dis",
                        help="OpenCV flow method (default dis)")
    parser.add_argument("--bound", type=float, default=20.0, help="flow in pixels mapped to 0 / 255 (default 20)")
    parser.add_argument("--overwrite", action="store_true", help="recompute videos whose flow is complete")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stad.data.act import load_act
    from stad.data.flow import compute_dataset_flow
    from stad.errors import StadError

    root = Path(args.dataset)
    if not root.is_dir():
        raise StadError(f"data set folder not found: {root}")
    gt_files = sorted(root.glob("*-GT.pkl"))
    if len(gt_files) != 1:
        found = ", ".join(p.name for p in gt_files) or "none"
        raise StadError(f"expected exactly one *-GT.pkl in {root}, found {found}")
    ann = load_act(gt_files[0])
    result = compute_dataset_flow(ann, root, method=args.method, bound=args.bound, overwrite=args.overwrite,
                                  progress=not args.no_progress)
    print(f"{len(result.written)} written ({sum(result.frames.values())} flow images), "
          f"{len(result.skipped)} skipped (complete), {len(result.failed)} failed -> {root / 'brox-images'}")
    for video, reason in result.failed.items():
        print(f"failed: {video}: {reason}", file=sys.stderr)
    return 1 if result.failed else 0
