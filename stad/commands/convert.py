"""stad convert FORMAT SRC OUT: convert public annotation files to ACT pickles or custom JSON.

Formats:

* ucf24-pyannot: UCF101-24 corrected pyannot.pkl -> ACT pickle (--test-list testlist01.txt);
* ucf24-mat: UCF101-24 corrected finalAnnots.mat -> ACT pickle (same content);
* jhmdb-masks: JHMDB-21 puppet mask folder -> ACT pickle (--test-list YOWO's ground-truth zip or a list);
* multisports: a MultiSports ACT pickle, read, checked and written again;
* act-to-custom: ACT pickle -> custom JSON (--frames PATTERN for frame paths);
* custom-to-act: custom JSON -> ACT pickle.

The result is checked with check_act; problems are printed and make the exit status 1 (the file
is still written). Example:

  stad convert ucf24-mat finalAnnots.mat UCF101v2-GT.pkl --test-list testlist01.txt
"""

from __future__ import annotations

import argparse
import sys

FORMATS = ("ucf24-pyannot", "ucf24-mat", "jhmdb-masks", "multisports", "act-to-custom", "custom-to-act")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert UCF101-24 / JHMDB-21 / MultiSports annotations and custom JSON to and from ACT pickles",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", choices=FORMATS, metavar="FORMAT", help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("src", help="source file or folder")
    parser.add_argument("out", help="output file (.pkl for ACT, .json for custom)")
    parser.add_argument("--test-list", help="split-1 test videos: testlist01.txt (UCF101-24), YOWO's groundtruths_jhmdb.zip or a list (JHMDB-21)")
    parser.add_argument("--frames", help="act-to-custom: frame path pattern relative to OUT, e.g. 'rgb-images/{video}/{frame:05d}.jpg'")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from stad.data import act, convert, custom
    from stad.errors import StadError

    if args.test_list and args.format not in ("ucf24-pyannot", "ucf24-mat", "jhmdb-masks"):
        raise StadError(f"--test-list applies to ucf24-pyannot, ucf24-mat and jhmdb-masks, not {args.format}")
    if args.frames and args.format != "act-to-custom":
        raise StadError("--frames applies to act-to-custom only")
    if args.format in ("ucf24-pyannot", "ucf24-mat"):
        test_list = convert.read_video_list(args.test_list) if args.test_list else None
        reader = convert.load_ucf24_pyannot if args.format == "ucf24-pyannot" else convert.load_ucf24_mat
        ann = reader(args.src, test_list=test_list)
    elif args.format == "jhmdb-masks":
        ann = convert.load_jhmdb_masks(args.src)
        if args.test_list:
            convert.set_test_split(ann, convert.jhmdb_test_list(args.test_list, ann.labels), source=args.src)
    elif args.format in ("multisports", "act-to-custom"):
        ann = act.load_act(args.src)
    else:  # custom-to-act
        ann = custom.load_custom(args.src).annotations

    if args.format == "act-to-custom":
        custom.save_custom(custom.from_tube_annotations(ann, frames=args.frames), args.out)
    else:
        act.save_act(ann, args.out)
    problems = act.check_act(ann)
    ntubes = sum(len(t) for per_video in ann.gttubes.values() for t in per_video.values())
    splits = ", ".join(f"split {s}: {len(tr)} train / {len(te)} test" for s, (tr, te) in enumerate(zip(ann.train_videos, ann.test_videos), 1))
    print(f"wrote {args.out}: {len(ann.nframes)} videos, {ntubes} tubes, {len(ann.labels)} labels; {splits or 'no split'}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found; run 'stad validate' for details", file=sys.stderr)
    return 1 if problems else 0
