"""What temporal trimming does to video-mAP: one prediction of a tubelet checkpoint, tubes built with trimming off and
with a grid of ``trim_threshold`` x ``trim_penalty``, each scored (frame-mAP does not change: it is computed from the
tubelets).

Choose the setting on a split that is not the test split (the synthetic data set's training videos are held out when
the model trained on the stream: ``--subset train``), then report it once on ``--subset test``.

Usage::

    .venv/bin/python benchmarks/trim_sweep.py configs/moc_r18w025_synth_small.yaml runs/X/best.pt --subset train
    .venv/bin/python benchmarks/trim_sweep.py configs/moc_r18w025_synth_small.yaml runs/X/best.pt --subset test \\
        --thresholds 0.2 --penalties 1.0

Prints a Markdown table (video-mAP at 0.2 / 0.5 / 0.75 / 0.5:0.95 per setting).
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace

import torch

from stad.config import load_config
from stad.engine.families.common import load_detector
from stad.engine.families.tubelet import FAMILY, LinkConfig, link_config, link_predictions


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--subset", default="train", choices=["train", "test"])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--penalties", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    return parser


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    cfg = replace(cfg, eval=replace(cfg.eval, subset=args.subset),
                  data=replace(cfg.data, options={k: v for k, v in cfg.data.options.items()
                                                  if k not in ("train_stream", "stream_videos", "stream_clips")}))
    data = FAMILY.load_data(cfg, progress=False)
    cfg = FAMILY.resolve_model_config(cfg, data)
    model, _ = load_detector(args.checkpoint)
    preds = FAMILY.predict(model, cfg, data, device="cpu", progress=False)
    base = replace(link_config(cfg), trim=False)
    settings = [("off", base)] + [
        (f"{t:g} / {p:g}", replace(base, trim=True, trim_threshold=t, trim_penalty=p))
        for t, p in itertools.product(args.thresholds, args.penalties)
    ]
    nframes = {v: int(data.annotations.nframes[v]) for v in preds.videos}
    print(f"{args.checkpoint} on the {args.subset} videos ({len(preds.videos)})\n")
    print("| trimming (threshold / penalty) | frame-mAP | video-mAP@0.2 | @0.5 | @0.75 | @0.5:0.95 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, link in settings:
        linked = link_predictions(preds.tubelets, num_classes=cfg.model.num_classes, nframes=nframes, link=link)
        m = FAMILY.evaluate(cfg, data, linked)
        print(f"| {name} | {100 * m['frame_mAP']:.2f} | {100 * m['video_mAP@0.2']:.2f} | {100 * m['video_mAP@0.5']:.2f} "
              f"| {100 * m['video_mAP@0.75']:.2f} | {100 * m['video_mAP@0.5:0.95']:.2f} |", flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
