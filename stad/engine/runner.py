"""From a config to a trained / tested tubelet detector: the glue behind ``stad train`` and ``stad test``.

``load_data(cfg.data)`` reads the ground truth and finds the frames (ACT pickle, custom JSON or the
synthetic benchmark, rendered on first use); ``train_from_config`` builds the data loader, the model
(``stad.models.registry``) and the periodic frame-/video-mAP evaluator and calls
:func:`stad.engine.train.fit`; ``test_from_config`` runs a checkpoint over a split and writes the
predictions and the evaluation report.
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
from stad.engine.infer import (
    LinkConfig,
    SplitPredictions,
    TubeletInferenceConfig,
    evaluate_predictions,
    predict_videos,
)
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
      ``occlusion``, ``classes``). Settings that ``data.options`` sets must match the data set on disk
      (:func:`stad.data.synthetic.plan_dataset`); an interrupted rendering of the same settings is resumed.
    """
    _check_options(data.options, (*DATA_OPTIONS, *AUGMENT_OPTIONS), "data.options")
    if data.kind == "synthetic":
        from stad.data.synthetic import load_annotations

        root = ensure_synthetic(data, layout="act", progress=progress)
        return LoadedData(load_annotations(root), root)
    if not data.gt_file:
        raise StadError(f"config key 'data.gt_file' must name the ground-truth file for data.kind={data.kind!r}")
    gt_file = Path(data.gt_file)
    root = Path(data.root) if data.root else gt_file.parent
    if data.kind == "act":
        from stad.data.act import load_act

        return LoadedData(load_act(gt_file), root)
    if data.kind == "custom":
        from stad.data.custom import load_custom

        return LoadedData(load_custom(gt_file).annotations, root)
    raise StadError(f"data.kind={data.kind!r} is not a tubelet data set (use act, custom or synthetic)")


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


# model.name values trained and tested frame by frame by stad.engine.frame_runner (not tubelet detectors).
FRAME_MODELS = ("keypoint",)

# Keys of data.options and eval.options that the tubelet runner reads; any other key is a typo and an error.
DATA_OPTIONS = (*SYNTH_OPTIONS, "window_stride", "stream", "flow_frames", "flow_method", "occluder_masks")
INFER_OPTIONS = ("window_batch", "frame_chunk", "reuse_features", "flip", "channels_last", "max_videos")


def _check_options(options: dict[str, Any], valid: Sequence[str], key: str) -> None:
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise StadError(f"unknown config key(s) {', '.join(f'{key}.{k}' for k in unknown)}; valid: {', '.join(sorted(valid))}")


def inference_config(cfg: Config) -> TubeletInferenceConfig:
    """Inference settings from ``cfg`` (input size from ``data``, batching and flip from ``eval.options``)."""
    opts = cfg.eval.options
    _check_options(opts, (*INFER_OPTIONS, *LinkConfig.__dataclass_fields__), "eval.options")
    return TubeletInferenceConfig(
        input_size=tuple(cfg.data.input_size),
        window_batch=int(opts.get("window_batch", max(1, cfg.eval.batch_size))),
        frame_chunk=int(opts.get("frame_chunk", 16)),
        reuse_features=bool(opts.get("reuse_features", True)),
        flip=bool(opts.get("flip", False)),
        channels_last=bool(opts.get("channels_last", False)),
    )


def link_config(cfg: Config) -> LinkConfig:
    """Tube-building settings from ``eval.options`` (PROTOCOLS.md §A defaults)."""
    opts = cfg.eval.options
    _check_options(opts, (*INFER_OPTIONS, *LinkConfig.__dataclass_fields__), "eval.options")
    defaults = LinkConfig()
    return LinkConfig(**{name: type(getattr(defaults, name))(opts.get(name, getattr(defaults, name))) for name in defaults.__dataclass_fields__})


