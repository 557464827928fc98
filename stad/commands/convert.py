"""stad convert FORMAT SRC OUT: convert public annotation files to ACT pickles or custom JSON.

Formats:

* ucf24-pyannot: UCF101-24 corrected pyannot.pkl -> ACT pickle (--test-list testlist01.txt);
* ucf24-mat: UCF101-24 corrected finalAnnots.mat -> ACT pickle (same content);
* jhmdb-masks: JHMDB-21 puppet mask folder -> ACT pickle (--test-list YOWO's ground-truth zip or a list);
* multisports: a MultiSports ACT pickle, read, checked and written again;
* act-to-custom: ACT pickle -> custom JSON (--frames PATTERN for frame paths);
* custom-to-act: custom JSON -> ACT pickle;
* ava-to-acar: AVA annotation CSV (+ person proposals) -> ACAR/FBIL annotation pickle (--labelmap MAP.pbtxt;
  --split train: ground truth + proposals, each proposal taking the labels of the ground-truth box it overlaps
  with IoU >= 0.5, else none; --split val: proposals only, no labels; --proposals P.pkl|P.csv --min-score S;
  --frames ROOT --layout acar|ava|auto checks every keyframe against the frames on disk and takes the file
  pattern and clock from them, without --frames --layout only names them: acar = image_%06d.jpg, frame 1 =
  second 900; ava = img_%05d.jpg, frame 1 = second 0).

The result is checked with check_act; problems are printed and make the exit status 1 (the file
is still written). Example:

  stad convert ucf24-mat finalAnnots.mat UCF101v2-GT.pkl --test-list testlist01.txt
  stad convert ava-to-acar ava_train_v2.2.csv ava_train_fair_0.9.pkl --labelmap ava_action_list_v2.2_for_activitynet_2019.pbtxt \
      --proposals ava_dense_proposals_train.FAIR.recall_93.9.pkl --min-score 0.9
"""

from __future__ import annotations

import argparse
import sys

FORMATS = ("ucf24-pyannot", "ucf24-mat", "jhmdb-masks", "multisports", "act-to-custom", "custom-to-act", "ava-to-acar")
ACAR_OPTIONS = ("labelmap", "proposals", "min_score", "split", "layout")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert UCF101-24 / JHMDB-21 / MultiSports annotations and custom JSON to and from ACT pickles, AVA CSV to ACAR pickles",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", choices=FORMATS, metavar="FORMAT", help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("src", help="source file or folder")
    parser.add_argument("out", help="output file (.pkl for ACT and ACAR, .json for custom)")
    parser.add_argument("--test-list", help="split-1 test videos: testlist01.txt (UCF101-24), YOWO's groundtruths_jhmdb.zip or a list (JHMDB-21)")
    parser.add_argument("--frames", help="act-to-custom: frame path pattern relative to OUT, e.g. 'rgb-images/{video}/{frame:05d}.jpg'; "
                        "ava-to-acar: the frames root, to check the keyframes against the frames on disk")
    acar = parser.add_argument_group("ava-to-acar")
    acar.add_argument("--labelmap", help="label map (pbtxt or 'id: name' text); the pickle's classes in ascending id")
    acar.add_argument("--proposals", help="person proposals: MMAction2 pickle {'video,ts': (N, 5)} or CSV video,ts,x1,y1,x2,y2[,score]")
    acar.add_argument("--min-score", type=float, help="keep proposals scoring at least this (default 0: all; ACAR's files: 0.9 train, 0.85 val)")
    acar.add_argument("--split", choices=("train", "val"), help="train (default): ground truth + labelled proposals; val: proposals only")
    acar.add_argument("--layout", choices=("acar", "ava", "auto"), help="frame layout (default acar; auto needs --frames)")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from stad.data import act, convert, custom
    from stad.errors import StadError

    if args.test_list and args.format not in ("ucf24-pyannot", "ucf24-mat", "jhmdb-masks"):
        raise StadError(f"--test-list applies to ucf24-pyannot, ucf24-mat and jhmdb-masks, not {args.format}")
    if args.format == "ava-to-acar":
        return _ava_to_acar(args)
    given = [f"--{name.replace('_', '-')}" for name in ACAR_OPTIONS if getattr(args, name, None) is not None]
    if given:
        raise StadError(f"{', '.join(given)} apply to ava-to-acar only")
    if args.frames and args.format != "act-to-custom":
        raise StadError("--frames applies to act-to-custom and ava-to-acar only")
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


def _ava_to_acar(args: argparse.Namespace) -> int:
    """ava-to-acar: AVA CSV (+ proposals) -> ACAR/FBIL annotation pickle, read back to check it."""
    from stad.data.ava import read_labelmap, read_proposals
    from stad.data.keyframes import (
        make_layout,
        read_acar_annotations,
        read_keyframe_annotations,
        read_proposals_csv,
        resolve_layout,
        write_acar_annotations,
    )
    from stad.errors import StadError

    if not args.labelmap:
        raise StadError("ava-to-acar needs --labelmap (the classes of the pickle)")
    labelmap = read_labelmap(args.labelmap)
    keyframes = read_keyframe_annotations(args.src, labelmap)
    proposals = None
    if args.proposals:
        reader = read_proposals_csv if str(args.proposals).lower().endswith(".csv") else read_proposals
        proposals = reader(args.proposals)
    name = args.layout or "acar"
    if args.frames:
        videos = sorted({k.video for k in keyframes} | {v for v, _ in (proposals or {})})
        layout = resolve_layout(args.frames, videos, name)
        clock = {"layout": layout}
    elif name == "auto":
        raise StadError("--layout auto recognises the layout from disk: give --frames ROOT")
    else:
        named = make_layout(name, ".")  # only its file pattern and clock; nothing is read
        clock = {"format_str": named.pattern, "fps": named.fps, "timestamp_start": named.timestamp_start}
    summary = write_acar_annotations(
        args.out, keyframes, labelmap, proposals, split=args.split or "train",
        min_score=0.0 if args.min_score is None else args.min_score, **clock,
    )
    back = read_acar_annotations(args.out, layout=clock.get("layout"))
    print(
        f"wrote {args.out}: {summary.entries} keyframes, {summary.gt_boxes} ground-truth boxes, {summary.proposals} "
        f"proposals ({summary.labelled_proposals} labelled, {summary.skipped_proposals} skipped), "
        f"{len(summary.idx_to_class)} classes; read back: {len(back.keyframes)} keyframes"
    )
    return 0
