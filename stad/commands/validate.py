"""stad validate DATASET: check a data set on disk and print a summary and every problem.

DATASET is an ACT root (a folder with one *-GT.pkl and rgb-images/), a *-GT.pkl file,
a custom JSON file, or an AVA root (annotations/ and frames/). Exit status 0 when clean,
1 when problems were found.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "validate",
        help="check a data set on disk (ACT, custom JSON or AVA): annotations, frame files, sizes",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", help="ACT root folder or *-GT.pkl, custom .json, or AVA root folder")
    parser.add_argument("--size-checks", type=int, default=200, help="videos whose first frame's size is checked (default 200)")
    parser.add_argument("--max-problems", type=int, default=0, help="print at most this many problems (0: all)")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from stad.data.validate import validate_dataset

    report = validate_dataset(args.dataset, size_checks=args.size_checks)
    print(report.format_table())
    shown = report.problems if args.max_problems <= 0 else report.problems[: args.max_problems]
    for problem in shown:
        print(f"  {problem}")
    if len(shown) < len(report.problems):
        print(f"  ... and {len(report.problems) - len(shown)} more (--max-problems 0 shows all)")
    return 1 if report.problems else 0
