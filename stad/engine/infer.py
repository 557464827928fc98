"""Run a trained tubelet detector over a data-set split, a video file or a frame folder.

Flow for one video of ``T`` frames (tubelet length ``K``, one window per start frame ``1 .. T-K+1``)::

    frames (H0, W0, 3) uint8 ──resize + normalise (as the test transform)──▶ (3, H, W)
        ──model.frame_features, in chunks, ONCE per frame──▶ rolling buffer of (C, h, w) features
        ──every window [s, s+K-1] whose frames are in the buffer──▶ (B, K, C, h, w)
        ──model.detect_from_features──▶ Tubelets (boxes in original pixels)
    all windows ──▶ stad.tubes.build_tubes_for_videos  ──▶ tubes        (video-mAP, tubes JSON)
                ──▶ stad.tubes.tubelets_to_frame_detections ──▶ frame detections (frame-mAP, CSV)

Reusing the per-frame features saves ``K - 1`` of every ``K`` backbone passes (the MOC paper's online
trick); ``reuse_features=False`` recomputes them per window, for comparison (see benchmarks/bench_moc_speed.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from stad.data.datasets import IMAGENET_MEAN, IMAGENET_STD, normalize_clip
from stad.data.frames import act_frame_path, read_rgb
from stad.data.streams import StreamSpec, combine_streams, flow_images_from_frames, read_stream_frames
from stad.errors import StadError
from stad.structures import FrameDetections, Tube, TubeAnnotations, Tubelets


@dataclass
class TubeletInferenceConfig:
    """How to run a tubelet detector over videos.

    Attributes:
        input_size: network input ``(height, width)``.
        window_batch: windows per ``detect_from_features`` call.
        frame_chunk: frames per backbone call.
        reuse_features: compute each frame's features once and reuse them in the ``K`` windows containing it.
        flip: flip test-time augmentation (average of the outputs on the frames and their mirror images).
        channels_last: feed the network NHWC tensors (convert the model with
            ``model.to(memory_format=torch.channels_last)`` too); see benchmarks/RESULTS.md for what it gives.
        mean, std: normalisation (as the training data set's).
        flip_invert_channels: input channels whose bytes become ``255 - p`` in the flipped copy (the x flow of
            a flow input, :attr:`stad.data.streams.StreamSpec.flip_invert_channels`), done on the normalised
            tensor as ``(1 - 2 * mean) / std - x``.
    """

    input_size: tuple[int, int] = (288, 288)
    window_batch: int = 8
    frame_chunk: int = 16
    reuse_features: bool = True
    flip: bool = False
    channels_last: bool = False
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    flip_invert_channels: Sequence[int] = ()


def flip_input(images: torch.Tensor, cfg: TubeletInferenceConfig) -> torch.Tensor:
    """Mirror normalised inputs ``(T, C, H, W)`` left-right; the ``cfg.flip_invert_channels`` get ``255 - p``.

    With ``x = (p / 255 - m) / s`` the byte ``255 - p`` is ``(1 - 2 m) / s - x`` (exact, linear).
    """
    flipped = images.flip(-1)
    channels = list(cfg.flip_invert_channels)
    if channels:
        C = images.shape[1]  # noqa: N806
        mean = torch.as_tensor(_per_channel(cfg.mean, C), dtype=images.dtype, device=images.device)[channels]
        std = torch.as_tensor(_per_channel(cfg.std, C), dtype=images.dtype, device=images.device)[channels]
        flipped[:, channels] = ((1 - 2 * mean) / std).view(1, -1, 1, 1) - flipped[:, channels]
    return flipped


def _per_channel(values: Sequence[float], channels: int) -> list[float]:
    values = [float(v) for v in values]
    return values * (channels // 3) if len(values) == 3 and channels % 3 == 0 else values


@dataclass
class LinkConfig:
    """Tube building (PROTOCOLS.md §A defaults) and frame detections from tubelets."""

    nms_threshold: float = 0.6
    top_k: int = 10
    link_iou: float = 0.5
    min_length: int = 15
    min_score: float = 0.005
    frame_nms: float = 0.6


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


def preprocess_frames(frames: np.ndarray, cfg: TubeletInferenceConfig) -> torch.Tensor:
    """``(T, H0, W0, 3)`` uint8 RGB -> ``(T, 3, H, W)`` float, resized like the test transform and normalised."""
    out_h, out_w = cfg.input_size
    resized = np.stack(
        [frame if frame.shape[:2] == (out_h, out_w) else cv2.resize(frame, (out_w, out_h), interpolation=cv2.INTER_LINEAR) for frame in frames]
    )  # [T, H, W, 3]
    return normalize_clip(resized, mean=cfg.mean, std=cfg.std)


def _concat_tubelets(parts: list[Tubelets], K: int) -> Tubelets:  # noqa: N803
    if not parts:
        return Tubelets(start=np.zeros(0, np.int64), label=np.zeros(0, np.int64), score=np.zeros(0), boxes=np.zeros((0, K, 4)))
    return Tubelets(
        start=np.concatenate([p.start for p in parts]),
        label=np.concatenate([p.label for p in parts]),
        score=np.concatenate([p.score for p in parts]),
        boxes=np.concatenate([p.boxes for p in parts]),
    )


def _chunks(frames: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    chunk: list[np.ndarray] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


class FrameMaskCollector:
    """Per-frame attention masks of a mask-predicting detector (STADO), gathered during streaming inference.

    :func:`detect_video_tubelets` passes every window's masks ``(B, K, h, w)`` (``model.masks_from_features``) to
    :meth:`add`; a frame's mask is the mean over the windows containing it (the same for all windows unless the
    attention mixes the mask over time).
    """

    def __init__(self) -> None:
        self._sum: dict[int, np.ndarray] = {}
        self._count: dict[int, int] = {}

    def add(self, starts: Sequence[int], masks: torch.Tensor) -> None:
        """Add the masks ``(B, K, h, w)`` of the windows starting at ``starts`` (frames from 1)."""
        values = masks.detach().float().cpu().numpy()
        if values.ndim != 4 or len(values) != len(starts):
            raise ValueError(f"expected masks of shape ({len(starts)}, K, h, w), got {values.shape}")
        for start, per_window in zip(starts, values):
            for offset, mask in enumerate(per_window):
                frame = int(start) + offset
                self._sum[frame] = self._sum[frame] + mask if frame in self._sum else mask.copy()
                self._count[frame] = self._count.get(frame, 0) + 1

    def masks(self, nframes: int) -> np.ndarray:
        """``(nframes, h, w)`` float32 mean masks of frames ``1 .. nframes`` (NaN for a frame no window covered)."""
        if not self._sum:
            raise StadError("no attention masks were collected (no window was run)")
        shape = next(iter(self._sum.values())).shape
        out = np.full((nframes, *shape), np.nan, dtype=np.float32)
        for frame, total in self._sum.items():
            if 1 <= frame <= nframes:
                out[frame - 1] = total / self._count[frame]
        return out


@torch.inference_mode()
def detect_video_tubelets(
    model: torch.nn.Module,
    frames: Iterable[np.ndarray],
    *,
    orig_size: tuple[int, int],
    device: torch.device | str,
    cfg: TubeletInferenceConfig | None = None,
    masks: FrameMaskCollector | None = None,
) -> Tubelets:
    """Tubelets of every window of one video.

    Args:
        model: a tubelet detector with ``K``, ``frame_features(frames (T, 3, H, W)) -> (T, C, h, w)`` and
            ``detect_from_features(features (B, K, C, h, w), metas, flip_features=None) -> list[Tubelets]``
            (e.g. :class:`stad.models.moc.MOCDetector`), in eval mode.
        frames: the video's frames in order, ``(H0, W0, 3)`` uint8 RGB each (an iterator is streamed).
        orig_size: ``(H0, W0)``; boxes come back in these pixels.
        device: where the model runs.
        cfg: input size, batching, feature reuse, flip.
        masks: optional collector of the predicted attention masks of every window (the model needs
            ``masks_from_features(features (B, K, C, h, w)) -> (B, K, h, w)``, e.g. STADO).

    Returns:
        :class:`Tubelets` of all windows (``start`` = the window's first frame, from 1).
    """
    from stad.models.moc import ClipMeta

    if masks is not None and not hasattr(model, "masks_from_features"):
        raise StadError(f"{type(model).__name__} predicts no attention masks; showing masks needs a STADO model (model.name: stado)")

    cfg = cfg or TubeletInferenceConfig()
    K = int(model.K)  # noqa: N806
    device = torch.device(device)
    buffer: list[torch.Tensor] = []  # per-frame features (C, h, w) of frames first_in_buffer ...
    flip_buffer: list[torch.Tensor] = []
    first_in_buffer = 1  # frame number (from 1) of buffer[0]
    next_start = 1
    parts: list[Tubelets] = []
    pending_starts: list[int] = []

    def flush(starts: list[int]) -> None:
        if not starts:
            return
        offsets = [s - first_in_buffer for s in starts]
        metas = [ClipMeta(start=s, orig_size=orig_size) for s in starts]
        if cfg.reuse_features:
            feats = torch.stack([torch.stack(buffer[o : o + K]) for o in offsets])  # [B, K, C, h, w]
            flipped = torch.stack([torch.stack(flip_buffer[o : o + K]) for o in offsets]) if cfg.flip else None
        else:  # recompute every window's K frames (the baseline the feature reuse is measured against)
            clips = torch.stack([torch.stack(raw_buffer[o : o + K]) for o in offsets])  # [B, K, 3, H, W]
            feats = model.frame_features(clips.flatten(0, 1))
            feats = feats.view(len(starts), K, *feats.shape[1:])
            flipped = None
            if cfg.flip:
                flipped = model.frame_features(flip_input(clips.flatten(0, 1), cfg))
                flipped = flipped.view(len(starts), K, *flipped.shape[1:])
        parts.extend(model.detect_from_features(feats, metas, flip_features=flipped))
        if masks is not None:
            masks.add(starts, model.masks_from_features(feats))

    raw_buffer: list[torch.Tensor] = []
    seen = 0
    for chunk in _chunks(frames, cfg.frame_chunk):
        if chunk.shape[1:3] != tuple(orig_size):
            raise StadError(f"frame {seen + 1} has size {chunk.shape[1:3]}, expected (H, W) = {tuple(orig_size)}")
        images = preprocess_frames(chunk, cfg).to(device)  # [t, 3, H, W]
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        seen += len(chunk)
        if cfg.reuse_features:
            buffer.extend(model.frame_features(images).unbind(0))
            if cfg.flip:
                flip_buffer.extend(model.frame_features(flip_input(images, cfg)).unbind(0))
        else:
            raw_buffer.extend(images.unbind(0))
        # every window whose last frame has arrived
        while next_start + K - 1 <= seen:
            pending_starts.append(next_start)
            next_start += 1
            if len(pending_starts) == cfg.window_batch:
                flush(pending_starts)
                pending_starts = []
        # drop frames no remaining window needs (pending windows still need theirs)
        keep_from = pending_starts[0] if pending_starts else next_start
        drop = keep_from - first_in_buffer
        if drop > 0:
            del buffer[:drop], flip_buffer[:drop], raw_buffer[:drop]
            first_in_buffer = keep_from
    flush(pending_starts)
    if seen < K:
        raise StadError(f"the video has {seen} frames, fewer than the tubelet length K={K}")
    return _concat_tubelets(parts, K)


def read_act_frames(frames_root: str | Path, video: str, nframes: int, *, stream: str = "rgb") -> Iterator[np.ndarray]:
    """Frames ``1 .. nframes`` of ``video`` in the ACT layout under ``frames_root`` (``.jpg``, else ``.png``)."""
    for frame in range(1, nframes + 1):
        path = act_frame_path(frames_root, video, frame, stream)
        if not path.is_file() and path.with_suffix(".png").is_file():
            path = path.with_suffix(".png")
        yield read_rgb(path)


def predict_videos(
    model: torch.nn.Module,
    ann: TubeAnnotations,
    frames_root: str | Path,
    videos: Sequence[str],
    *,
    device: torch.device | str,
    cfg: TubeletInferenceConfig | None = None,
    link: LinkConfig | None = None,
    progress: bool = True,
    stream: StreamSpec | None = None,
) -> SplitPredictions:
    """Tubelets, tubes and frame detections of ``videos`` (ACT layout frames under ``frames_root``).

    ``stream`` (default rgb) selects the per-frame input: RGB frames, stacked ``brox-images`` flow, or both
    concatenated for a two-stream model (:func:`stad.data.streams.read_stream_frames`).

    Under ``torchrun`` each process takes every ``world_size``-th video and the results are gathered,
    so every process returns the predictions of all videos.
    """
    from stad.engine.distributed import all_gather_objects, get_rank, get_world_size

    link = link or LinkConfig()
    rank, world = get_rank(), get_world_size()
    mine = list(videos)[rank::world]
    model.eval()
    tubelets: dict[str, Tubelets] = {}
    for video in tqdm(mine, desc="detect", unit="video", disable=not progress or rank != 0, leave=False):
        height, width = ann.resolution[video]
        if stream is None or stream.stream == "rgb":
            frames = read_act_frames(frames_root, video, int(ann.nframes[video]))
        else:
            frames = read_stream_frames(frames_root, video, int(ann.nframes[video]), stream)
        tubelets[video] = detect_video_tubelets(model, frames, orig_size=(int(height), int(width)), device=device, cfg=cfg)
    if world > 1:
        merged: dict[str, Tubelets] = {}
        for part in all_gather_objects(tubelets):
            merged.update(part)
        tubelets = merged
    tubelets = {v: tubelets[v] for v in videos}
    return link_predictions(tubelets, num_classes=len(ann.labels), nframes=ann.nframes, link=link)


def link_predictions(
    tubelets: dict[str, Tubelets], *, num_classes: int, nframes: dict[str, int], link: LinkConfig | None = None
) -> SplitPredictions:
    """Tubes (MOC/ACT builder) and frame detections (ACT rule) from the tubelets of whole videos."""
    from stad.tubes import build_tubes_for_videos, tubelets_to_frame_detections

    link = link or LinkConfig()
    videos = list(tubelets)
    tubes = build_tubes_for_videos(
        tubelets,
        num_classes=num_classes,
        nframes={v: int(nframes[v]) for v in videos},
        nms_threshold=link.nms_threshold,
        top_k=link.top_k,
        link_iou=link.link_iou,
        min_length=link.min_length,
        min_score=link.min_score,
    )
    frame_dets = tubelets_to_frame_detections(tubelets, videos, nms_threshold=link.frame_nms)
    return SplitPredictions(videos=videos, tubelets=tubelets, tubes=tubes, frame_detections=frame_dets)


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


@dataclass
class DetectResult:
    """Output of :func:`detect_source`: the predictions of the one video and the files written."""

    predictions: SplitPredictions
    video: Path
    tubes_json: Path
    detections_csv: Path
    masks: Path | None = None  # <name>_masks.npy with show_masks


def detect_source(
    model: torch.nn.Module,
    source: str | Path,
    out_dir: str | Path,
    *,
    labels: Sequence[str],
    device: torch.device | str,
    cfg: TubeletInferenceConfig | None = None,
    link: LinkConfig | None = None,
    min_tube_score: float = 0.1,
    stream: StreamSpec | None = None,
    flow_method: str = "dis",
    show_masks: bool = False,
) -> DetectResult:
    """Detect action tubes in a video file or frame folder; write an annotated MP4, tubes JSON and frame CSV.

    A flow (or fused) ``stream`` gets its flow computed on the fly from the frames with ``flow_method``
    (dis or farneback), byte for byte what ``stad flow`` stores (:func:`stad.data.streams.flow_images_from_frames`).

    Tubes are drawn coloured by identity with ``"<class> <score>"``; tubes scoring below ``min_tube_score``
    are written to the JSON but not drawn. ``show_masks`` blends the predicted attention masks of a STADO model
    under the tubes (:func:`stad.viz.draw.overlay_heatmaps`) and writes them to ``<name>_masks.npy``
    ``(T, h, w)`` float32 on the network's stride grid; other models raise a StadError.
    """
    from stad.eval.predictions import write_frame_detections, write_tubes
    from stad.viz.draw import TubeOverlay, draw_tubes
    from stad.viz.video import write_video

    frames, fps = read_source(source)
    name = Path(source).stem if Path(source).is_file() else Path(source).name
    T, H, W = frames.shape[:3]  # noqa: N806
    model.eval()
    inputs: Iterable[np.ndarray] = iter(frames)
    if stream is not None and stream.needs_flow:
        inputs = combine_streams(stream, iter(frames), flow_images_from_frames(iter(frames), method=flow_method))
    mask_collector = FrameMaskCollector() if show_masks else None
    tubelets = detect_video_tubelets(model, inputs, orig_size=(H, W), device=device, cfg=cfg, masks=mask_collector)
    preds = link_predictions({name: tubelets}, num_classes=len(labels), nframes={name: T}, link=link)
    tubes = sorted(preds.tubes[name], key=lambda t: -t.score)
    overlays = [
        TubeOverlay(identity=i, boxes=t.boxes[:, :5], text=f"{labels[t.label]} {t.score:.2f}")
        for i, t in enumerate(tubes)
        if t.score >= min_tube_score
    ]
    scale = max(1, int(round(480 / max(H, W))))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    background = frames
    masks_path = None
    if mask_collector is not None:
        from stad.viz.draw import overlay_heatmaps

        frame_masks = mask_collector.masks(T)  # [T, h, w]
        masks_path = out / f"{name}_masks.npy"
        np.save(masks_path, frame_masks)
        background = overlay_heatmaps(frames, frame_masks)
    video_path = write_video(out / f"{name}_tubes.mp4", draw_tubes(background, overlays, scale=scale), fps=int(round(fps)) or 25)
    tubes_path, csv_path = out / f"{name}_tubes.json", out / f"{name}_detections.csv"
    write_tubes(preds.tubes, tubes_path)
    write_frame_detections(preds.frame_detections, csv_path)
    return DetectResult(predictions=preds, video=video_path, tubes_json=tubes_path, detections_csv=csv_path, masks=masks_path)
