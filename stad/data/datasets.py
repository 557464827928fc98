"""Torch Datasets for the three detector families, and collate functions that pad the actors.

* ``TubeletClipDataset``: K-frame clips with their actors' tubelets (ACT, MOC: RGB or stacked flow);
* ``FrameDataset``: one frame plus an earlier frame, for online frame-level detectors;
* keyframe clips (AVA-style, STEP, FBIL) live in :mod:`stad.data.keyframes` (``KeyframeDataset``,
  ``KeyframeClipDataset``, ``collate_keyframes``).

Naming: ``K`` frames of a tubelet clip, ``T`` frames of a keyframe clip, ``N`` actors, ``C`` classes,
``B`` items of a batch. Boxes are ``x1, y1, x2, y2`` float pixels of the **network input** (after the
transform); ``affine`` / ``scale`` map them back to the video's original pixels (see
``stad.data.transforms.boxes_to_original``).

Images are normalized as ``(pixel / 255 - mean) / std`` per channel with the ImageNet RGB statistics
``IMAGENET_MEAN`` / ``IMAGENET_STD`` unless other values are given (the ones timm backbones are
pretrained with); stacked flow inputs repeat the 3 values over their ``3 * flow_frames`` channels.

Augmentation randomness: item ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])``, reproducible
whatever the number of workers. The epoch comes with the key: the training loaders sample with
``stad.data.sampling.EpochSampler``, whose ``(epoch, index)`` keys reach persistent worker copies too; a plain
index uses the epoch of ``set_epoch`` (default 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stad.data.frames import act_frame_path, ava_frame_path, read_rgb
from stad.data.occluder_masks import OCCLUDER_MASK_DIR, occluder_mask_path, read_occluder_masks
from stad.data.sampling import split_key
from stad.data.transforms import ClipSample, Transform, build_test_transform, visible_mask_targets
from stad.errors import StadError
from stad.structures import TubeAnnotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_clip(clip: np.ndarray, *, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """``(T, H, W, C)`` uint8 → ``(T, C, H, W)`` float32 ``(x / 255 - mean) / std``.

    ``mean``/``std`` have ``C`` values, or 3 values repeated over stacked 3-channel images.
    """
    channels = clip.shape[-1]
    mean_t = torch.as_tensor(_per_channel(mean, channels, "mean"), dtype=torch.float32).view(1, channels, 1, 1)
    std_t = torch.as_tensor(_per_channel(std, channels, "std"), dtype=torch.float32).view(1, channels, 1, 1)
    tensor = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float().div_(255.0)  # [T, C, H, W]
    return (tensor - mean_t) / std_t


def _per_channel(values: Sequence[float], channels: int, name: str) -> list[float]:
    values = [float(v) for v in values]
    if len(values) == 3 and channels % 3 == 0:
        return values * (channels // 3)
    if len(values) != channels:
        raise StadError(f"{name} has {len(values)} values, expected 3 or {channels} for {channels} channels")
    return values


def _check_input_size(input_size: Sequence[int]) -> tuple[int, int]:
    size = tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1:
        raise StadError(f"input_size must be (height, width) with positive ints, got {tuple(input_size)}")
    return size  # type: ignore[return-value]


def _positive(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise StadError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class _AugmentedDataset(Dataset):
    """Shared plumbing: seeded per-item generators, the transform and its output checks."""

    def __init__(self, *, input_size: Sequence[int] | None, transform: Transform | None, seed: int) -> None:
        # input_size None: the transform decides each clip's size (FBIL scales the short side, keeping the aspect)
        self.input_size = None if input_size is None else _check_input_size(input_size)
        if transform is None and self.input_size is None:
            raise StadError("a data set without input_size needs a transform that sets the clip size")
        self.transform = build_test_transform(self.input_size) if transform is None else transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (items use ``default_rng([seed, epoch, index])``)."""
        self.epoch = int(epoch)

    def _key(self, key: Any) -> tuple[int, int]:
        """``(epoch, index)`` of a key: an :class:`~stad.data.sampling.EpochSampler` pair or a plain index."""
        return split_key(key, self.epoch)

    def _apply(self, sample: ClipSample, index: int, epoch: int | None = None) -> ClipSample:
        epoch = self.epoch if epoch is None else epoch
        out = self.transform(sample, np.random.default_rng([self.seed, epoch, index]))
        if self.input_size is not None and out.size != self.input_size:
            raise StadError(
                f"the transform returned {out.size[0]}x{out.size[1]} images, expected input_size "
                f"{self.input_size[0]}x{self.input_size[1]}; end it with Resize(input_size)"
            )
        return out

    @staticmethod
    def _meta(out: ClipSample, orig_size: tuple[int, int]) -> dict[str, Any]:
        ax, _, ay, _ = out.affine
        return {
            "orig_size": torch.tensor(orig_size, dtype=torch.int64),
            "affine": torch.from_numpy(out.affine.astype(np.float64)),
            "scale": torch.tensor([abs(ay), abs(ax)], dtype=torch.float64),
            "num_dropped": int((~out.keep).sum()),
        }


