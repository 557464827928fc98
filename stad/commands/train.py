"""``stad train CONFIG [key=value ...]``: train a detector from a YAML config."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a detector from a YAML config (configs/*.yaml)",
        description=(
            "Train a detector. Any config value can be overridden as key.sub=value, e.g. "
            "'stad train configs/moc_r18_synth.yaml train.epochs=3 data.root=data/synth'. The resolved config, "
            "checkpoints (last.pt, best.pt, epoch_NNNN.pt) and TensorBoard logs go to train.output_dir. "
            "Multi-GPU / multi-node: launch with torchrun (torchrun --nproc_per_node=N -m stad.cli train ...)."
        ),
    )
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint (same as train.resume=CKPT)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: train.device)")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from stad.config import load_config
    from stad.engine.runner import train_from_config

    overrides = list(args.overrides)
    if args.resume:
        overrides.append(f"train.resume={args.resume}")
    cfg = load_config(args.config, overrides)
    result = train_from_config(cfg, device=args.device)
    print(f"trained {result.epochs_completed} epochs ({result.global_step} steps); run folder: {result.output_dir}")
    if result.best_checkpoint is not None:
        print(f"best {cfg.train.best_metric} = {result.best_value:.4f} at epoch {result.best_epoch}: {result.best_checkpoint}")
    if result.history and result.history[-1].get("val"):
        print("last validation: " + ", ".join(f"{k}={v:.4f}" for k, v in result.history[-1]["val"].items()))
    return 0
