"""``stad eval ava``: AVA frame-mAP@0.5 with the official ActivityNet evaluator's rules.

Example::

    stad eval ava --gt ava_val_v2.2.csv --labelmap ava_action_list_v2.2_for_activitynet_2019.pbtxt \\
        --exclusions ava_val_excluded_timestamps_v2.2.csv --detections predictions.csv --json ava_map.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ava",
        help="AVA frame-mAP@0.5 (official ActivityNet evaluator rules)",
        description="Evaluate AVA-format detections (video_id,timestamp,x1,y1,x2,y2,action_id,score) against "
        "AVA ground truth: top-50 detections per keyframe, classes of the label map, VOC matching at IoU 0.5, "
        "VOC all-point AP, mAP over the classes with ground truth.",
    )
    parser.add_argument(
        "--gt", required=True, type=Path, help="ground-truth CSV (video_id,timestamp,x1,y1,x2,y2,action_id[,person_id])"
    )
    parser.add_argument(
        "--labelmap", required=True, type=Path, help="label map of the evaluated classes (pbtxt or 'id: name' txt)"
    )
    parser.add_argument("--detections", required=True, type=Path, help="detections CSV (...,action_id,score)")
    parser.add_argument("--exclusions", type=Path, default=None, help="excluded timestamps CSV (video_id,timestamp)")
    parser.add_argument("--top-k", type=int, default=50, help="detections kept per keyframe (default 50; 0 keeps all)")
    parser.add_argument("--json", type=Path, default=None, help='write {"mAP": fraction, "per_class": {name: AP}} here')
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from stad.data.ava import read_ava_annotations, read_ava_predictions, read_excluded_timestamps, read_labelmap
    from stad.eval.ava_map import ava_map

    start = time.perf_counter()
    labelmap = read_labelmap(args.labelmap)
    excluded = read_excluded_timestamps(args.exclusions) if args.exclusions else set()
    gt = read_ava_annotations(args.gt)
    detections = read_ava_predictions(args.detections)
    result = ava_map(gt, detections, labelmap, excluded=excluded, top_k=args.top_k or None)
    print(result.format_table())
    print(f"({len(gt)} ground-truth rows, {len(detections)} detection rows, {time.perf_counter() - start:.2f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(result.to_json() + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
