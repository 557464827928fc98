"""``stad export CKPT OUT``: a slim inference checkpoint (weights in float16 + config)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="write a slim inference checkpoint (float16 weights + config, no optimizer state)",
        description="Copy a stad training checkpoint without optimizer/scheduler/RNG state, weights in float16 "
        "(--fp32 to keep float32). The result loads with stad test / stad detect like the original.",
    )
    parser.add_argument("checkpoint", help="stad checkpoint written by stad train")
    parser.add_argument("out", help="output .pt file")
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stad.engine.checkpoint import export_inference_checkpoint

    out = export_inference_checkpoint(args.checkpoint, args.out, half=not args.fp32)
    print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB)")
    return 0
