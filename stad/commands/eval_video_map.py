"""``stad eval video-map``: video-mAP of action tubes (ACT protocol).

Example::

    stad eval video-map --gt UCF101v2-GT.pkl --tubes tubes.json --iou 0.2 0.5 0.75 0.5:0.95 --json video_map.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "video-map",
        help="video-mAP of action tubes (ACT protocol)",
        description="Video-mAP against ACT-style ground-truth tubes: per video and class tube NMS at 0.3, "
        "spatio-temporal IoU, greedy matching by tube score, trapezoid AP, mean over all labels. "
        "'0.5:0.95' is the mean of the video-mAP at 0.50, 0.55, ..., 0.95.",
    )
    parser.add_argument("--gt", required=True, type=Path, help="ground truth: ACT pickle (.pkl) or custom JSON (.json)")
    parser.add_argument("--tubes", required=True, type=Path, help='tubes JSON {video: [{"label", "score", "boxes"}]}')
    parser.add_argument("--iou", nargs="+", default=["0.2", "0.5", "0.75", "0.5:0.95"],
                        help="ST-IoU thresholds and/or 0.5:0.95 (default 0.2 0.5 0.75 0.5:0.95)")
    parser.add_argument("--split", type=int, default=1, help="1-based split whose test videos are evaluated (default 1)")
    parser.add_argument("--nms", type=float, default=0.3, help="tube NMS threshold per video and class (default 0.3)")
    parser.add_argument("--json", type=Path, default=None,
                        help='write {"mAP": {"0.2": .., "0.5:0.95": ..}, "per_class": {name: {thr: AP}}} here')
    parser.add_argument("--plots", type=Path, default=None, help="folder for PR-curve PNGs")
    parser.add_argument("--occluded-below", type=float, default=None, metavar="T",
                        help="also video-mAP on GT tubes whose visibility drops below T on some frame (needs visibility in --gt; "
                             "detections of other GT tubes ignored)")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from stad.commands.eval_frame_map import load_ground_truth
    from stad.eval.report import json_clean
    from stad.eval.predictions import read_tubes
    from stad.eval.report import plot_pr_curves, video_map_table
    from stad.eval.video_map import video_map

    start = time.perf_counter()
    gt = load_ground_truth(args.gt)
    tubes = read_tubes(args.tubes, gt)
    loaded = time.perf_counter()
    result = video_map(gt, tubes, split=args.split, thresholds=args.iou, nms=args.nms)
    print(video_map_table(result))
    if result.labels_without_gt:
        print(f"note: {len(result.labels_without_gt)} label(s) have tubes but no test ground truth (AP 0, kept in the mean): "
              + ", ".join(result.labels_without_gt[:5]))
    payload = result.to_json()
    if args.occluded_below is not None:
        from stad.eval.video_map import video_map_occluded

        occ = video_map_occluded(gt, tubes, split=args.split, thresholds=args.iou, nms=args.nms, occluded_below=args.occluded_below)
        print(f"\nvideo-mAP on occluded tubes (visibility < {args.occluded_below:g} on some frame; "
              f"{sum(occ.n_occluded.values())} tubes): " + ", ".join(f"@{k} {100 * v:.2f}" for k, v in occ.mAP.items()))
        payload["occluded"] = occ.to_json()
    n = sum(len(v) for v in tubes.values())
    print(f"({n} tubes; read {loaded - start:.2f} s, evaluated {time.perf_counter() - loaded:.2f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(json_clean(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.plots is not None:
        for name, curves in result.curves.items():
            plot_pr_curves(curves, args.plots / f"video_map_{name}_pr.png", title=f"video-AP@{name}",
                           per_class_ap=result.per_class[name])
        print(f"wrote plots to {args.plots}")
    return 0
