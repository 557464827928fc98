"""Inference helpers every family shares: reading frames and sources, pre-processing, the predictions of a split
and their ACT frame-/video-mAP evaluation (tubelet and frame families).

The family-specific inference lives in :mod:`stad.engine.families` (``tubelet``: windows with feature reuse and
offline tubes; ``frame``: frame by frame with online tubes; ``keyframe``: actors at keyframes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from stad.data.datasets import normalize_clip
from stad.data.frames import act_frame_path, read_rgb
from stad.errors import StadError
from stad.structures import FrameDetections, Tube, TubeAnnotations, Tubelets


@dataclass
class SplitPredictions:
    """Everything a model predicted on a set of videos.

    Attributes:
        videos: the videos, in order.
        tubelets: video -> all its windows' tubelets (``N`` rows, ``boxes`` ``(N, K, 4)``).
        tubes: video -> linked tubes.
        frame_detections: per-frame detections of all videos (ACT rule from the tubelets).
    """

    videos: list[str]
    tubelets: dict[str, Tubelets]
    tubes: dict[str, list[Tube]] = field(default_factory=dict)
    frame_detections: FrameDetections | None = None


def preprocess_frames(frames: np.ndarray, cfg: Any) -> torch.Tensor:
    """``(T, H0, W0, 3)`` uint8 RGB -> ``(T, 3, H, W)`` float, resized like the test transform and normalised.

    ``cfg`` is an inference config with ``input_size`` ``(H, W)``, ``mean`` and ``std`` (a family's).
    """
    out_h, out_w = cfg.input_size
    resized = np.stack(
        [frame if frame.shape[:2] == (out_h, out_w) else cv2.resize(frame, (out_w, out_h), interpolation=cv2.INTER_LINEAR) for frame in frames]
    )  # [T, H, W, 3]
    return normalize_clip(resized, mean=cfg.mean, std=cfg.std)


def read_act_frames(frames_root: str | Path, video: str, nframes: int, *, stream: str = "rgb") -> Iterator[np.ndarray]:
    """Frames ``1 .. nframes`` of ``video`` in the ACT layout under ``frames_root`` (``.jpg``, else ``.png``)."""
    for frame in range(1, nframes + 1):
        path = act_frame_path(frames_root, video, frame, stream)
        if not path.is_file() and path.with_suffix(".png").is_file():
            path = path.with_suffix(".png")
        yield read_rgb(path)


def evaluate_predictions(
    ann: TubeAnnotations,
    preds: SplitPredictions,
    *,
    split: int,
    frame_iou: float = 0.5,
    video_ious: Sequence[Any] = (0.2, 0.5, 0.75, "0.5:0.95"),
    occluded_below: float | None = 0.5,
) -> dict[str, Any]:
    """Frame-mAP and video-mAP (ACT protocol) of ``preds`` on the test videos of ``split``.

    When ``preds`` covers other videos than exactly those (e.g. training videos, to check a fit), the
    evaluated set is ``preds.videos`` instead: the metrics then count every frame of those videos.

    Returns a flat dict of metrics: ``frame_mAP``, ``video_mAP@<thr>`` (fractions in [0, 1]) plus the
    result objects under ``"_frame"`` and ``"_video"``. When the ground truth has visibility (and
    ``occluded_below`` is not None) also ``frame_mAP/vis<lo>-<hi>`` per visibility band and
    ``video_mAP_occluded@<thr>`` on tubes with visibility below ``occluded_below`` on some frame
    (:func:`stad.eval.diagnostics.occlusion_metrics`; the object under ``"_occlusion"``). Always ``actor_AP``, the
    class-agnostic frame-AP, and with visibility ``actor_AP/vis<lo>-<hi>`` (:func:`stad.eval.diagnostics.actor_metrics`).
    """
    from dataclasses import replace

    from stad.eval.frame_map import frame_map
    from stad.eval.video_map import video_map

    if sorted(preds.videos) != sorted(ann.split_videos(split, "test")):
        ann, split = replace(ann, train_videos=[[]], test_videos=[list(preds.videos)]), 1

    fres = frame_map(ann, preds.frame_detections, split=split, iou=frame_iou)
    vres = video_map(ann, preds.tubes, split=split, thresholds=tuple(video_ious))
    metrics: dict[str, Any] = {"frame_mAP": float(fres.mAP)}
    for key, value in vres.mAP.items():
        metrics[f"video_mAP@{key}"] = float(value)
    metrics["_frame"] = fres
    metrics["_video"] = vres
    from stad.eval.diagnostics import actor_metrics

    metrics.update(
        actor_metrics(ann, preds.frame_detections, split=split, iou=frame_iou, by_visibility=occluded_below is not None)
    )
    if ann.visibility is not None and occluded_below is not None:
        from stad.eval.diagnostics import occlusion_metrics

        occ = occlusion_metrics(
            ann, preds.frame_detections, preds.tubes, split=split, frame_iou=frame_iou, video_ious=video_ious, occluded_below=occluded_below
        )
        metrics.update(occ.flat())
        metrics["_occlusion"] = occ
    return metrics


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_source(source: str | Path) -> tuple[np.ndarray, float]:
    """All frames of a video file or a folder of images (sorted by name), ``(T, H, W, 3)`` uint8 RGB, and the fps
    (the video's nominal rate; 25 for a folder)."""
    from stad.data.video import iter_frames, video_rate

    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise StadError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        frames = [read_rgb(p) for p in paths]
        fps = 25.0
    elif source.is_file():
        frames = list(iter_frames(source))
        if not frames:
            raise StadError(f"{source}: no frames could be decoded")
        fps = float(video_rate(source))
    else:
        raise FileNotFoundError(f"video or frame folder not found: {source}")
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        raise StadError(f"{source}: frames have different sizes {sorted(sizes)}")
    return np.stack(frames), fps
