"""The tubelet family (MOC, STADO): K-frame clips, inference with feature reuse, offline tubes, ACT metrics.

Training reads K-frame clips of the ACT layout (:class:`stad.data.datasets.TubeletClipDataset`, RGB or the flow
stream). Testing runs whole videos; flow for one video of ``T`` frames (tubelet length ``K``, one window per start
frame ``1 .. T-K+1``)::

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from stad.config import Config
from stad.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from stad.data.streams import StreamSpec, combine_streams, flow_images_from_frames, read_stream_frames
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
    train_dataloader,
    train_stream,
    video_thresholds,
    write_report,
)
from stad.engine.infer import SplitPredictions, evaluate_predictions, preprocess_frames, read_act_frames, read_source
from stad.errors import StadError
from stad.structures import TubeAnnotations, Tubelets


INFER_OPTIONS = ("window_batch", "frame_chunk", "reuse_features", "flip", "channels_last", "max_videos")


def inference_config(cfg: Config) -> TubeletInferenceConfig:
    """Inference settings from ``cfg`` (input size from ``data``, batching and flip from ``eval.options``)."""
    opts = cfg.eval.options
    check_options(opts, (*INFER_OPTIONS, *LinkConfig.__dataclass_fields__), "eval.options")
    return TubeletInferenceConfig(
        input_size=tuple(cfg.data.input_size),
        window_batch=int(opts.get("window_batch", max(1, cfg.eval.batch_size))),
        frame_chunk=int(opts.get("frame_chunk", 16)),
        reuse_features=bool(opts.get("reuse_features", True)),
        flip=bool(opts.get("flip", False)),
        channels_last=bool(opts.get("channels_last", False)),
    )


def link_config(cfg: Config) -> LinkConfig:
    """Tube-building settings from ``eval.options`` (PROTOCOLS.md §A defaults; ``trim: true`` trims the tubes)."""
    opts = cfg.eval.options
    check_options(opts, (*INFER_OPTIONS, *LinkConfig.__dataclass_fields__), "eval.options")
    defaults = LinkConfig()
    if not isinstance(opts.get("trim", False), bool):  # bool("false") would be True
        raise StadError(f"eval.options.trim must be true or false, got {opts['trim']!r}")
    link = LinkConfig(**{name: type(getattr(defaults, name))(opts.get(name, getattr(defaults, name))) for name in defaults.__dataclass_fields__})
    from stad.tubes.trim import check_trim_params

    check_trim_params(link.trim_threshold, link.trim_penalty)  # before inference, not after it
    return link


def stream_spec(cfg: Config) -> StreamSpec:
    """The input stream of ``cfg`` (``data.options.stream`` rgb|flow|fused, ``flow_frames``): a
    :class:`stad.data.streams.StreamSpec`."""
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


def build_train_loader(cfg: Config, data: LoadedData, model: torch.nn.Module) -> DataLoader:
    """Training loader of K-frame tubelet clips, DDP-aware.

    With ``data.augment`` the clips get ACT/MOC's augmentation; ``data.options`` may set the keys of
    ``AUGMENT_OPTIONS`` (e.g. ``max_expand_ratio: 2``; STADO's occlusion augmentation: ``occlusion`` = rate,
    ``occlusion_size`` = [low, high] side fraction, ``occlusion_max`` = occluders per clip);
    ``data.options.window_stride`` subsamples start frames; ``negative_fraction`` adds windows no action tube
    touches (:func:`stad.engine.families.common.negative_fraction`). ``train_stream: true`` (synthetic data) renders
    the training clips on the fly (``stream_videos`` videos per epoch, ``stream_clips`` clips each, default 4;
    :mod:`stad.data.synth_stream`). A model with ``mask_target_stride`` (STADO) gets ``visible_mask`` targets
    (``data.options.occluder_masks: false`` ignores a data set's stored occluder masks). The flow of a flow-stream
    config is computed first when missing.
    """
    from stad.data.datasets import TubeletClipDataset, collate_tubelets
    from stad.data.transforms import build_train_transform

    mask_stride = getattr(model, "mask_target_stride", None)
    d = cfg.data
    augment_options = {k: d.options[k] for k in AUGMENT_OPTIONS if k in d.options}
    spec = stream_spec(cfg)
    augment_options.update(flow_augment_options(spec, augment_options))
    _check_occlusion_options(augment_options)
    transform = build_train_transform(tuple(d.input_size), **augment_options) if d.augment else None
    fraction = negative_fraction(d)
    stream = train_stream(d, clips_per_video=4)
    if stream is not None:
        from stad.data.synth_stream import TubeletStreamDataset

        if spec.stream != "rgb":
            raise StadError(f"data.options.train_stream renders RGB videos; data.options.stream is {spec.stream!r}")
        dataset = TubeletStreamDataset(
            stream.config, videos_per_epoch=stream.videos_per_epoch, clips_per_video=stream.clips_per_video, K=d.K,
            input_size=tuple(d.input_size), transform=transform, seed=cfg.train.seed, mask_stride=mask_stride,
            negative_fraction=fraction,
        )
        if mask_stride is not None:
            print(f"STADO mask targets (stride {mask_stride}): boxes minus the rendered occluders", flush=True)
        return train_dataloader(cfg, dataset, collate_tubelets, shuffle=False)
    ensure_flow(cfg, data)
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
        negative_fraction=fraction,
    )
    if mask_stride is not None:
        source = "boxes minus the stored occluder masks" if dataset.occluder_mask_dir else "the visible boxes (no occluder-masks folder)"
        pasted = " minus pasted occluders" if d.augment and augment_options.get("occlusion", 0) > 0 else ""
        print(f"STADO mask targets (stride {mask_stride}): {source}{pasted}", flush=True)
    return train_dataloader(cfg, dataset, collate_tubelets)


def resolve_model_config(cfg: Config, data: LoadedData) -> Config:
    """Fill ``model.num_classes``/``model.labels`` and MOC's ``K`` / ``in_chans`` from the data, checking they agree."""
    labels = list(data.annotations.labels)
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


def predict(
    model: torch.nn.Module, cfg: Config, data: LoadedData, *, device: torch.device | str, progress: bool = True,
    stream: StreamSpec | None = None,
) -> SplitPredictions:
    """Tubelets, tubes and frame detections of the ``eval.subset`` videos (``stream``: the model's input stream,
    default ``data.options.stream`` of ``cfg``)."""
    spec = stream or stream_spec(cfg)
    infer_cfg = replace(inference_config(cfg), flip_invert_channels=spec.flip_invert_channels)
    return predict_videos(
        model, data.annotations, data.frames_root, eval_videos(cfg, data.annotations), device=device, cfg=infer_cfg,
        link=link_config(cfg), progress=progress, stream=spec,
    )


def evaluate(cfg: Config, data: LoadedData, preds: SplitPredictions) -> dict[str, Any]:
    """Frame-mAP, video-mAP and the occlusion metrics (:func:`stad.engine.infer.evaluate_predictions`)."""
    return evaluate_predictions(
        data.annotations, preds, split=cfg.data.split, frame_iou=cfg.eval.frame_iou, video_ious=video_thresholds(cfg)
    )


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


def test(
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
    from stad.engine.train import resolve_device

    dev = resolve_device(device or cfg.train.device)
    if flow_checkpoint is not None:
        model, ckpt_cfg, spec = load_two_stream(checkpoint, flow_checkpoint, device=dev, weights=fusion_weights)
    else:
        if fusion_weights is not None:
            raise StadError("a fusion weight needs a flow checkpoint (--flow-checkpoint)")
        model, ckpt_cfg = load_detector(checkpoint, device=dev)
        spec = stream_spec(ckpt_cfg)
    data = load_data(cfg.data, progress=progress)
    ensure_flow(replace(cfg, data=replace(cfg.data, options={**cfg.data.options, "stream": spec.stream})), data, progress=progress)
    check_checkpoint_labels(checkpoint, ckpt_cfg, data.annotations.labels)
    preds = predict(model, cfg, data, device=dev, progress=progress, stream=spec)
    metrics = evaluate(cfg, data, preds)
    out = output_dir(out_dir)
    write_predictions(preds, out)
    header = {
        "checkpoint": str(checkpoint),
        **({"flow_checkpoint": str(flow_checkpoint), "fusion_weights": vars(model.weights)} if flow_checkpoint is not None else {}),
        "stream": spec.stream,
    }
    write_report(out, cfg, metrics, videos=len(preds.videos), header=header)
    return metrics


def write_predictions(preds: SplitPredictions, out: Path) -> None:
    """``detections.csv``, ``tubes.json`` and ``tubelets.npz`` of ``preds`` under ``out``."""
    from stad.eval.predictions import write_frame_detections, write_tubes
    from stad.tubes import save_tubelets

    write_frame_detections(preds.frame_detections, out / "detections.csv")
    write_tubes(preds.tubes, out / "tubes.json")
    save_tubelets(out / "tubelets.npz", preds.tubelets)


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
    """Tube building (PROTOCOLS.md §A defaults) and frame detections from tubelets.

    ``trim``, ``trim_threshold``, ``trim_penalty``: ROAD-style temporal trimming of the tubes, off as in
    ACT/MOC (:func:`stad.tubes.build_tubes`; defaults those of :mod:`stad.tubes.trim`, as the online linker's).
    """

    nms_threshold: float = 0.6
    top_k: int = 10
    link_iou: float = 0.5
    min_length: int = 15
    min_score: float = 0.005
    frame_nms: float = 0.6
    trim: bool = False
    trim_threshold: float = 0.1
    trim_penalty: float = 0.5


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
        trim=link.trim,
        trim_threshold=link.trim_threshold,
        trim_penalty=link.trim_penalty,
    )
    frame_dets = tubelets_to_frame_detections(tubelets, videos, nms_threshold=link.frame_nms)
    return SplitPredictions(videos=videos, tubelets=tubelets, tubes=tubes, frame_detections=frame_dets)


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


FAMILY = Family(
    name="tubelet",
    models=("moc", "stado"),
    load_data=lambda cfg, *, progress=True: load_data(cfg.data, progress=progress),
    resolve_model_config=resolve_model_config,
    build_train_loader=build_train_loader,
    predict=predict,
    evaluate=evaluate,
    test=test,
    format_report=format_report,
)