def _read_checked(path: Path, expected: tuple[int, int] | None) -> np.ndarray:
    image = read_rgb(path)
    if expected is not None and image.shape[:2] != tuple(expected):
        raise StadError(
            f"{path}: image is {image.shape[0]}x{image.shape[1]} (HxW) but the annotations say "
            f"{expected[0]}x{expected[1]}; boxes would be misplaced"
        )
    return image


# ---------------------------------------------------------------------------------------------
# Tubelet clips (ACT / MOC)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TubeletWindow:
    """One item of ``TubeletClipDataset``: ``K`` frames of ``video`` from ``start`` (from 1)."""

    video: str
    start: int


def _window_frames(start: int, K: int, nframes: int) -> np.ndarray:
    """``(K,)`` frame numbers ``start .. start + K - 1`` clamped to the last frame."""
    return np.minimum(np.arange(start, start + K), nframes)


def _tube_frames(tube: np.ndarray) -> tuple[int, int]:
    return int(tube[0, 0]), int(tube[-1, 0])


def _validate_tubes(ann: TubeAnnotations, videos: Sequence[str]) -> None:
    """Fail early on tubes that break the ``(L, 5)`` consecutive-frames convention."""
    for video in videos:
        if video not in ann.nframes or video not in ann.resolution:
            raise StadError(f"video {video!r} of the split has no nframes/resolution in the annotations")
        for label, tubes in ann.gttubes.get(video, {}).items():
            if not 0 <= int(label) < len(ann.labels):
                raise StadError(f"{video}: label {label} is outside 0..{len(ann.labels) - 1}")
            for i, tube in enumerate(tubes):
                tube = np.asarray(tube)
                if tube.ndim != 2 or tube.shape[1] != 5 or len(tube) == 0:
                    raise StadError(f"{video}: label {label} tube {i}: expected an (L, 5) array, got shape {tube.shape}")
                first, last = _tube_frames(tube)
                if not np.array_equal(tube[:, 0].astype(np.int64), np.arange(first, last + 1)):
                    raise StadError(f"{video}: label {label} tube {i}: frames are not consecutive from {first}")
                if ann.visibility is not None:
                    vis = ann.visibility.get(video, {}).get(label, [])
                    if i >= len(vis) or len(vis[i]) != len(tube):
                        raise StadError(f"{video}: label {label} tube {i}: visibility missing or not of length {len(tube)}")


def window_kinds(spans: Sequence[tuple[int, int]], start: int, K: int) -> str | None:  # noqa: N803
    """What the ``K``-frame window from ``start`` is for training, given the ``(first, last)`` frames of a video's
    tubes: ``"positive"`` (ACT/MOC's rule: every tube covers all ``K`` frames or none, at least one covers them),
    ``"negative"`` (no tube touches the window: idle actors and background only) or None (a tube is partly inside:
    its tubelet would be incomplete, so the window is not used)."""
    end = start + K - 1
    inside = [first <= start and end <= last for first, last in spans]
    outside = [last < start or end < first for first, last in spans]
    if not all(i or o for i, o in zip(inside, outside)):
        return None
    return "positive" if any(inside) else "negative"