def eval_videos(cfg: Config, ann: TubeAnnotations) -> list[str]:
    """The ``eval.subset`` videos of ``data.split``, the first ``eval.options.max_videos`` of them if set."""
    videos = ann.split_videos(cfg.data.split, cfg.eval.subset)
    limit = cfg.eval.options.get("max_videos")
    return videos[: int(limit)] if limit else videos


def make_evaluator(cfg: Config, data: LoadedData) -> Callable[[torch.nn.Module, Any, torch.device], dict[str, float]]:
    """``evaluate(model, loader, device) -> metrics`` for :func:`stad.engine.train.fit` (the loader is unused:
    whole test videos are run with feature reuse, linked into tubes and scored with frame-/video-mAP)."""
    videos = eval_videos(cfg, data.annotations)
    spec = stream_spec(cfg)
    infer_cfg, link_cfg = replace(inference_config(cfg), flip_invert_channels=spec.flip_invert_channels), link_config(cfg)

    def evaluate(model: torch.nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        preds = predict_videos(
            model, data.annotations, data.frames_root, videos, device=device, cfg=infer_cfg, link=link_cfg, stream=spec
        )
        metrics = evaluate_predictions(
            data.annotations, preds, split=cfg.data.split, frame_iou=cfg.eval.frame_iou, video_ious=_video_thresholds(cfg)
        )
        return {k: v for k, v in metrics.items() if not k.startswith("_")}

    return evaluate


def _video_thresholds(cfg: Config) -> list[Any]:
    return [*cfg.eval.video_ious, "0.5:0.95"]


# data.options keys passed to stad.data.transforms.build_train_transform
AUGMENT_OPTIONS = ("photometric", "expand", "max_expand_ratio", "crop", "min_area_fraction", "flip",
                   "occlusion", "occlusion_size", "occlusion_max")


def stream_spec(cfg: Config):
    """The input stream of ``cfg`` (``data.options.stream`` rgb|flow|fused, ``flow_frames``): a
    :class:`stad.data.streams.StreamSpec`."""
    from stad.data.streams import StreamSpec

    return StreamSpec.from_options(cfg.data.options)


def flow_augment_options(spec: Any, augment_options: dict[str, Any]) -> dict[str, Any]:
    """Augmentation settings a flow input needs, unless ``data.options`` sets them.

    MOC-Detector (src/datasets/sample/sampler.py) mirrors flow clips with ``255 - p`` on the x channel
    and uses the same normalisation for flow as for RGB (opts.py: one mean/std), both kept here. It
    also applies its colour distortion to flow images; stad turns it off (``photometric: false``):
    hue/saturation/contrast changes of a flow image change the motion it encodes. Expand pads with
    zero flow (byte 128) instead of the mean RGB pixel.
    """
    from stad.data.streams import ZERO_FLOW_BYTE

    if not spec.needs_flow:
        return {}
    if augment_options.get("photometric"):
        raise StadError("data.options.photometric=true is not possible for the flow stream (RGB colour distortion)")
    return {"photometric": False, "fill": ZERO_FLOW_BYTE, "flip_invert_channels": spec.flip_invert_channels}


def ensure_flow(cfg: Config, data: LoadedData, *, progress: bool = True) -> None:
    """Compute the missing ``brox-images`` of ``data`` when ``cfg`` reads the flow stream (``stad flow``'s
    convention, method ``data.options.flow_method``, default dis); resumable, a no-op when complete."""
    from stad.data.flow import compute_dataset_flow
    from stad.engine.distributed import barrier, is_main_process

    if not stream_spec(cfg).needs_flow:
        return
    method = str(cfg.data.options.get("flow_method", "dis"))
    failed: dict[str, str] = {}
    if is_main_process():  # under torchrun one process writes, the others wait at the barrier
        result = compute_dataset_flow(data.annotations, data.frames_root, method=method, progress=progress)
        failed = result.failed
        if result.written:
            print(f"computed the {method} flow of {len(result.written)} videos into {data.frames_root / 'brox-images'}", flush=True)
    barrier()
    if failed:
        video, reason = next(iter(failed.items()))
        raise StadError(f"flow could not be computed for {len(failed)} video(s), e.g. {video}: {reason}")


def _check_occlusion_options(options: dict[str, Any]) -> None:
    """Reject malformed occlusion augmentation values of ``data.options`` naming the key."""
    rate = options.get("occlusion", 0.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise StadError(f"config key 'data.options.occlusion' must be a rate in [0, 1], got {rate!r}")
    size = options.get("occlusion_size", (0.15, 0.5))
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(isinstance(v, (int, float)) for v in size) \
            or not 0.0 < size[0] <= size[1] <= 1.0:
        raise StadError(f"config key 'data.options.occlusion_size' must be [low, high] with 0 < low <= high <= 1, got {size!r}")
    count = options.get("occlusion_max", 2)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise StadError(f"config key 'data.options.occlusion_max' must be an int >= 1, got {count!r}")


def build_train_loader(cfg: Config, data: LoadedData, *, mask_stride: int | None = None) -> DataLoader:
    """Training loader of K-frame tubelet clips, DDP-aware.

    With ``data.augment`` the clips get ACT/MOC's augmentation; ``data.options`` may set the keys of
    ``AUGMENT_OPTIONS`` (e.g. ``max_expand_ratio: 2``; STADO's occlusion augmentation: ``occlusion`` = rate,
    ``occlusion_size`` = [low, high] side fraction, ``occlusion_max`` = occluders per clip);
    ``data.options.window_stride`` subsamples start frames. ``mask_stride`` adds STADO's ``visible_mask``
    targets (``data.options.occluder_masks: false`` ignores a data set's stored occluder masks).
    """
    from stad.data.datasets import TubeletClipDataset, collate_tubelets
    from stad.data.transforms import build_train_transform

    d = cfg.data
    augment_options = {k: d.options[k] for k in AUGMENT_OPTIONS if k in d.options}
    spec = stream_spec(cfg)
    augment_options.update(flow_augment_options(spec, augment_options))
    _check_occlusion_options(augment_options)
    transform = build_train_transform(tuple(d.input_size), **augment_options) if d.augment else None
    dataset = TubeletClipDataset(
        data.annotations,
        data.frames_root,
        split=d.split,
        subset="train",
        K=d.K,
        stride=int(d.options.get("window_stride", 1)),
        input_size=tuple(d.input_size),
        transform=transform,
        stream=spec.stream,
        flow_frames=spec.flow_frames,
        seed=cfg.train.seed,
        mask_stride=mask_stride,
        occluder_masks=bool(d.options.get("occluder_masks", True)),
    )
    if mask_stride is not None:
        source = "boxes minus the stored occluder masks" if dataset.occluder_mask_dir else "the visible boxes (no occluder-masks folder)"
        pasted = " minus pasted occluders" if d.augment and augment_options.get("occlusion", 0) > 0 else ""
        print(f"STADO mask targets (stride {mask_stride}): {source}{pasted}", flush=True)
    return train_dataloader(cfg, dataset, collate_tubelets)


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


def resolve_model_config(cfg: Config, ann: TubeAnnotations) -> Config:
    """Fill ``model.num_classes``/``model.labels`` and MOC's ``K`` from the data, checking they agree."""
    labels = list(ann.labels)
    model = cfg.model
    if model.labels and list(model.labels) != labels:
        raise StadError(f"config 'model.labels' {model.labels} differ from the data set's labels {labels}")
    options = dict(model.options)
    if options.get("K", cfg.data.K) != cfg.data.K:
        raise StadError(f"model.options.K={options['K']} differs from data.K={cfg.data.K}")
    options["K"] = cfg.data.K
    spec = stream_spec(cfg)
    if spec.stream == "fused":
        raise StadError("data.options.stream=fused is for testing two checkpoints (stad test --flow-checkpoint); train rgb and flow separately")
    if options.get("in_chans", spec.channels) != spec.channels:
        raise StadError(
            f"model.options.in_chans={options['in_chans']} but data.options.stream={spec.stream!r} with "
            f"flow_frames={spec.flow_frames} gives {spec.channels} input channels; drop in_chans to set it automatically"
        )
    if spec.stream != "rgb":
        options["in_chans"] = spec.channels
    return replace(cfg, model=replace(model, num_classes=len(labels), labels=labels, options=options))


def train_from_config(cfg: Config, *, device: str | None = None):
    """Train the detector of ``cfg``; returns :class:`stad.engine.train.FitResult`."""
    if cfg.model.name in FRAME_MODELS:  # one frame at a time (KORSAL key-point detector)
        from stad.engine.frame_runner import train_frame_detector

        return train_frame_detector(cfg, device=device)
    from stad.engine.distributed import cleanup, init_distributed
    from stad.engine.train import fit, resolve_device, seed_everything
    from stad.models.registry import build_model

    dist = init_distributed()
    try:
        data = load_data(cfg.data)
        cfg = resolve_model_config(cfg, data.annotations)
        ensure_flow(cfg, data)
        seed_everything(cfg.train.seed)
        model = build_model(cfg.model)
        loader = build_train_loader(cfg, data, mask_stride=getattr(model, "mask_target_stride", None))
        dev = resolve_device(device or cfg.train.device)
        if dist.distributed and dev.type == "cuda":
            dev = torch.device("cuda", dist.local_rank)
        return fit(model, loader, cfg=cfg.train, device=dev, evaluate=make_evaluator(cfg, data), config=cfg)
    finally:
        cleanup()


def load_detector(checkpoint: str | Path, *, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Config]:
    """Build the detector stored in a stad checkpoint (its config) and load its weights, in eval mode."""
    from stad.engine.checkpoint import load_checkpoint, load_model_weights
    from stad.models.registry import build_model

    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    if not ckpt.get("config"):
        raise StadError(f"{checkpoint}: the checkpoint has no config; cannot rebuild the model")
    cfg = config_from_dict(ckpt["config"])
    model = build_model(replace(cfg.model, weights=None))
    load_model_weights(model, ckpt["model"], strict=True)
    return model.to(device).eval(), cfg


def load_two_stream(
    rgb_checkpoint: str | Path,
    flow_checkpoint: str | Path,
    *,
    device: str | torch.device = "cpu",
    weights: Any = None,
) -> tuple[torch.nn.Module, Config, Any]:
    """A :class:`stad.models.fusion.TwoStreamDetector` from an RGB and a flow checkpoint (moc or stado).

    Returns:
        ``(model, rgb_config, spec)`` with ``spec`` the fused :class:`stad.data.streams.StreamSpec` (the flow
        checkpoint's ``flow_frames``). Raises StadError when the streams or their labels do not fit.
    """
    from stad.data.streams import StreamSpec
    from stad.models.fusion import FusionWeights, TwoStreamDetector

    rgb, rgb_cfg = load_detector(rgb_checkpoint, device=device)
    flow, flow_cfg = load_detector(flow_checkpoint, device=device)
    rgb_spec, flow_spec = stream_spec(rgb_cfg), stream_spec(flow_cfg)
    if rgb_spec.stream != "rgb":
        raise StadError(f"{rgb_checkpoint}: --checkpoint must be an RGB model for fusion, it was trained on stream {rgb_spec.stream!r}")
    if flow_spec.stream != "flow":
        raise StadError(f"{flow_checkpoint}: --flow-checkpoint was trained on stream {flow_spec.stream!r}, not flow")
    if list(rgb_cfg.model.labels) != list(flow_cfg.model.labels):
        raise StadError(f"{rgb_checkpoint} has labels {rgb_cfg.model.labels}, {flow_checkpoint} has {flow_cfg.model.labels}")
    spec = StreamSpec(stream="fused", flow_frames=flow_spec.flow_frames)
    model = TwoStreamDetector(rgb=rgb, flow=flow, flow_channels=flow_spec.channels, weights=weights or FusionWeights())
    return model.to(device).eval(), rgb_cfg, spec


def test_from_config(
    cfg: Config,
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    device: str | None = None,
    progress: bool = True,
    flow_checkpoint: str | Path | None = None,
    fusion_weights: Any = None,
) -> dict[str, Any]:
    """Run ``checkpoint`` on the ``eval.subset`` videos of ``data.split``; write predictions and the report.

    Writes ``out_dir/detections.csv`` (frame detections), ``tubes.json``, ``tubelets.npz`` and
    ``report.json`` / ``report.md`` (frame-mAP, video-mAP per threshold, per class, and the occlusion
    metrics when the ground truth has visibility). Returns the metrics.

    The input stream is the checkpoint's (``data.options.stream`` of its config: RGB frames or stacked
    ``brox-images`` flow, computed first if missing). With ``flow_checkpoint``, ``checkpoint`` is the RGB
    model and the two are fused (:class:`stad.models.fusion.TwoStreamDetector`; ``fusion_weights`` a
    :class:`stad.models.fusion.FusionWeights`, default MOC's 0.5 / 0.8 / 0.8).
    """
    if cfg.model.name in FRAME_MODELS:  # one frame at a time: stad.engine.frame_runner, same report shape
        from stad.engine.frame_runner import test_frame_detector

        return test_frame_detector(cfg, checkpoint, out_dir, device=device, progress=progress)
    from stad.engine.train import resolve_device

    dev = resolve_device(device or cfg.train.device)
    if flow_checkpoint is not None:
        model, ckpt_cfg, spec = load_two_stream(checkpoint, flow_checkpoint, device=dev, weights=fusion_weights)
    else:
        if fusion_weights is not None:
            raise StadError("a fusion weight needs a flow checkpoint (--flow-checkpoint)")
        model, ckpt_cfg = load_detector(checkpoint, device=dev)
        spec = stream_spec(ckpt_cfg)
    data = load_data(cfg.data)
    ensure_flow(replace(cfg, data=replace(cfg.data, options={**cfg.data.options, "stream": spec.stream})), data, progress=progress)
    labels = list(data.annotations.labels)
    if ckpt_cfg.model.labels and list(ckpt_cfg.model.labels) != labels:
        raise StadError(f"{checkpoint} was trained on labels {ckpt_cfg.model.labels}, the data set has {labels}")
    videos = eval_videos(cfg, data.annotations)
    infer_cfg = replace(inference_config(cfg), flip_invert_channels=spec.flip_invert_channels)
    preds = predict_videos(
        model, data.annotations, data.frames_root, videos, device=dev, cfg=infer_cfg, link=link_config(cfg), progress=progress, stream=spec
    )
    metrics = evaluate_predictions(
        data.annotations, preds, split=cfg.data.split, frame_iou=cfg.eval.frame_iou, video_ious=_video_thresholds(cfg)
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(preds, out)
    header = {
        "checkpoint": str(checkpoint),
        **({"flow_checkpoint": str(flow_checkpoint), "fusion_weights": vars(model.weights)} if flow_checkpoint is not None else {}),
        "stream": spec.stream,
    }
    write_report(out, cfg, metrics, videos=len(videos), header=header)
    return metrics


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


def write_predictions(preds: SplitPredictions, out: Path) -> None:
    """``detections.csv``, ``tubes.json`` and ``tubelets.npz`` of ``preds`` under ``out``."""
    from stad.eval.predictions import write_frame_detections, write_tubes
    from stad.tubes import save_tubelets

    write_frame_detections(preds.frame_detections, out / "detections.csv")
    write_tubes(preds.tubes, out / "tubes.json")
    save_tubelets(out / "tubelets.npz", preds.tubelets)


def format_report(metrics: dict[str, Any]) -> str:
    """Markdown tables of frame-mAP and video-mAP per class (``stad.eval.report``)."""
    from stad.eval.report import frame_map_table, video_map_table

    text = f"{frame_map_table(metrics['_frame'], markdown=True)}\n\n{video_map_table(metrics['_video'], markdown=True)}\n"
    if "_occlusion" in metrics:
        text += f"\n{metrics['_occlusion'].markdown()}\n"
    return text
