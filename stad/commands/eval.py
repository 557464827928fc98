"""``stad eval {frame-map,video-map,ava}``: evaluate predictions against ground truth.

Each metric lives in ``stad/commands/eval_<metric>.py`` with ``add_parser(subparsers)`` and
``main(args)``, like the top-level commands.
"""

from __future__ import annotations

import argparse
import importlib

# Metric subcommand modules under stad.commands, in help order.
EVAL_COMMANDS: list[str] = ["eval_ava", "eval_frame_map", "eval_video_map"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate detections: frame-mAP, video-mAP (ACT protocol), AVA frame-mAP",
        description="Evaluate predictions against ground truth with the published protocols.",
    )
    metrics = parser.add_subparsers(dest="metric", metavar="METRIC", parser_class=type(parser))
    for name in EVAL_COMMANDS:
        importlib.import_module(f"stad.commands.{name}").add_parser(metrics)
    parser.set_defaults(func=lambda args: _no_metric(parser))
    return parser


def _no_metric(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def main(args: argparse.Namespace) -> int:
    return args.func(args)