def negative_count(positives: int, candidates: int, fraction: float) -> int:
    """How many negatives make ``fraction`` of ``positives + negatives`` (at most ``candidates``)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise StadError(f"negative_fraction must be a number in [0, 1), got {fraction!r}")
    return min(candidates, int(round(fraction / (1.0 - fraction) * positives)))


def with_negatives(positives: list, negatives: list, fraction: float, seed: int) -> list:
    """``positives`` plus :func:`negative_count` of ``negatives`` drawn without replacement with ``seed`` (kept in
    their order)."""
    count = negative_count(len(positives), len(negatives), fraction)
    if not count:
        return list(positives)
    chosen = np.sort(np.random.default_rng([int(seed), 7]).choice(len(negatives), size=count, replace=False))
    return [*positives, *(negatives[i] for i in chosen.tolist())]


def tubelet_windows(
    ann: TubeAnnotations, videos: Sequence[str], *, K: int, stride: int, subset: str,  # noqa: N803
    negative_fraction: float = 0.0, seed: int = 0,
) -> list[TubeletWindow]:
    """The ``(video, start)`` windows of ``TubeletClipDataset``.

    Candidate starts are ``1, 1 + stride, …``. ``subset="train"`` keeps ACT/MOC's training windows:
    starts ``<= T - K + 1`` where every tube of the video either covers all ``K`` frames of the window or
    none of them, and at least one tube covers it (so no actor is only partly annotated; :func:`window_kinds`).
    With ``negative_fraction`` ``f > 0`` windows that no tube touches (idle actors, background) are added until
    they are a fraction ``f`` of the training windows (as many as exist when there are fewer), drawn with
    ``seed``; they teach the detector not to fire on idle actors. ``f = 0`` (default) is MOC's published rule.
    ``subset="test"`` keeps every candidate start ``<= max(1, T - K + 1)`` plus the last such start,
    so every frame is covered (frames past the end are clamped to the last frame).
    """
    windows: list[TubeletWindow] = []
    negatives: list[TubeletWindow] = []
    for video in videos:
        nframes = int(ann.nframes[video])
        spans = [_tube_frames(np.asarray(t)) for tubes in ann.gttubes.get(video, {}).values() for t in tubes]
        if subset == "train":
            for start in range(1, nframes - K + 2, stride):
                kind = window_kinds(spans, start, K)
                if kind == "positive":
                    windows.append(TubeletWindow(video, start))
                elif kind == "negative":
                    negatives.append(TubeletWindow(video, start))
        elif subset == "test":
            last_start = max(1, nframes - K + 1)
            starts = list(range(1, last_start + 1, stride))
            if starts[-1] != last_start:
                starts.append(last_start)
            windows.extend(TubeletWindow(video, start) for start in starts)
        else:
            raise StadError(f"subset must be 'train' or 'test', got {subset!r}")
    return with_negatives(windows, negatives, negative_fraction, seed) if subset == "train" else windows


class TubeletItems(_AugmentedDataset):
    """What every K-frame tubelet data set shares: turning a clip and its actors into a training item
    (augmentation, normalisation, STADO's mask target). Subclasses set ``K``, ``mean``, ``std`` and ``mask_stride``."""

    K: int  # noqa: N815 - the paper's name
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mask_stride: int | None

    def make_item(
        self, video: str, start: int, frames: np.ndarray, clip: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
        visibility: np.ndarray, occluders: np.ndarray | None, *, epoch: int, index: int,
    ) -> dict[str, Any]:
        """The item of ``clip`` ``(K, H0, W0, C)`` uint8 with actors ``boxes`` ``(N, K, 4)`` original pixels,
        ``labels`` ``(N,)``, ``visibility`` ``(N, K)`` and optional ``occluders`` ``(K, H0, W0)`` bool pixels,
        augmented with the draw of ``(seed, epoch, index)`` (see :class:`TubeletClipDataset` for the keys)."""
        orig_size = (int(clip.shape[1]), int(clip.shape[2]))
        sample = ClipSample.create(clip, boxes, visibility)
        if occluders is not None:
            sample = replace(sample, occluder_mask=occluders)
        out = self._apply(sample, index, epoch)
        item = {
            "clip": normalize_clip(out.clip, mean=self.mean, std=self.std),
            "boxes": torch.from_numpy(out.boxes.astype(np.float32)).reshape(-1, self.K, 4),
            "labels": torch.from_numpy(labels[out.keep]),
            "visibility": torch.from_numpy(out.visibility.astype(np.float32)).reshape(-1, self.K),
            "video": video,
            "start": int(start),
            "frames": torch.from_numpy(np.asarray(frames).astype(np.int64)),
            **self._meta(out, orig_size),
        }
        if self.mask_stride is not None:
            target = visible_mask_targets(
                out.boxes.reshape(-1, self.K, 4),
                out.visibility.reshape(-1, self.K),
                out.occluder_mask,
                size=out.size,
                stride=self.mask_stride,
            )  # [K, h, w]
            item["visible_mask"] = torch.from_numpy(target)
        return item


class TubeletClipDataset(TubeletItems):
    """K-frame clips with the tubelets of the actors that span all K frames (ACT/MOC training and testing).

    An actor is part of an item when its tube covers every frame of the window; see
    ``tubelet_windows`` for which windows exist (in training windows no tube is partly inside).

    Args:
        ann: the ground truth (boxes in original pixels, frames from 1).
        frames_root: folder with ``rgb-images/<video>/%05d.jpg`` (and ``brox-images`` for flow).
        split: 1-based split of ``ann`` (default 1).
        subset: ``"train"`` or ``"test"`` (default ``"train"``).
        K: frames per clip (default 7).
        stride: spacing of the window starts (default 1).
        input_size: network input ``(H, W)`` (default (288, 288), MOC's).
        transform: clip transform ending at ``input_size`` (default ``build_test_transform``).
        stream: ``"rgb"`` or ``"flow"`` (default ``"rgb"``).
        flow_frames: for flow, consecutive flow images stacked per input frame (default 5, MOC's).
        mean, std: normalization (default ImageNet's; repeated over stacked flow channels).
        seed: augmentation seed (default 0).
        mask_stride: when set, items get STADO's ``visible_mask`` target on this stride's grid (default None).
        negative_fraction: with ``subset="train"``, the fraction of windows no tube touches (default 0, MOC's rule;
            see :func:`tubelet_windows`).
        occluder_masks: read ``<frames_root>/occluder-masks/<video>.npz`` (``stad.data.occluder_masks``, written by
            the synthetic renderer) when that folder exists, so the target is box minus occluder pixels; without
            the folder (real data) the target is the plain visible boxes (plus augmentation occluders). Default True.

    Each item is a dict:
        ``clip`` ``(K, C, H, W)`` float32 (``C = 3``, or ``3 * flow_frames`` for flow);
        ``boxes`` ``(N, K, 4)`` float32 input pixels; ``labels`` ``(N,)`` int64 0-based;
        ``visibility`` ``(N, K)`` float32 (ones when the data set has none); ``video`` str;
        ``start`` int; ``frames`` ``(K,)`` int64 frame numbers; ``orig_size`` ``(2,)`` int64 (H0, W0);
        ``affine`` ``(4,)`` float64 ``[ax, bx, ay, by]`` (``x_input = ax * x_orig + bx``);
        ``scale`` ``(2,)`` float64 ``(sy, sx)`` resize factors (the whole mapping at test time);
        ``num_dropped`` int, actors the transform dropped;
        with ``mask_stride``: ``visible_mask`` ``(K, ceil(H / mask_stride), ceil(W / mask_stride))`` float32 in [0, 1],
        the area fraction of each cell inside a box of an actor with ``visibility > 0`` on that frame and not
        covered by an occluder (``stad.data.transforms.visible_mask_targets``).
    """

    def __init__(
        self,
        ann: TubeAnnotations,
        frames_root: str | Path,
        *,
        # which windows
        split: int = 1,
        subset: str = "train",
        K: int = 7,  # noqa: N803 - the paper's name
        stride: int = 1,
        # what each item looks like
        input_size: Sequence[int] = (288, 288),
        transform: Transform | None = None,
        stream: str = "rgb",
        flow_frames: int = 5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
        # STADO mask targets
        mask_stride: int | None = None,
        occluder_masks: bool = True,
        negative_fraction: float = 0.0,
    ) -> None:
        super().__init__(input_size=input_size, transform=transform, seed=seed)
        self.mask_stride = None if mask_stride is None else _positive("mask_stride", mask_stride)
        self.occluder_mask_dir = Path(frames_root) / OCCLUDER_MASK_DIR if occluder_masks else None
        if self.occluder_mask_dir is not None and not self.occluder_mask_dir.is_dir():
            self.occluder_mask_dir = None
        self._occluder_cache: dict[str, np.ndarray] = {}
        if stream not in ("rgb", "flow"):
            raise StadError(f"stream must be 'rgb' or 'flow', got {stream!r}")
        self.ann = ann
        self.frames_root = Path(frames_root)
        self.K = _positive("K", K)
        self.stride = _positive("stride", stride)
        self.stream = stream
        self.flow_frames = _positive("flow_frames", flow_frames)
        self.mean, self.std = tuple(mean), tuple(std)
        videos = ann.split_videos(split, subset)
        _validate_tubes(ann, videos)
        self.windows = tubelet_windows(ann, videos, K=self.K, stride=self.stride, subset=subset,
                                       negative_fraction=negative_fraction, seed=seed)
        if not self.windows:
            raise StadError(
                f"no {subset} windows of K={self.K} frames in split {split} of {ann.name or 'the annotations'} "
                f"({len(videos)} videos)"
            )

    def __len__(self) -> int:
        return len(self.windows)

    def actors(self, video: str, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tubelets of the actors whose tube covers all ``frames`` ``(K,)``.

        Returns:
            boxes ``(N, K, 4)`` float64 original pixels, labels ``(N,)`` int64, visibility ``(N, K)`` float64.
        """
        boxes, labels, visibility = [], [], []
        for label in sorted(self.ann.gttubes.get(video, {})):
            for i, tube in enumerate(self.ann.gttubes[video][label]):
                tube = np.asarray(tube, dtype=np.float64)
                first, last = _tube_frames(tube)
                if frames.min() < first or frames.max() > last:
                    continue
                rows = frames - first
                boxes.append(tube[rows, 1:5])
                labels.append(int(label))
                if self.ann.visibility is None:
                    visibility.append(np.ones(len(frames)))
                else:
                    visibility.append(np.asarray(self.ann.visibility[video][label][i], dtype=np.float64)[rows])
        K = len(frames)
        return (
            np.asarray(boxes, dtype=np.float64).reshape(-1, K, 4),
            np.asarray(labels, dtype=np.int64),
            np.asarray(visibility, dtype=np.float64).reshape(-1, K),
        )

    def read_clip(self, video: str, frames: np.ndarray) -> np.ndarray:
        """``(K, H0, W0, C)`` uint8 images of ``frames``; flow stacks ``flow_frames`` images per frame."""
        nframes = int(self.ann.nframes[video])
        expected = tuple(int(v) for v in self.ann.resolution[video])
        cache: dict[int, np.ndarray] = {}

        def image(frame: int) -> np.ndarray:
            if frame not in cache:
                img = _read_checked(act_frame_path(self.frames_root, video, frame, self.stream), expected)
                # brox-images hold (x, y, magnitude) in OpenCV's channel order (stad.data.flow.read_flow_image)
                cache[frame] = np.ascontiguousarray(img[..., ::-1]) if self.stream == "flow" else img
            return cache[frame]

        if self.stream == "rgb":
            return np.stack([image(int(f)) for f in frames])
        # MOC's flow input: images f .. f + flow_frames - 1 stacked on channels, clamped at the video end.
        return np.stack(
            [np.concatenate([image(min(int(f) + j, nframes)) for j in range(self.flow_frames)], axis=-1) for f in frames]
        )

    def __getitem__(self, key: Any) -> dict[str, Any]:
        epoch, index = self._key(key)
        window = self.windows[index]
        frames = _window_frames(window.start, self.K, int(self.ann.nframes[window.video]))
        boxes, labels, visibility = self.actors(window.video, frames)
        clip = self.read_clip(window.video, frames)
        occluders = None
        if self.mask_stride is not None and self.occluder_mask_dir is not None:
            occluders = self.occluder_masks(window.video, frames)  # [K, H0, W0]
        return self.make_item(window.video, window.start, frames, clip, boxes, labels, visibility, occluders,
                              epoch=epoch, index=index)

    def occluder_masks(self, video: str, frames: np.ndarray) -> np.ndarray:
        """``(K, H0, W0)`` bool occluder pixels of ``frames`` ``(K,)`` (from 1) of ``video``, read from
        ``<frames_root>/occluder-masks`` (kept bit-packed in memory); every video needs its file once the folder exists."""
        if video not in self._occluder_cache:
            assert self.occluder_mask_dir is not None
            height, width = (int(v) for v in self.ann.resolution[video])
            masks = read_occluder_masks(
                occluder_mask_path(self.frames_root, video), expected=(int(self.ann.nframes[video]), height, width)
            )
            self._occluder_cache[video] = np.packbits(masks, axis=-1)  # [T, H, ceil(W / 8)]
        packed = self._occluder_cache[video][np.asarray(frames, dtype=np.int64) - 1]  # [K, H, ceil(W / 8)]
        return np.unpackbits(packed, axis=-1, count=int(self.ann.resolution[video][1])).astype(bool)


# ---------------------------------------------------------------------------------------------
# Single frames with a previous frame (online detectors)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameItem:
    """One item of ``FrameDataset``: ``frame`` (from 1) of ``video``."""

    video: str
    frame: int


class FrameItems(_AugmentedDataset):
    """What every single-frame data set shares: a frame, its earlier frame and its actors into an item. Subclasses
    set ``mean`` and ``std``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def make_item(
        self, video: str, frame: int, previous_frame: int, current: np.ndarray, previous: np.ndarray,
        boxes: np.ndarray, labels: np.ndarray, visibility: np.ndarray, *, epoch: int, index: int,
    ) -> dict[str, Any]:
        """The item of images ``current`` / ``previous`` ``(H0, W0, 3)`` uint8 with the actors of ``current``
        (``boxes`` ``(N, 4)`` original pixels, ``labels`` ``(N,)``, ``visibility`` ``(N,)``), one augmentation draw
        ``(seed, epoch, index)`` for both images (see :class:`FrameDataset` for the keys)."""
        out = self._apply(ClipSample.create(np.stack([previous, current]), boxes, visibility), index, epoch)
        clip = normalize_clip(out.clip, mean=self.mean, std=self.std)  # [2, 3, H, W]: previous, current
        return {
            "image": clip[1],
            "previous": clip[0],
            "boxes": torch.from_numpy(out.boxes.astype(np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(labels[out.keep]),
            "visibility": torch.from_numpy(out.visibility.astype(np.float32)).reshape(-1),
            "video": video,
            "frame": int(frame),
            "previous_frame": int(previous_frame),
            **self._meta(out, (int(current.shape[0]), int(current.shape[1]))),
        }


class FrameDataset(FrameItems):
    """Single frames with an earlier frame ``t - gap`` (clamped at 1), for online detectors.

    ``subset="train"`` yields the frames where at least one actor is annotated (plus, with ``negative_fraction``
    ``f > 0``, frames without any, until they are a fraction ``f`` of the items, drawn with ``seed``);
    ``subset="test"`` every frame of every video. The same transform (one random draw) is applied to both frames.

    Args:
        ann, frames_root: as ``TubeletClipDataset`` (RGB images).
        split, subset: which videos (default split 1, ``"train"``).
        input_size: network input ``(H, W)``.
        gap: distance to the previous frame (default 1).
        transform: clip transform ending at ``input_size`` (default ``build_test_transform``).
        mean, std, seed: as ``TubeletClipDataset``.
        negative_fraction: with ``subset="train"``, the fraction of frames without an annotated actor (default 0).

    Each item: ``image`` and ``previous`` ``(3, H, W)`` float32; ``boxes`` ``(N, 4)`` float32 input
    pixels of ``image``; ``labels`` ``(N,)`` int64; ``visibility`` ``(N,)`` float32; ``video``;
    ``frame``; ``previous_frame``; ``orig_size``, ``affine``, ``scale``, ``num_dropped`` as above.
    """

    def __init__(
        self,
        ann: TubeAnnotations,
        frames_root: str | Path,
        *,
        split: int = 1,
        subset: str = "train",
        input_size: Sequence[int] = (288, 288),
        gap: int = 1,
        transform: Transform | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
        negative_fraction: float = 0.0,
    ) -> None:
        super().__init__(input_size=input_size, transform=transform, seed=seed)
        self.ann = ann
        self.frames_root = Path(frames_root)
        self.gap = _positive("gap", gap)
        self.mean, self.std = tuple(mean), tuple(std)
        if subset not in ("train", "test"):
            raise StadError(f"subset must be 'train' or 'test', got {subset!r}")
        videos = ann.split_videos(split, subset)
        _validate_tubes(ann, videos)
        self.items: list[FrameItem] = []
        negatives: list[FrameItem] = []
        for video in videos:
            nframes = int(ann.nframes[video])
            if subset == "test":
                self.items.extend(FrameItem(video, f) for f in range(1, nframes + 1))
                continue
            covered: set[int] = set()
            for tubes in ann.gttubes.get(video, {}).values():
                for tube in tubes:
                    first, last = _tube_frames(np.asarray(tube))
                    covered.update(range(first, last + 1))
            self.items.extend(FrameItem(video, f) for f in sorted(covered))
            negatives.extend(FrameItem(video, f) for f in range(1, nframes + 1) if f not in covered)
        if subset == "train":
            self.items = with_negatives(self.items, negatives, negative_fraction, seed)
        if not self.items:
            raise StadError(f"no {subset} frames in split {split} of {ann.name or 'the annotations'} ({len(videos)} videos)")

    def __len__(self) -> int:
        return len(self.items)

    def actors(self, video: str, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes ``(N, 4)`` float64 original pixels, labels ``(N,)`` int64 and visibility ``(N,)`` on ``frame``."""
        boxes, labels, visibility = [], [], []
        for label in sorted(self.ann.gttubes.get(video, {})):
            for i, tube in enumerate(self.ann.gttubes[video][label]):
                tube = np.asarray(tube, dtype=np.float64)
                first, last = _tube_frames(tube)
                if not first <= frame <= last:
                    continue
                boxes.append(tube[frame - first, 1:5])
                labels.append(int(label))
                vis = 1.0 if self.ann.visibility is None else float(self.ann.visibility[video][label][i][frame - first])
                visibility.append(vis)
        return (
            np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(labels, dtype=np.int64),
            np.asarray(visibility, dtype=np.float64),
        )

    def __getitem__(self, key: Any) -> dict[str, Any]:
        epoch, index = self._key(key)
        item = self.items[index]
        previous_frame = max(1, item.frame - self.gap)
        expected = tuple(int(v) for v in self.ann.resolution[item.video])
        current = _read_checked(act_frame_path(self.frames_root, item.video, item.frame), expected)
        previous = current if previous_frame == item.frame else _read_checked(
            act_frame_path(self.frames_root, item.video, previous_frame), expected
        )
        boxes, labels, visibility = self.actors(item.video, item.frame)
        return self.make_item(item.video, item.frame, previous_frame, current, previous, boxes, labels, visibility,
                              epoch=epoch, index=index)


# ---------------------------------------------------------------------------------------------
# AVA keyframe clips
# ---------------------------------------------------------------------------------------------


def ava_center_frame(timestamp: int, *, fps: int = 30, timestamp_start: int = 0) -> int:
    """Frame index (from 1) of keyframe ``timestamp`` seconds in the AVA frame layout.

    ``(timestamp - timestamp_start) * fps + 1``: frame 1 is time ``timestamp_start``. Use 0 for frame
    folders extracted from the start of the video, 900 for folders cut at AVA's 15-minute window
    start (the mmaction2 layout).
    """
    return int(round((timestamp - timestamp_start) * fps)) + 1


def ava_clip_frames(center: int, *, num_frames: int, frame_stride: int, nframes: int) -> np.ndarray:
    """``(num_frames,)`` frame indices ``center + (i - num_frames // 2) * frame_stride``, clamped to ``1..nframes``."""
    offsets = (np.arange(num_frames) - num_frames // 2) * frame_stride
    return np.clip(center + offsets, 1, nframes).astype(np.int64)


def count_ava_frames(frames_root: str | Path, video: str) -> int:
    """Number of frames of ``video``: the highest index ``n`` of its ``img_%05d.jpg`` files.

    A frame missing below ``n`` is reported (FileNotFoundError with its path) when a clip needs it.
    """
    folder = ava_frame_path(frames_root, video, 1).parent
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    indices = [int(path.stem[4:]) for path in folder.glob("img_*.jpg") if path.stem[4:].isdigit()]
    if not indices:
        raise FileNotFoundError(f"no img_%05d.jpg frames in {folder}")
    return max(indices)


# ---------------------------------------------------------------------------------------------
# Collate: stack fixed-size fields, pad the per-actor ones
# ---------------------------------------------------------------------------------------------


def _collate(items: Sequence[dict[str, Any]], padded: dict[str, float]) -> dict[str, Any]:
    """Stack tensors, pad the ``padded`` per-actor fields to ``N_max`` with their value, list the rest.

    Adds ``mask`` ``(B, N_max)`` bool: True for real actors.
    """
    if not items:
        raise StadError("cannot collate an empty batch")
    counts = [len(item["labels"]) for item in items]
    n_max = max(counts)
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key in padded:
            shape = (len(items), n_max, *values[0].shape[1:])
            out = torch.full(shape, padded[key], dtype=values[0].dtype)
            for b, value in enumerate(values):
                out[b, : len(value)] = value
            batch[key] = out
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], (int, np.integer)):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        else:
            batch[key] = values
    batch["mask"] = torch.arange(n_max)[None, :] < torch.tensor(counts)[:, None]  # [B, N_max]
    return batch


def collate_tubelets(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch ``TubeletClipDataset`` items.

    Returns ``clip`` ``(B, K, C, H, W)``, ``boxes`` ``(B, N_max, K, 4)`` (0 padded), ``labels``
    ``(B, N_max)`` (-1 padded), ``visibility`` ``(B, N_max, K)`` (0 padded), ``mask`` ``(B, N_max)``
    bool, ``start`` / ``num_dropped`` ``(B,)``, ``frames`` ``(B, K)``, ``orig_size`` ``(B, 2)``,
    ``affine`` ``(B, 4)``, ``scale`` ``(B, 2)``, ``video`` a list of B names and, when the items have it,
    ``visible_mask`` ``(B, K, h, w)``.
    """
    return _collate(items, {"boxes": 0.0, "labels": -1, "visibility": 0.0})


def collate_frames(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch ``FrameDataset`` items: ``image``/``previous`` ``(B, 3, H, W)``, ``boxes`` ``(B, N_max, 4)``,
    ``labels`` ``(B, N_max)`` (-1 padded), ``visibility`` ``(B, N_max)``, ``mask`` ``(B, N_max)``, meta."""
    return _collate(items, {"boxes": 0.0, "labels": -1, "visibility": 0.0})

