"""``stad test CONFIG --checkpoint CKPT``: detections, tubes and the frame-/video-mAP report of a split."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "test",
        help="run a checkpoint on the test split: detections CSV, tubes JSON, frame-/video-mAP report",
        description=(
            "Run a trained checkpoint over the eval.subset videos of data.split, link tubelets into tubes "
            "(MOC/ACT builder), and evaluate frame-mAP and video-mAP with the ACT protocol. Writes "
            "detections.csv, tubes.json, tubelets.npz, report.json and report.md to --out."
        ),
    )
    parser.add_argument("config", help="YAML config file (data and eval sections are used)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument("--checkpoint", required=True, help="stad checkpoint (.pt) written by stad train")
    parser.add_argument("--out", help="output folder (default: <train.output_dir>/test)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: train.device)")
    parser.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--flow-checkpoint", help="flow-stream checkpoint: fuse it with --checkpoint (the RGB model), MOC's late fusion")
    parser.add_argument("--fusion-weight", type=float, metavar="W",
                        help="RGB weight of the fused heat-map, movement and size (flow: 1 - W; default MOC's 0.5 / 0.8 / 0.8)")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stad.config import load_config
    from stad.engine.runner import format_report, test_from_config

    overrides = list(args.overrides)
    if args.flip:
        overrides.append("eval.options.flip=true")
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path(cfg.train.output_dir) / "test"
    weights = None
    if args.fusion_weight is not None:
        from stad.models.fusion import FusionWeights

        weights = FusionWeights.uniform(args.fusion_weight)
    metrics = test_from_config(cfg, args.checkpoint, out, device=args.device, flow_checkpoint=args.flow_checkpoint, fusion_weights=weights)
    print(format_report(cfg, metrics))
    print(f"predictions and report written to {out}")
    return 0
