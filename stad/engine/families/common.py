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


# Keys of data.options and eval.options that the tubelet runner reads; any other key is a typo and an error.
DATA_OPTIONS = (*SYNTH_OPTIONS, "window_stride", "stream", "flow_frames", "flow_method", "occluder_masks", "person_boxes")


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


def train_dataloader(cfg: Config, dataset: Any, collate_fn: Callable[..., Any]) -> DataLoader:
    """The shuffled, seeded training loader of ``dataset`` (a DistributedSampler under torchrun; full batches
    only when the data set holds at least one), shared by the tubelet and the frame runners."""
    from stad.engine.distributed import build_sampler, is_distributed

    d = cfg.data
    sampler = build_sampler(dataset, shuffle=True, seed=cfg.train.seed, drop_last=True) if is_distributed() else None
    return DataLoader(
        dataset,
        batch_size=d.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=d.num_workers,
        collate_fn=collate_fn,
        drop_last=len(dataset) >= d.batch_size,
        generator=torch.Generator().manual_seed(cfg.train.seed),
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
