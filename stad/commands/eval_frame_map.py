"""``stad eval frame-map``: frame-mAP of per-frame detections (ACT protocol by default).

Example::

    stad eval frame-map --gt UCF101v2-GT.pkl --detections frame_dets.csv --iou 0.5 \\
        --json frame_map.json --plots plots/

``--gt`` is an ACT ground-truth pickle (``.pkl``) or a stad custom JSON (``.json``).
``--tubelets`` evaluates K-frame tubelets instead (``.npz`` of ``stad.tubes.tubelets``), turned into
frame detections by the ACT/MOC rule (box on each of the K frames, per-frame soft NMS at 0.6).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def load_ground_truth(path: Path):
    """ACT pickle (``.pkl``) or custom JSON (``.json``) -> ``TubeAnnotations`` (dispatch by extension)."""
    from stad.errors import StadError

    suffix = Path(path).suffix.lower()
    if suffix in (".pkl", ".pickle"):
        from stad.data.act import load_act

        return load_act(path)
    if suffix == ".json":
        from stad.data.custom import load_custom

        return load_custom(path).annotations
    raise StadError(f"--gt {path}: unknown ground-truth format {suffix!r} (expected an ACT .pkl or a custom .json)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "frame-map",
        help="frame-mAP of per-frame detections (ACT protocol; yowo/voc variants)",
        description="Frame-mAP against ACT-style ground-truth tubes. Protocol 'act' (default) reproduces the "
        "ACT/MOC evaluation: every frame of the test videos counts, greedy matching to the best unmatched box, "
        "trapezoid AP, mean over all labels. 'voc' is MultiSports' variant and 'yowo' the YOWO family's.",
    )
    parser.add_argument("--gt", required=True, type=Path, help="ground truth: ACT pickle (.pkl) or custom JSON (.json)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--detections", type=Path, help="frame detections CSV: video,frame,label,score,x1,y1,x2,y2")
    source.add_argument("--tubelets", type=Path, help="tubelets .npz (stad.tubes.tubelets format)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default 0.5)")
    parser.add_argument("--split", type=int, default=1, help="1-based split whose test videos are evaluated (default 1)")
    parser.add_argument("--protocol", choices=("act", "voc", "yowo"), default="act", help="evaluation protocol (default act)")
    parser.add_argument("--json", type=Path, default=None, help='write {"mAP": fraction, "per_class": {name: AP}, ...} here')
    parser.add_argument("--plots", type=Path, default=None, help="folder for PR-curve and per-class AP PNGs")
    parser.add_argument("--errors", action="store_true", help="also print the ACT error breakdown and frame-MABO (act only)")
    parser.add_argument("--by-visibility", action="store_true",
                        help="also frame-mAP per ground-truth visibility band (act only; needs visibility in --gt)")
    parser.add_argument("--class-agnostic", action="store_true",
                        help="actor AP: every label merged into one, detections of a frame merged by NMS at IoU 0.5")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from stad.errors import StadError
    from stad.eval.frame_map import frame_map
    from stad.eval.predictions import check_frame_detections, read_frame_detections
    from stad.eval.report import format_table, frame_map_table, json_clean, plot_per_class_ap, plot_pr_curves

    if not 0.0 < args.iou <= 1.0:
        raise StadError(f"--iou {args.iou}: must be in (0, 1]")
    start = time.perf_counter()
    gt = load_ground_truth(args.gt)
    if args.detections is not None:
        dets = read_frame_detections(args.detections, gt)
    else:
        from stad.tubes.tubelets import load_tubelets, tubelets_to_frame_detections

        tf = load_tubelets(args.tubelets)
        unknown = [v for v in tf.videos if v not in gt.nframes]
        if unknown:
            raise StadError(f"{args.tubelets}: video {unknown[0]!r} is not in the ground truth")
        dets = tubelets_to_frame_detections(tf.tubelets, tf.videos)
        check_frame_detections(dets, gt, source=str(args.tubelets))
    if args.class_agnostic:
        from stad.eval.diagnostics import class_agnostic

        gt, dets = class_agnostic(gt, dets)
    loaded = time.perf_counter()
    result = frame_map(gt, dets, split=args.split, iou=args.iou, protocol=args.protocol)
    print(frame_map_table(result))
    if result.labels_without_gt:
        note = "AP 0, kept in the mean" if args.protocol == "act" else "left out of the mean"
        print(f"note: {len(result.labels_without_gt)} label(s) have detections but no test ground truth ({note}): "
              + ", ".join(result.labels_without_gt[:5]))
    extra = {}
    if args.errors:
        if args.protocol != "act":
            raise StadError("--errors is defined for the act protocol only")
        from stad.eval.diagnostics import frame_ap_errors, frame_mabo

        err = frame_ap_errors(gt, dets, split=args.split, iou=args.iou)
        mean = err.mean()
        print("\nerror breakdown (ACT frameAP_error; % of the area under the curve)")
        print(format_table(list(mean), [[f"{100 * v:.2f}" for v in mean.values()]]))
        mabo, per_class = frame_mabo(gt, dets, split=args.split)
        print(f"frame-MABO {100 * mabo:.2f}")
        extra = {"errors": err.to_json(), "frame_mabo": mabo, "frame_abo_per_class": per_class}
    if args.by_visibility:
        from stad.eval.diagnostics import frame_ap_by_visibility

        if args.protocol != "act":
            raise StadError("--by-visibility uses the act protocol's matching; drop --protocol or set it to act")
        bands = frame_ap_by_visibility(gt, dets, split=args.split, iou=args.iou)
        print("\nframe-mAP per ground-truth visibility band")
        print(format_table(["band", "GT boxes", "frame-mAP"], [[b, str(v["n_gt"]), f"{100 * v['mAP']:.2f}"] for b, v in bands.items()]))
        extra = {**extra, "by_visibility": bands}
    print(f"({len(dets)} detections; read {loaded - start:.2f} s, evaluated {time.perf_counter() - loaded:.2f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = result.to_json() | extra
        args.json.write_text(json.dumps(json_clean(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.plots is not None:
        tag = f"frame_map_{args.protocol}_{args.iou:g}"
        plot_pr_curves(result.curves, args.plots / f"{tag}_pr.png", title=f"frame-AP@{args.iou:g} ({args.protocol})",
                       per_class_ap=result.per_class)
        plot_per_class_ap(result.per_class, args.plots / f"{tag}_per_class.png", title=f"frame-AP@{args.iou:g}")
        print(f"wrote plots to {args.plots}")
    return 0
