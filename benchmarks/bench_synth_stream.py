"""The synthetic training stream against the training step: is rendering on the fly cheap enough?

For a training config (default: the bundled demo's, ``configs/moc_r18w025_synth_small.yaml``) this measures, per
training item, in one process:

* ``render``: drawing the stream video's scene (shared by ``stream_clips`` items) and rendering + JPEG round-tripping
  the item's frames (``StreamVideos.render``);
* ``stream item``: the whole stream item (render + augmentation + targets), what a DataLoader worker does;
* ``disk item``: the same item read from the data set's JPEG files (``TubeletClipDataset`` / ``FrameDataset``);
* ``step``: one training step of the config's model (forward, backward, optimizer) per item, at the config's batch
  size, on ``--threads`` threads.

The stream's extra work per item is ``stream item - disk item``; the goal (issue 12) is rendering below 10% of the
step. On a 2-core machine the workers share the cores with the step, so these CPU times add up.

Usage::

    .venv/bin/python benchmarks/bench_synth_stream.py --threads 2
    .venv/bin/python benchmarks/bench_synth_stream.py --config configs/keypoint_r18w025_synth_small.yaml
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from stad.config import load_config
from stad.engine.families import get_family
from stad.engine.families.common import train_stream
from stad.engine.train import build_optimizer, to_device, total_loss
from stad.models.registry import build_model


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/moc_r18w025_synth_small.yaml")
    parser.add_argument("--items", type=int, default=96, help="items timed per measurement (default 96)")
    parser.add_argument("--steps", type=int, default=4, help="training steps timed (default 4)")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def per_item(fn, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        fn(i)
    return (time.perf_counter() - start) / count * 1e3


def render_only(dataset, epoch: int, index: int) -> None:
    """The rendering part of item ``index`` of a tubelet or frame stream data set (no augmentation)."""
    stream = dataset.stream
    video, clip = divmod(index, stream.clips_per_video)
    if hasattr(dataset, "gap"):  # frames: the frame and the one ``gap`` before
        frame = stream.video(epoch, video).starts[clip]
        stream.render_frames(stream.video(epoch, video).scene, sorted({max(1, frame - dataset.gap), frame}))
    else:
        stream.render(epoch, video, clip)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    cfg = replace(cfg, data=replace(cfg.data, num_workers=0))
    family = get_family(cfg.model.name)
    data = family.load_data(cfg, progress=False)
    cfg = family.resolve_model_config(cfg, data)
    model = build_model(cfg.model)
    stream_loader = family.build_train_loader(cfg, data, model)
    stream_set = stream_loader.dataset
    if train_stream(cfg.data, clips_per_video=1) is None:
        raise SystemExit(f"{args.config} does not train on the stream (data.options.train_stream)")
    options = {k: v for k, v in cfg.data.options.items() if k not in ("train_stream", "stream_videos", "stream_clips")}
    disk_cfg = replace(cfg, data=replace(cfg.data, options=options))
    disk_set = family.build_train_loader(disk_cfg, data, model).dataset

    n = min(args.items, len(stream_set))
    clips = stream_set.stream.clips_per_video
    render_ms = per_item(lambda i: render_only(stream_set, 1, i), n)
    stream_ms = per_item(lambda i: stream_set[(2, i)], n)
    disk_ms = per_item(lambda i: disk_set[(2, i % len(disk_set))], n)

    optimizer = build_optimizer(model, cfg.train)
    model.train()
    batches = iter(stream_loader)
    batch = to_device(next(batches), torch.device("cpu"))
    size = cfg.data.batch_size

    def step(_: int) -> None:
        loss, _ = total_loss(model(batch), epoch=0, step=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(0)  # warm-up
    step_ms = per_item(step, args.steps) / size
    print(f"config {args.config}, {args.threads} threads, {n} items, batch {size}, {clips} items per stream video\n")
    print("| per training item | ms | % of the step |")
    print("|---|---:|---:|")
    for name, value in (("render (scene share + frames + JPEG)", render_ms), ("stream item (render + augmentation)", stream_ms),
                        ("disk item (JPEG read + augmentation)", disk_ms),
                        ("stream extra (stream item - disk item)", stream_ms - disk_ms), ("training step", step_ms)):
        print(f"| {name} | {value:.1f} | {100 * value / step_ms:.1f} |")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
