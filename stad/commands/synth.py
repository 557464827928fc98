"""``stad synth``: render the procedural synthetic benchmark (``stad.data.synthetic``) to disk.

Example::

    stad synth --preset small --out data/synth-small --seed 0 --layout both --frames 91
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from stad.errors import StadError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth",
        help="render the synthetic benchmark (ACT and/or AVA layout)",
        description="Render the procedural synthetic benchmark: articulated actors whose actions are defined by "
                    "motion, moving occluders (per-box visibility), textured moving background. Output is "
                    "bit-identical for the same seed.",
    )
    parser.add_argument("--preset", default="small", help="tiny, small, occluded or benchmark (default: small)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--videos", type=int, default=None, help="number of videos")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (AVA layout: >= 61 at 30 fps)")
    parser.add_argument("--size", type=int, default=None, metavar="PX",
                        help="frame height in pixels; the width is 4/3 of it")
    parser.add_argument("--occlusion", type=float, default=None, metavar="RATE",
                        help="probability in [0, 1] that an actor is crossed by an occluder during its action")
    parser.add_argument("--classes", default=None, help="comma-separated subset of the action classes")
    parser.add_argument("--layout", default="act", choices=["act", "ava", "both"], help="files to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing rendering in --out (removes only the files synth writes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=main)
    return parser


def config_from_args(args: argparse.Namespace):  # -> SynthConfig
    """Build the :class:`~stad.data.synthetic.SynthConfig` from the preset and the given options."""
    from stad.data.synthetic import SynthConfig

    overrides: dict[str, object] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.videos is not None:
        overrides["videos"] = args.videos
    if args.frames is not None:
        overrides["frames"] = args.frames
    if args.size is not None:
        overrides["height"], overrides["width"] = args.size, int(round(args.size * 4 / 3))
    if args.occlusion is not None:
        overrides["occlusion"] = args.occlusion
    if args.classes:
        overrides["classes"] = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    return SynthConfig.preset(args.preset, **overrides)


def main(args: argparse.Namespace) -> int:
    from stad.data.synthetic import is_interrupted, output_paths, render_dataset, summarize

    cfg = config_from_args(args)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise StadError(f"--out {out} exists and is not a folder")
    if is_interrupted(cfg, out, layout=args.layout):
        print(f"resuming the interrupted rendering in {out} (same settings)")
    elif out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise StadError(f"--out {out} is not empty; pass --overwrite to replace a previous rendering")
        for path in output_paths(cfg, out):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    ann = render_dataset(cfg, out, layout=args.layout, progress=not args.no_progress)
    print(f"wrote {cfg.videos} videos ({args.layout} layout) to {out}")
    print(summarize(ann).format())
    return 0
