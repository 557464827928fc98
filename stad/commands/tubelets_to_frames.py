"""stad tubelets-to-frames TUBELETS OUT.csv: per-frame detections from K-frame tubelets (ACT/MOC rule).

Every tubelet of the tubelet file (.npz, format in stad/tubes/tubelets.py) puts its box on each of
its K frames with its score and class; then per (video, frame, class) a soft NMS at 0.6 (+1 IoU)
rescores the boxes. The result is the frame detections CSV read by `stad eval frame-map`:
header `video,frame,label,score,x1,y1,x2,y2`, frame from 1, label 0-based.

Example:
  stad tubelets-to-frames tubelets.npz frame_dets.csv
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "tubelets-to-frames",
        help="turn K-frame tubelets (.npz) into frame detections (CSV) by the ACT/MOC rule",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("tubelets", help="tubelet file (.npz: videos, video, start, label, score, boxes)")
    parser.add_argument("out", help="output frame detections CSV")
    parser.add_argument(
        "--nms-threshold", type=float, default=0.6, help="IoU threshold of the per-frame soft NMS (default 0.6)"
    )
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from stad.eval.predictions import write_frame_detections
    from stad.tubes.tubelets import load_tubelets, tubelets_to_frame_detections

    data = load_tubelets(args.tubelets)
    dets = tubelets_to_frame_detections(data.tubelets, data.videos, nms_threshold=args.nms_threshold)
    write_frame_detections(dets, args.out)
    n_tubelets = sum(len(t) for t in data.tubelets.values())
    print(f"{n_tubelets} tubelets of {len(data.videos)} videos -> {len(dets)} frame detections in {args.out}")
    return 0
