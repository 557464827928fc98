"""What the detection families share: reading a data set of tubes from a config, the training loader, loading a
stad checkpoint, and the frame-/video-mAP report that the tubelet and the frame family both write.

A family module (``stad.engine.families.<name>``) imports this module and :mod:`stad.engine.families.base`, never
another family (ARCHITECTURE.md §2).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from stad.config import Config, DataConfig, config_from_dict
from stad.data.synthetic import SYNTH_OPTIONS
from stad.errors import StadError
from stad.structures import TubeAnnotations


@dataclass
class LoadedData:
    """Ground truth plus where its frames are (ACT layout: ``frames_root/rgb-images/<video>/%05d.jpg``)."""

    annotations: TubeAnnotations
    frames_root: Path


def load_data(data: DataConfig, *, progress: bool = True) -> LoadedData:
    """Read the ground truth named by ``data`` (``kind`` act, custom or synthetic).

    * ``act``: ``gt_file`` is an ACT pickle, frames under ``root`` (default: the pickle's folder);
    * ``custom``: ``gt_file`` is stad's JSON format (docs/custom_format.md), frames in the ACT layout under
      ``root`` (default: the JSON's folder);
    * ``synthetic``: ``root`` holds a data set written by ``stad synth`` (or by an earlier run), used as it is;
      only when the folder is empty or missing is it rendered, from ``data.options`` (``preset``, default
      ``small``, and the ``stad synth`` settings ``seed``, ``videos``, ``frames``, ``size``/``height``/``width``,
      ``synth_occlusion``, ``classes``). Settings that ``data.options`` sets must match the data set on disk
      (:func:`stad.data.synthetic.plan_dataset`); an interrupted rendering of the same settings is resumed.

    ``data.options.person_boxes: true`` gives class-agnostic ground truth (one class ``person``) to train a person
    detector for ``stad proposals``: on synthetic data every actor on every frame, idle or acting
    (``<name>-persons.pkl``); on other data the action tubes under one class.
    """
    check_options(data.options, (*DATA_OPTIONS, *AUGMENT_OPTIONS), "data.options")
    if data.kind == "synthetic":
        from stad.data.synthetic import load_annotations

        root = ensure_synthetic(data, layout="act", progress=progress)
        return LoadedData(load_annotations(root, persons=bool(data.options.get("person_boxes", False))), root)
    if not data.gt_file:
        raise StadError(f"config key 'data.gt_file' must name the ground-truth file for data.kind={data.kind!r}")
    gt_file = Path(data.gt_file)
    root = Path(data.root) if data.root else gt_file.parent
    if data.kind == "act":
        from stad.data.act import load_act

        ann = load_act(gt_file)
    elif data.kind == "custom":
        from stad.data.custom import load_custom

        ann = load_custom(gt_file).annotations
    else:
        raise StadError(f"data.kind={data.kind!r} is not a tubelet data set (use act, custom or synthetic)")
    return LoadedData(ann.class_agnostic() if data.options.get("person_boxes") else ann, root)


def ensure_synthetic(data: DataConfig, *, layout: str, progress: bool = True) -> Path:
    """The synthetic data set folder ``data.root``, rendered (or resumed) first when it holds none; see
    :func:`load_data`. Under torchrun every process checks the folder, one renders, the others wait."""
    from stad.data.synthetic import plan_dataset, render_dataset
    from stad.engine.distributed import barrier, is_main_process

    if not data.root:
        raise StadError("config key 'data.root' must name the synthetic data set's folder")
    root = Path(data.root)
    plan = plan_dataset(root, data.options, layout=layout)
    barrier()  # every process has looked at the folder before one starts writing to it
    if plan.action != "use" and is_main_process():
        assert plan.config is not None
        what = "resuming the interrupted rendering of" if plan.action == "resume" else "rendering"
        print(f"{what} the synthetic '{plan.config.preset}' data set ({plan.config.videos} videos x "
              f"{plan.config.frames} frames, {plan.config.height}x{plan.config.width}, {layout} layout) into {root} ...", flush=True)
        render_dataset(plan.config, root, layout=layout, progress=progress)
    barrier()
    return root


# data.options keys of the synthetic training stream and of the idle negatives (see train_stream below)
STREAM_OPTIONS = ("train_stream", "stream_videos", "stream_clips", "negative_fraction")

# Keys of data.options and eval.options that the tubelet runner reads; any other key is a typo and an error.
DATA_OPTIONS = (*SYNTH_OPTIONS, *STREAM_OPTIONS, "window_stride", "stream", "flow_frames", "flow_method",
                "occluder_masks", "person_boxes")

# Fraction of idle training windows / frames when data.options.negative_fraction is not set: MOC's published rule
# (none) on real data, a quarter on the synthetic benchmark, whose actors are idle before and after their action.
SYNTHETIC_NEGATIVE_FRACTION = 0.25


def negative_fraction(data: DataConfig) -> float:
    """``data.options.negative_fraction``: the fraction of training windows (frames) that no action tube touches;
    default 0 (MOC's rule) except on synthetic data (:data:`SYNTHETIC_NEGATIVE_FRACTION`)."""
    default = SYNTHETIC_NEGATIVE_FRACTION if data.kind == "synthetic" else 0.0
    value = data.options.get("negative_fraction", default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise StadError(f"config key 'data.options.negative_fraction' must be a number in [0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class TrainStream:
    """The synthetic training stream a config asks for (``data.options.train_stream: true``).

    Attributes:
        config: the synthetic data set's settings (its ``synth.json``): the stream renders videos like its own.
        videos_per_epoch: ``data.options.stream_videos`` (default 256).
        clips_per_video: ``data.options.stream_clips`` (default: the family's).
    """

    config: Any
    videos_per_epoch: int
    clips_per_video: int


def train_stream(data: DataConfig, *, clips_per_video: int, layout: str = "act") -> TrainStream | None:
    """The stream settings of ``data`` (None without ``data.options.train_stream``): training items rendered on the
    fly (:mod:`stad.data.synth_stream`) instead of read from the data set's training videos, whose test videos stay
    the evaluation set. Only for ``data.kind: synthetic``."""
    options = data.options
    enabled = options.get("train_stream", False)
    if not isinstance(enabled, bool):
        raise StadError(f"config key 'data.options.train_stream' must be true or false, got {enabled!r}")
    if not enabled:
        extra = [k for k in ("stream_videos", "stream_clips") if k in options]
        if extra:
            raise StadError(f"config key(s) {', '.join('data.options.' + k for k in extra)} need data.options.train_stream: true")
        return None
    if data.kind != "synthetic":
        raise StadError(f"data.options.train_stream renders synthetic videos; data.kind is {data.kind!r}")
    from stad.data.synthetic import plan_dataset

    plan = plan_dataset(Path(data.root), options, layout=layout)
    if plan.config is None:
        raise StadError(f"{data.root}: the synthetic data set's settings cannot be read by this stad version; "
                        "render it again to train on the stream")
    values = {}
    for key, default in (("stream_videos", 256), ("stream_clips", clips_per_video)):
        value = options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StadError(f"config key 'data.options.{key}' must be an int >= 1, got {value!r}")
        values[key] = value
    return TrainStream(plan.config, values["stream_videos"], values["stream_clips"])


# data.options keys passed to stad.data.transforms.build_train_transform
AUGMENT_OPTIONS = ("photometric", "expand", "max_expand_ratio", "crop", "min_area_fraction", "flip",
                   "occlusion", "occlusion_size", "occlusion_max")


def check_options(options: dict[str, Any], valid: Sequence[str], key: str) -> None:
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise StadError(f"unknown config key(s) {', '.join(f'{key}.{k}' for k in unknown)}; valid: {', '.join(sorted(valid))}")


def eval_videos(cfg: Config, ann: TubeAnnotations) -> list[str]:
    """The ``eval.subset`` videos of ``data.split``, the first ``eval.options.max_videos`` of them if set."""
    videos = ann.split_videos(cfg.data.split, cfg.eval.subset)
    limit = cfg.eval.options.get("max_videos")
    return videos[: int(limit)] if limit else videos


def video_thresholds(cfg: Config) -> list[Any]:
    return [*cfg.eval.video_ious, "0.5:0.95"]


def train_dataloader(cfg: Config, dataset: Any, collate_fn: Callable[..., Any], *, shuffle: bool = True) -> DataLoader:
    """The seeded training loader of ``dataset``, shared by every family.

    Its sampler is an :class:`~stad.data.sampling.EpochSampler` over this rank's ``DistributedSampler`` shard (one
    shard without torchrun): the order depends only on ``(train.seed, epoch)``, so a resumed run reads the batches of
    an uninterrupted one, and every item key carries the epoch, so augmentation draws change per epoch inside
    persistent workers too. Full batches only when the data set holds at least one. ``shuffle=False`` (the synthetic
    stream, whose items are random already) keeps the data set's order.
    """
    from stad.data.sampling import EpochSampler
    from stad.engine.distributed import build_sampler

    d = cfg.data
    sampler = EpochSampler(build_sampler(dataset, shuffle=shuffle, seed=cfg.train.seed, drop_last=True))
    return DataLoader(
        dataset,
        batch_size=d.batch_size,
        sampler=sampler,
        num_workers=d.num_workers,
        collate_fn=collate_fn,
        drop_last=len(dataset) >= d.batch_size,
        persistent_workers=d.num_workers > 0,
    )


# model.options naming files that only initialise a model before training (ImageNet / Kinetics backbones, STEP's
# classification pre-training); a stad checkpoint holds every weight, so they are not read again when loading it.
INIT_WEIGHT_OPTIONS = ("backbone_weights", "cls_pretrained")


def load_detector(checkpoint: str | Path, *, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Config]:
    """Build the detector stored in a stad checkpoint (its config) and load its weights, in eval mode.

    The initialisation files of the config (``model.weights`` and :data:`INIT_WEIGHT_OPTIONS`) are not read: the
    checkpoint holds every weight, and those files need not exist where the checkpoint is used.
    """
    from stad.engine.checkpoint import load_checkpoint, load_model_weights
    from stad.models.registry import build_model

    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    if not ckpt.get("config"):
        raise StadError(f"{checkpoint}: the checkpoint has no config; cannot rebuild the model")
    cfg = config_from_dict(ckpt["config"])
    options = {k: (None if k in INIT_WEIGHT_OPTIONS else v) for k, v in cfg.model.options.items()}
    model = build_model(replace(cfg.model, weights=None, options=options))
    load_model_weights(model, ckpt["model"], strict=True)
    return model.to(device).eval(), cfg


def write_report(out: Path, cfg: Config, metrics: dict[str, Any], *, videos: int, header: dict[str, Any]) -> None:
    """``out/report.json`` (``header``, split, subset, video count, frame-/video-mAP details, the occlusion metrics
    when present and the flat ``metrics``; strict JSON) and ``out/report.md`` (:func:`format_report`)."""
    from stad.eval.report import json_clean

    report = {
        **header,
        "split": cfg.data.split,
        "subset": cfg.eval.subset,
        "videos": videos,
        "frame_map": metrics["_frame"].to_json(),
        "video_map": metrics["_video"].to_json(),
        **({"occlusion": metrics["_occlusion"].to_json()} if "_occlusion" in metrics else {}),
        "metrics": {k: v for k, v in metrics.items() if not k.startswith("_")},
    }
    (out / "report.json").write_text(json.dumps(json_clean(report), indent=2, allow_nan=False))
    (out / "report.md").write_text(format_report(metrics))


def format_report(metrics: dict[str, Any]) -> str:
    """Markdown tables of frame-mAP and video-mAP per class (``stad.eval.report``)."""
    from stad.eval.report import frame_map_table, video_map_table

    text = f"{frame_map_table(metrics['_frame'], markdown=True)}\n\n{video_map_table(metrics['_video'], markdown=True)}\n"
    if "_occlusion" in metrics:
        text += f"\n{metrics['_occlusion'].markdown()}\n"
    return text


def resolve_labels(cfg: Config, labels: Sequence[str]) -> Config:
    """``cfg`` with ``model.num_classes`` / ``model.labels`` filled from the data set's ``labels``; a config that
    names other labels is an error."""
    labels = list(labels)
    if cfg.model.labels and list(cfg.model.labels) != labels:
        raise StadError(f"config 'model.labels' {cfg.model.labels} differ from the data set's labels {labels}")
    return replace(cfg, model=replace(cfg.model, num_classes=len(labels), labels=labels))


def check_checkpoint_labels(checkpoint: str | Path, ckpt_cfg: Config, labels: Sequence[str]) -> None:
    """A checkpoint trained on other classes than the data set's ``labels`` is an error naming both."""
    if ckpt_cfg.model.labels and list(ckpt_cfg.model.labels) != list(labels):
        raise StadError(f"{checkpoint} was trained on labels {ckpt_cfg.model.labels}, the data set has {list(labels)}")


def public_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The flat metrics of an evaluation (the result objects under ``_``-keys left out)."""
    return {k: v for k, v in metrics.items() if not k.startswith("_")}
