"""The frame family (KORSAL key-point detector): single frames + temporal cue, per-frame inference, online tubes.

The glue behind ``stad train`` / ``stad test`` for models that detect one frame at a time
(:class:`stad.models.keypoint.KeypointDetector`); :mod:`stad.engine.runner` dispatches here by ``model.name``.

Testing flow for one video of ``T`` frames (frames numbered from 1, earlier frame ``max(1, t - gap)``)::

    frames ──resize + normalise──▶ (3, H, W) ──batches of `frame_batch` frames + their earlier frames──▶
        model.detect_frames ──▶ per-frame boxes (original pixels) ──▶ FrameDetections (frame-mAP, CSV)
                            ──▶ OnlineLinker.update(t, ...) frame by frame ──▶ tubes (video-mAP, tubes JSON)

``eval.options`` keys (any other is an error): ``frame_batch`` (frames per forward pass, 16), ``max_videos``,
and the online linker's: ``extrapolation`` (True; False = no occlusion bridging: a tube ends at its first
frame without a detection, i.e. ``max_gap = 0``), ``max_gap`` (5), ``iou_threshold`` (0.1), ``cost``
(``score_iou``), ``min_length`` (8), ``min_score`` (0.001), ``start_score`` (0.001), ``nms_threshold`` (0.45),
``top_k`` (10), ``score_window`` (5), ``motion_window`` (3), ``trim`` (False), ``trim_threshold`` (0.1),
``trim_penalty`` (0.5); see :class:`stad.tubes.link_online.OnlineLinker`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from stad.config import Config
from stad.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from stad.engine.families.base import Family, output_dir
from stad.engine.families.common import (
    AUGMENT_OPTIONS,
    LoadedData,
    check_checkpoint_labels,
    check_options,
    eval_videos,
    format_report,
    load_data,
    load_detector,
    negative_fraction,
    resolve_labels,
    train_dataloader,
    train_stream,
    video_thresholds,
    write_report,
)
from stad.engine.infer import SplitPredictions, evaluate_predictions, preprocess_frames, read_act_frames
from stad.errors import StadError
from stad.structures import FrameDetections, TubeAnnotations
from stad.tubes.link_online import OnlineLinker, OnlineLinkParams, TrackedTube


FRAME_INFER_OPTIONS = ("frame_batch", "max_videos")


LINK_OPTIONS = tuple(f for f in OnlineLinkParams.__dataclass_fields__ if f not in ("num_classes", "image_size", "plus_one"))


@dataclass
class FrameInferenceConfig:
    """How to run a frame detector over videos.

    Attributes:
        input_size: network input ``(height, width)``.
        frame_batch: frames per forward pass.
        mean, std: normalisation (as the training data set's).
    """

    input_size: tuple[int, int] = (288, 288)
    frame_batch: int = 16
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD


def frame_inference_config(cfg: Config) -> FrameInferenceConfig:
    """Inference settings from ``cfg`` (input size from ``data``, ``eval.options.frame_batch``)."""
    check_options(cfg.eval.options, (*FRAME_INFER_OPTIONS, *LINK_OPTIONS, "extrapolation"), "eval.options")
    batch = int(cfg.eval.options.get("frame_batch", 16))
    if batch < 1:
        raise StadError(f"eval.options.frame_batch must be >= 1, got {batch}")
    return FrameInferenceConfig(input_size=tuple(cfg.data.input_size), frame_batch=batch)


def online_link_options(options: dict[str, Any]) -> dict[str, Any]:
    """:class:`OnlineLinker` keyword arguments from ``eval.options`` (module docstring); ``extrapolation: false``
    sets ``max_gap = 0`` and may not be combined with a ``max_gap`` > 0. ``trim``, ``trim_threshold`` and
    ``trim_penalty`` are the names the tubelet family uses (:class:`stad.engine.families.tubelet.LinkConfig`)."""
    check_options(options, (*FRAME_INFER_OPTIONS, *LINK_OPTIONS, "extrapolation"), "eval.options")
    link = {k: options[k] for k in LINK_OPTIONS if k in options}
    extrapolation = options.get("extrapolation", True)
    if not isinstance(extrapolation, bool):
        raise StadError(f"eval.options.extrapolation must be true or false, got {extrapolation!r}")
    if not extrapolation:
        if int(link.get("max_gap", 0)) > 0:
            raise StadError(f"eval.options.extrapolation=false contradicts eval.options.max_gap={link['max_gap']}")
        link["max_gap"] = 0
    if not isinstance(link.get("trim", False), bool):  # bool("false") would be True
        raise StadError(f"eval.options.trim must be true or false, got {link['trim']!r}")
    from stad.tubes.trim import TRIM_PENALTY, TRIM_THRESHOLD, check_trim_params

    check_trim_params(link.get("trim_threshold", TRIM_THRESHOLD), link.get("trim_penalty", TRIM_PENALTY))
    return link


@torch.inference_mode()
def detect_video_frames(
    model: torch.nn.Module,
    frames: Iterable[np.ndarray],
    *,
    orig_size: tuple[int, int],
    device: torch.device | str,
    cfg: FrameInferenceConfig | None = None,
) -> list[Any]:
    """Detections of every frame of one video, in order (frame ``t`` paired with frame ``max(1, t - gap)``).

    Args:
        model: a frame detector with ``gap`` and ``detect_frames(image, previous, orig_sizes=...)``
            (:class:`stad.models.keypoint.KeypointDetector`), in eval mode.
        frames: ``(H0, W0, 3)`` uint8 RGB frames (an iterator is streamed; only ``gap`` frames are kept).
        orig_size: ``(H0, W0)``; boxes come back in these pixels.
        device: where the model runs.
        cfg: input size, batching, normalisation.

    Returns:
        One :class:`stad.models.keypoint.FrameBoxes` per frame.
    """
    cfg = cfg or FrameInferenceConfig()
    gap = int(model.gap)
    history: list[torch.Tensor] = []  # the last `gap` preprocessed frames before the chunk, (3, H, W) each
    out: list[Any] = []
    seen = 0
    for chunk in _chunks(frames, cfg.frame_batch, size=tuple(orig_size)):
        images = preprocess_frames(chunk, cfg).to(device)  # [t, 3, H, W]
        pool = torch.cat([torch.stack(history), images]) if history else images  # [len(history) + t, 3, H, W]
        first = seen + 1 - len(history)  # frame number of pool[0]
        numbers = np.arange(seen + 1, seen + 1 + len(chunk))
        previous_idx = np.maximum(1, numbers - gap) - first  # [t]
        previous = pool[torch.as_tensor(previous_idx, device=pool.device)]  # [t, 3, H, W]
        out.extend(model.detect_frames(images, previous, orig_sizes=[tuple(orig_size)] * len(chunk)))
        seen += len(chunk)
        history = list(pool[-gap:].unbind(0))
    return out


def _chunks(frames: Iterable[np.ndarray], length: int, *, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Stacks of ``length`` frames ``(n, H, W, 3)``; a frame whose ``(H, W)`` is not ``size`` is an error."""
    chunk: list[np.ndarray] = []
    for index, frame in enumerate(frames, start=1):
        if frame.shape[:2] != size:
            raise StadError(f"frame {index} has size {frame.shape[:2]}, expected (H, W) = {size}")
        chunk.append(frame)
        if len(chunk) == length:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


def link_frames_online(
    per_frame: Sequence[Any], *, num_classes: int, image_size: tuple[int, int] | None = None, **link: Any
) -> list[TrackedTube]:
    """Online tubes of one video from its per-frame detections (``per_frame[t - 1]`` for frame ``t``)."""
    linker = OnlineLinker(num_classes, image_size=image_size, **link)
    for t, dets in enumerate(per_frame, start=1):
        linker.update(t, dets.boxes, dets.scores, dets.labels)
    return linker.finish()


def frame_detections_of(videos: Sequence[str], per_video: dict[str, Sequence[Any]]) -> FrameDetections:
    """Column-wise :class:`FrameDetections` of every video's per-frame boxes (frames from 1)."""
    cols: dict[str, list[np.ndarray]] = {"video": [], "frame": [], "label": [], "score": [], "boxes": []}
    for v, video in enumerate(videos):
        for t, dets in enumerate(per_video[video], start=1):
            n = len(dets.scores)
            cols["video"].append(np.full(n, v, np.int64))
            cols["frame"].append(np.full(n, t, np.int64))
            cols["label"].append(np.asarray(dets.labels, np.int64))
            cols["score"].append(np.asarray(dets.scores, np.float64))
            cols["boxes"].append(np.asarray(dets.boxes, np.float64).reshape(-1, 4))
    if not cols["score"]:
        return FrameDetections.empty(list(videos))
    return FrameDetections(videos=list(videos), **{k: np.concatenate(v) for k, v in cols.items()})


def predict_frame_videos(
    model: torch.nn.Module,
    ann: TubeAnnotations,
    frames_root: str | Path,
    videos: Sequence[str],
    *,
    device: torch.device | str,
    cfg: FrameInferenceConfig | None = None,
    link: dict[str, Any] | None = None,
    progress: bool = True,
) -> SplitPredictions:
    """Frame detections and online tubes of ``videos`` (ACT layout frames under ``frames_root``).

    ``link``: :class:`OnlineLinker` keyword arguments (:func:`online_link_options`). Under ``torchrun`` each
    process takes every ``world_size``-th video and the results are gathered on every process.
    """
    from stad.engine.distributed import all_gather_objects, get_rank, get_world_size

    rank, world = get_rank(), get_world_size()
    model.eval()
    per_video: dict[str, list[Any]] = {}
    tubes: dict[str, list[TrackedTube]] = {}
    for video in tqdm(list(videos)[rank::world], desc="detect", unit="video", disable=not progress or rank != 0, leave=False):
        size = tuple(int(v) for v in ann.resolution[video])
        frames = read_act_frames(frames_root, video, int(ann.nframes[video]))
        per_video[video] = detect_video_frames(model, frames, orig_size=size, device=device, cfg=cfg)
        tubes[video] = link_frames_online(per_video[video], num_classes=len(ann.labels), image_size=size, **(link or {}))
    if world > 1:
        merged: tuple[dict, dict] = ({}, {})
        for part in all_gather_objects((per_video, tubes)):
            merged[0].update(part[0])
            merged[1].update(part[1])
        per_video, tubes = merged
    return SplitPredictions(
        videos=list(videos), tubelets={}, tubes={v: tubes[v] for v in videos}, frame_detections=frame_detections_of(videos, per_video)
    )


def resolve_model_config(cfg: Config, data: LoadedData) -> Config:
    """Fill ``model.num_classes``/``model.labels`` from the data, checking they agree; the ``eval.options`` are checked
    too, so that a typo fails before training, not at the first validation."""
    frame_inference_config(cfg)
    online_link_options(cfg.eval.options)
    return resolve_labels(cfg, data.annotations.labels)


def build_train_loader(cfg: Config, data: LoadedData, model: torch.nn.Module) -> DataLoader:
    """Training loader of (frame, earlier frame ``model.gap`` frames before) pairs
    (:class:`stad.data.datasets.FrameDataset`), DDP-aware; ``data.augment`` applies the augmentation of
    ``data.options`` (``AUGMENT_OPTIONS``) to both frames alike. ``data.options.negative_fraction`` adds frames
    without an acting actor; ``train_stream: true`` (synthetic data) renders the training frames on the fly
    (``stream_videos`` videos per epoch, ``stream_clips`` frames each, default 8; :mod:`stad.data.synth_stream`)."""
    from stad.data.datasets import FrameDataset, collate_frames
    from stad.data.transforms import build_train_transform

    d = cfg.data
    augment_options = {k: d.options[k] for k in AUGMENT_OPTIONS if k in d.options}
    transform = build_train_transform(tuple(d.input_size), **augment_options) if d.augment else None
    fraction = negative_fraction(d)
    stream = train_stream(d, clips_per_video=8)
    if stream is not None:
        from stad.data.synth_stream import FrameStreamDataset

        dataset = FrameStreamDataset(
            stream.config, videos_per_epoch=stream.videos_per_epoch, frames_per_video=stream.clips_per_video,
            input_size=tuple(d.input_size), gap=int(model.gap), transform=transform, seed=cfg.train.seed,
            negative_fraction=fraction,
        )
        return train_dataloader(cfg, dataset, collate_frames, shuffle=False)
    dataset = FrameDataset(
        data.annotations, data.frames_root, split=d.split, subset="train", input_size=tuple(d.input_size),
        gap=int(model.gap), transform=transform, seed=cfg.train.seed, negative_fraction=fraction,
    )
    return train_dataloader(cfg, dataset, collate_frames)


def predict(model: torch.nn.Module, cfg: Config, data: LoadedData, *, device: torch.device | str, progress: bool = True) -> SplitPredictions:
    """Frame detections and online tubes of the ``eval.subset`` videos."""
    return predict_frame_videos(
        model, data.annotations, data.frames_root, eval_videos(cfg, data.annotations), device=device,
        cfg=frame_inference_config(cfg), link=online_link_options(cfg.eval.options), progress=progress,
    )


def evaluate(cfg: Config, data: LoadedData, preds: SplitPredictions) -> dict[str, Any]:
    """Frame-mAP, video-mAP and the occlusion metrics, as the tubelet family (:func:`stad.engine.infer.evaluate_predictions`)."""
    return evaluate_predictions(
        data.annotations, preds, split=cfg.data.split, frame_iou=cfg.eval.frame_iou, video_ious=video_thresholds(cfg)
    )


def test(
    cfg: Config, checkpoint: str | Path, out_dir: str | Path, *, device: str | None = None, progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Run a frame-detector ``checkpoint`` on the ``eval.subset`` videos of ``data.split``; write the report.

    Writes ``out_dir/detections.csv`` (per-frame detections), ``tubes.json`` (online tubes) and ``report.json`` /
    ``report.md`` with the same shape as the tubelet family's: ``report.json["metrics"]`` is a flat dict of
    ``frame_mAP``, ``video_mAP@<thr>`` and, when the ground truth has visibility, ``frame_mAP/vis<lo>-<hi>`` and
    ``video_mAP_occluded@<thr>`` (all from :func:`stad.engine.infer.evaluate_predictions`). Returns the metrics.
    """
    from stad.engine.train import resolve_device
    from stad.eval.predictions import write_frame_detections, write_tubes

    if options.get("flow_checkpoint") or options.get("fusion_weights") is not None:
        raise StadError(f"{checkpoint}: two-stream fusion (--flow-checkpoint) is for tubelet models (moc, stado)")
    dev = resolve_device(device or cfg.train.device)
    model, ckpt_cfg = load_detector(checkpoint, device=dev)
    if not hasattr(model, "detect_frames"):
        raise StadError(f"{checkpoint} holds a {ckpt_cfg.model.name!r} model, not a frame detector (keypoint)")
    data = load_data(cfg.data, progress=progress)
    check_checkpoint_labels(checkpoint, ckpt_cfg, data.annotations.labels)
    preds = predict(model, cfg, data, device=dev, progress=progress)
    metrics = evaluate(cfg, data, preds)
    out = output_dir(out_dir)
    write_frame_detections(preds.frame_detections, out / "detections.csv")
    write_tubes(preds.tubes, out / "tubes.json")
    write_report(out, cfg, metrics, videos=len(preds.videos), header={"checkpoint": str(checkpoint), "stream": "rgb"})
    return metrics


FAMILY = Family(
    name="frame",
    models=("keypoint",),
    load_data=lambda cfg, *, progress=True: load_data(cfg.data, progress=progress),
    resolve_model_config=resolve_model_config,
    build_train_loader=build_train_loader,
    predict=predict,
    evaluate=evaluate,
    test=test,
    format_report=format_report,
)
