"""Clip-consistent augmentations that move boxes (and their visibility) with the pixels.

The operations follow the SSD-style augmentation that ACT (Kalogeiton et al., "Action Tubelet
Detector for Spatio-Temporal Action Localization", ICCV 2017) and MOC (Li et al., "Actions as
Moving Points", ECCV 2020) apply to K-frame clips, in their order:

    photometric distortion  (brightness, contrast, saturation, hue; one draw for the whole clip)
        ↓
    expand                  (clip placed on a larger canvas filled with the mean pixel)
        ↓
    random crop             (ACT's batch samplers: scale, aspect ratio, min/max overlap constraint)
        ↓
    horizontal flip
        ↓
    resize                  (to the network input size, aspect ratio not kept)

Written from the published description and the Caffe SSD parameters those papers quote; no code was
copied. Every op draws its random values **once per clip** from an explicit
``np.random.Generator``, so all ``T`` frames and all boxes get the same geometry and colours.

Data (``T`` frames, ``N`` actors):

* ``clip``: ``(T, H, W, C)`` uint8; ``C == 3`` RGB for photometric ops, any ``C`` for the geometric
  ones (a stacked flow input has ``C = 3 * flow_frames``);
* ``boxes``: ``(N, T, 4)`` (one box per frame, a tubelet) or ``(N, 4)`` (one box for the whole clip,
  e.g. an AVA keyframe actor), float ``x1, y1, x2, y2`` pixels of the current ``clip``;
* ``visibility``: ``(N, T)`` or ``(N,)`` float in [0, 1], the visible fraction of each box; it moves
  with the boxes (kept or dropped with them) and is otherwise unchanged by these ops.

Geometry convention: coordinates are continuous positions on pixel edges (pixel column ``c`` spans
``[c, c + 1)``), the torchvision/OpenCV-resize convention. A box covering columns ``a..b`` has
``x1 = a, x2 = b + 1``; a flip maps ``x`` to ``W - x`` and a resize multiplies by the size ratio. For
ACT's inclusive "+1" boxes this differs by less than one pixel.

Box rule for crops (``RandomCrop``): every box is clipped to the crop. An actor is **dropped** when, on
*any* frame, its clipped area is below ``min_area_fraction`` of its area before the crop; it is then
dropped on all frames, with its visibility. ``ClipSample.keep`` records, for every actor given to the
first op, whether it is still present, so nothing is lost silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from stad.errors import StadError

# ImageNet mean RGB in pixel values, the fill of ``Expand`` (matches the datasets' normalization mean).
MEAN_PIXEL_RGB = (124.0, 116.0, 104.0)


@dataclass
class ClipSample:
    """A clip with its actor boxes, as the transforms pass it along.

    Attributes:
        clip: ``(T, H, W, C)`` uint8 frames.
        boxes: ``(N, T, 4)`` or ``(N, 4)`` float64 ``x1, y1, x2, y2`` pixels of ``clip``.
        visibility: ``(N, T)`` or ``(N,)`` float64 visible fraction, parallel to ``boxes``.
        keep: ``(N0,)`` bool over the actors of the *original* sample: True where the actor is still in
            ``boxes`` (in order), False where an op dropped it. ``keep.sum() == N``.
        affine: ``(4,)`` float64 ``[ax, bx, ay, by]`` mapping original pixels to ``clip`` pixels:
            ``x = ax * x_orig + bx``, ``y = ay * y_orig + by`` (``ax < 0`` after a flip). See
            ``boxes_to_original``.
    """

    clip: np.ndarray
    boxes: np.ndarray
    visibility: np.ndarray
    keep: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 1.0, 0.0]))

    @classmethod
    def create(cls, clip: np.ndarray, boxes: np.ndarray, visibility: np.ndarray | None = None) -> "ClipSample":
        """Validate and wrap a clip and its boxes (visibility defaults to ones)."""
        clip = np.asarray(clip)
        if clip.ndim != 4 or clip.dtype != np.uint8:
            raise StadError(f"clip must be a (T, H, W, C) uint8 array, got shape {clip.shape} dtype {clip.dtype}")
        boxes = np.asarray(boxes, dtype=np.float64)
        T = clip.shape[0]
        if boxes.ndim == 2 and boxes.shape[1:] == (4,):
            pass
        elif boxes.ndim == 3 and boxes.shape[1:] == (T, 4):
            pass
        elif boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        else:
            raise StadError(f"boxes must be (N, 4) or (N, T={T}, 4), got shape {boxes.shape}")
        if visibility is None:
            visibility = np.ones(boxes.shape[:-1], dtype=np.float64)
        visibility = np.asarray(visibility, dtype=np.float64)
        if visibility.shape != boxes.shape[:-1]:
            raise StadError(f"visibility must have shape {boxes.shape[:-1]} (boxes minus the last axis), got {visibility.shape}")
        return cls(clip=clip, boxes=boxes, visibility=visibility, keep=np.ones(len(boxes), dtype=bool))

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the clip."""
        return int(self.clip.shape[1]), int(self.clip.shape[2])


Transform = Callable[[ClipSample, np.random.Generator], ClipSample]


def boxes_to_original(boxes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map ``(..., 4)`` boxes from transformed pixels back to original pixels.

    Args:
        boxes: ``(..., 4)`` ``x1, y1, x2, y2`` in the transformed clip (e.g. the network input).
        affine: ``(4,)`` ``[ax, bx, ay, by]`` from ``ClipSample.affine`` (``x = ax * x_orig + bx``).

    Returns:
        ``(..., 4)`` float64 boxes ``x1 <= x2`` in original pixels (a flip swaps ``x1`` and ``x2`` back).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    ax, bx, ay, by = (float(v) for v in np.asarray(affine, dtype=np.float64).reshape(4))
    xs = (boxes[..., [0, 2]] - bx) / ax
    ys = (boxes[..., [1, 3]] - by) / ay
    out = np.empty_like(boxes)
    out[..., 0], out[..., 2] = xs.min(-1), xs.max(-1)
    out[..., 1], out[..., 3] = ys.min(-1), ys.max(-1)
    return out


class Compose:
    """Apply ``transforms`` in order with one generator.

    Args:
        transforms: callables ``(ClipSample, np.random.Generator) -> ClipSample``.
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class PhotometricDistort:
    """SSD/ACT colour distortion with one random draw for the whole clip; boxes unchanged.

    Each of brightness, contrast, saturation and hue is applied with probability ``p``; contrast goes
    first or last (after saturation and hue) with probability 1/2, as in SSD. Needs ``C == 3`` RGB.

    Args:
        p: probability of each of the four distortions (default 0.5).
        brightness_delta: add a value uniform in ``[-delta, delta]`` to all pixels (default 32).
        contrast_range: multiply pixel values by a factor in this range (default (0.5, 1.5)).
        saturation_range: multiply HSV saturation by a factor in this range (default (0.5, 1.5)).
        hue_delta: shift HSV hue by a value uniform in ``[-delta, delta]`` degrees (default 36, i.e.
            SSD's 18 in OpenCV's 0..180 uint8 hue unit); applied in 1/256-turn steps.

    Works on uint8 with look-up tables (values are clipped to 0..255 after brightness/contrast and
    after each HSV step).
    """

    def __init__(
        self,
        *,
        p: float = 0.5,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 36.0,
    ) -> None:
        self.p = p
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        clip = sample.clip
        if clip.shape[-1] != 3:
            raise StadError(f"PhotometricDistort needs RGB clips with 3 channels, got {clip.shape[-1]} (flow input?)")
        # Draw everything first, so the number of draws does not depend on the branch taken.
        use = rng.random(4) < self.p  # brightness, contrast, saturation, hue
        contrast_last = bool(rng.random() < 0.5)
        brightness = rng.uniform(-self.brightness_delta, self.brightness_delta)
        contrast = rng.uniform(*self.contrast_range)
        saturation = rng.uniform(*self.saturation_range)
        hue = rng.uniform(-self.hue_delta, self.hue_delta)
        if not use.any():
            return sample

        T, H, W, _ = clip.shape
        pixels = clip.reshape(T * H, W, 3)  # [T*H, W, 3], one image for cv2
        values = np.arange(256, dtype=np.float64)
        # Brightness and a first contrast are per-value maps: one uint8 look-up table.
        before = values + (brightness if use[0] else 0.0)
        if use[1] and not contrast_last:
            before = before * contrast
        pixels = cv2.LUT(pixels, _to_lut(before))
        if use[2] or use[3]:
            hsv = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV_FULL)  # hue in 0..255 for 0..360 degrees
            if use[3]:
                shift = int(round(hue * 256.0 / 360.0))
                hsv[..., 0] = cv2.LUT(hsv[..., 0], ((np.arange(256) + shift) % 256).astype(np.uint8))
            if use[2]:
                hsv[..., 1] = cv2.LUT(hsv[..., 1], _to_lut(values * saturation))
            pixels = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
        if use[1] and contrast_last:
            pixels = cv2.LUT(pixels, _to_lut(values * contrast))
        return replace(sample, clip=pixels.reshape(T, H, W, 3))

    def __repr__(self) -> str:
        return f"PhotometricDistort(p={self.p})"


def _to_lut(values: np.ndarray) -> np.ndarray:
    """``(256,)`` float values → a uint8 look-up table (rounded, clipped to 0..255)."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


class Expand:
    """Place the clip at a random position on a larger canvas filled with ``fill`` (SSD's zoom-out).

    With probability ``p`` the canvas is ``ratio`` times larger in both sides, ``ratio`` uniform in
    ``[1, max_ratio]``; the same offset is used for every frame and box.

    Args:
        p: probability of expanding (default 0.5).
        max_ratio: largest canvas/clip side ratio (default 4.0).
        fill: fill value: a scalar, ``C`` values, or 3 values repeated over stacked 3-channel images
            (``C = 3 * flow_frames``) (default the mean RGB pixel; use 128 for flow images).
    """

    def __init__(self, *, p: float = 0.5, max_ratio: float = 4.0, fill: float | Sequence[float] = MEAN_PIXEL_RGB) -> None:
        if max_ratio < 1.0:
            raise StadError(f"Expand max_ratio must be >= 1, got {max_ratio}")
        self.p = p
        self.max_ratio = max_ratio
        self.fill = fill

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        apply = rng.random() < self.p
        ratio = rng.uniform(1.0, self.max_ratio)
        u_top, u_left = rng.random(2)
        if not apply:
            return sample
        T, H, W, C = sample.clip.shape
        new_h, new_w = int(H * ratio), int(W * ratio)
        top, left = int(u_top * (new_h - H)), int(u_left * (new_w - W))
        fill = _channel_fill(self.fill, C)
        canvas = np.empty((T, new_h, new_w, C), dtype=np.uint8)
        canvas[:] = np.tile(fill, new_w).reshape(new_w, C)  # a contiguous row broadcasts far faster than (C,)
        canvas[:, top : top + H, left : left + W] = sample.clip
        boxes = sample.boxes + np.array([left, top, left, top], dtype=np.float64)
        affine = sample.affine + np.array([0.0, left, 0.0, top])
        return replace(sample, clip=canvas, boxes=boxes, affine=affine)

    def __repr__(self) -> str:
        return f"Expand(p={self.p}, max_ratio={self.max_ratio})"


def _channel_fill(fill: float | Sequence[float], channels: int) -> np.ndarray:
    values = np.rint(np.atleast_1d(np.asarray(fill, dtype=np.float64)))
    if len(values) == 3 and channels % 3 == 0:
        values = np.tile(values, channels // 3)
    if len(values) not in (1, channels):
        raise StadError(f"fill has {len(values)} values, expected 1, 3 or {channels} for {channels} channels")
    return np.broadcast_to(np.clip(values, 0, 255), (channels,)).astype(np.uint8)


@dataclass(frozen=True)
class CropSampler:
    """One ACT/SSD batch sampler: how to draw a crop and the overlap it must have with the actors.

    A crop has sides ``scale * sqrt(aspect)`` (width) and ``scale / sqrt(aspect)`` (height) as fractions
    of the clip, with ``scale`` uniform in ``[min_scale, max_scale]`` and ``aspect`` uniform in
    ``[min_aspect, max_aspect]`` (limited so that both sides stay <= 1). The overlap of a crop with an
    actor is the mean over frames of IoU(box, crop); the constraint holds when the best actor's overlap
    lies in ``[min_overlap, max_overlap]``. A sampler with both overlaps ``None`` is unconstrained and
    stands for "no crop" when its scales are 1 (ACT's first sampler).
    """

    min_scale: float = 1.0
    max_scale: float = 1.0
    min_aspect: float = 1.0
    max_aspect: float = 1.0
    min_overlap: float | None = None
    max_overlap: float | None = None
    max_trials: int = 1


def act_crop_samplers() -> list[CropSampler]:
    """ACT/MOC's samplers: no crop, min overlap 0.1/0.3/0.5/0.7/0.9, and max overlap 1.0 (50 trials each)."""
    free = dict(min_scale=0.3, max_scale=1.0, min_aspect=0.5, max_aspect=2.0, max_trials=50)
    samplers = [CropSampler()]
    samplers += [CropSampler(**free, min_overlap=o) for o in (0.1, 0.3, 0.5, 0.7, 0.9)]
    samplers.append(CropSampler(**free, max_overlap=1.0))
    return samplers


def _clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    out = boxes.copy()
    out[..., [0, 2]] = np.clip(out[..., [0, 2]], 0.0, width)
    out[..., [1, 3]] = np.clip(out[..., [1, 3]], 0.0, height)
    return out


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def crop_keep_fraction(boxes: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """Fraction of each actor's area left inside a crop, the worst over frames.

    Args:
        boxes: ``(N, T, 4)`` or ``(N, 4)`` ``x1, y1, x2, y2`` pixels.
        crop: ``(4,)`` crop rectangle ``x1, y1, x2, y2`` in the same pixels, or ``(M, 4)`` crops.

    Returns:
        ``(N,)`` (or ``(M, N)`` for ``M`` crops) float64 in [0, 1]; a zero-area box counts 1 when it lies
        inside the crop, else 0.
    """
    crops = np.asarray(crop, dtype=np.float64)
    if len(boxes) == 0:
        return np.zeros(crops.shape[:-1] + (0,), dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(len(boxes), -1, 4)[None]  # [1, N, T, 4]
    c = crops.reshape(-1, 1, 1, 4)  # [M, 1, 1, 4]
    inner = np.empty(np.broadcast_shapes(boxes.shape, c.shape))  # [M, N, T, 4]
    inner[..., 0::2] = np.clip(boxes[..., 0::2], c[..., 0:1], c[..., 2:3])
    inner[..., 1::2] = np.clip(boxes[..., 1::2], c[..., 1:2], c[..., 3:4])
    area = _area(boxes)  # [1, N, T]
    inside = np.all(inner == boxes, axis=-1)  # [M, N, T]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(area > 0, _area(inner) / area, inside.astype(np.float64))  # [M, N, T]
    fraction = fraction.min(axis=2, initial=1.0)  # [M, N]
    return fraction.reshape(crops.shape[:-1] + fraction.shape[1:])


def _crop_overlap(boxes: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """``(M, N)`` mean over frames of the continuous IoU between each actor's boxes and each of ``(M, 4)`` crops."""
    boxes = boxes.reshape(len(boxes), -1, 4)[None]  # [1, N, T, 4]
    c = crops.reshape(-1, 1, 1, 4)  # [M, 1, 1, 4]
    iw = np.clip(np.minimum(boxes[..., 2], c[..., 2]) - np.maximum(boxes[..., 0], c[..., 0]), 0, None)
    ih = np.clip(np.minimum(boxes[..., 3], c[..., 3]) - np.maximum(boxes[..., 1], c[..., 1]), 0, None)
    inter = iw * ih  # [M, N, T]
    union = _area(boxes) + _area(c) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.mean(axis=2)


class RandomCrop:
    """ACT-style random crop: each sampler proposes one valid crop, one proposal is picked at random.

    For every sampler, ``max_trials`` crops are drawn; the first that satisfies the sampler's overlap
    constraint *and* keeps at least one actor (see the module's box rule) is its proposal. One
    proposal is then chosen uniformly. Without actors, constrained samplers propose nothing (as in
    SSD), so only unconstrained samplers can crop.

    Args:
        samplers: the samplers (default ``act_crop_samplers()``).
        min_area_fraction: an actor whose clipped area is below this fraction of its area before the
            crop on any frame is dropped from all frames (default 0.25).
    """

    def __init__(self, *, samplers: Sequence[CropSampler] | None = None, min_area_fraction: float = 0.25) -> None:
        self.samplers = list(act_crop_samplers() if samplers is None else samplers)
        if not self.samplers:
            raise StadError("RandomCrop needs at least one sampler")
        if not 0.0 <= min_area_fraction <= 1.0:
            raise StadError(f"min_area_fraction must be in [0, 1], got {min_area_fraction}")
        self.min_area_fraction = min_area_fraction

    @staticmethod
    def _draw(sampler: CropSampler, H: int, W: int, rng: np.random.Generator) -> np.ndarray:
        """``(max_trials, 4)`` integer pixel crops ``x1, y1, x2, y2`` of at least one pixel inside the clip."""
        n = sampler.max_trials
        scale = rng.uniform(sampler.min_scale, sampler.max_scale, size=n)
        aspect = np.clip(rng.uniform(sampler.min_aspect, sampler.max_aspect, size=n), scale**2, 1.0 / scale**2)
        w_frac, h_frac = np.minimum(scale * np.sqrt(aspect), 1.0), np.minimum(scale / np.sqrt(aspect), 1.0)
        x_frac, y_frac = rng.uniform(0.0, 1.0 - w_frac), rng.uniform(0.0, 1.0 - h_frac)
        x1 = np.minimum(np.rint(x_frac * W), W - 1)
        y1 = np.minimum(np.rint(y_frac * H), H - 1)
        x2 = np.clip(np.rint((x_frac + w_frac) * W), x1 + 1, W)
        y2 = np.clip(np.rint((y_frac + h_frac) * H), y1 + 1, H)
        return np.stack([x1, y1, x2, y2], axis=1)

    def _valid(self, sampler: CropSampler, boxes: np.ndarray, crops: np.ndarray) -> np.ndarray:
        """``(M,)`` bool: which of ``(M, 4)`` crops satisfy ``sampler`` and keep at least one actor."""
        constrained = sampler.min_overlap is not None or sampler.max_overlap is not None
        if len(boxes) == 0:
            return np.full(len(crops), not constrained)
        kept = crop_keep_fraction(boxes, crops) >= self.min_area_fraction  # [M, N]
        if not constrained:
            return kept.any(axis=1)
        overlap = _crop_overlap(boxes, crops)  # [M, N]
        ok = np.ones_like(kept)
        if sampler.min_overlap is not None:
            ok &= overlap >= sampler.min_overlap
        if sampler.max_overlap is not None:
            ok &= overlap <= sampler.max_overlap
        return ok.any(axis=1) & kept.any(axis=1)

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        H, W = sample.size
        proposals = []
        for sampler in self.samplers:
            crops = self._draw(sampler, H, W, rng)  # [max_trials, 4]
            valid = self._valid(sampler, sample.boxes, crops)
            if valid.any():
                proposals.append(crops[int(np.argmax(valid))])  # the first valid trial
        if not proposals:
            return sample
        crop = proposals[int(rng.integers(len(proposals)))]
        return self.apply(sample, crop)

    def apply(self, sample: ClipSample, crop: np.ndarray) -> ClipSample:
        """Crop ``sample`` to the integer rectangle ``crop`` ``(4,)`` ``x1, y1, x2, y2`` and apply the box rule."""
        x1, y1, x2, y2 = (int(v) for v in crop)
        keep_local = crop_keep_fraction(sample.boxes, np.array([x1, y1, x2, y2], dtype=np.float64)) >= self.min_area_fraction
        boxes = sample.boxes[keep_local] - np.array([x1, y1, x1, y1], dtype=np.float64)
        boxes = _clip_boxes(boxes, x2 - x1, y2 - y1)
        keep = sample.keep.copy()
        keep[keep] = keep_local
        return replace(
            sample,
            clip=np.ascontiguousarray(sample.clip[:, y1:y2, x1:x2]),
            boxes=boxes,
            visibility=sample.visibility[keep_local],
            keep=keep,
            affine=sample.affine - np.array([0.0, x1, 0.0, y1]),
        )

    def __repr__(self) -> str:
        return f"RandomCrop({len(self.samplers)} samplers, min_area_fraction={self.min_area_fraction})"


class HorizontalFlip:
    """Mirror the clip left-right with probability ``p``; ``x`` becomes ``W - x``.

    Args:
        p: probability of flipping (default 0.5).
        invert_channels: channels whose values become ``255 - v`` when flipping, for the horizontal
            component of a flow image stored around 128 (default none: images are only mirrored, as
            MOC does for its flow input).
    """

    def __init__(self, *, p: float = 0.5, invert_channels: Sequence[int] = ()) -> None:
        self.p = p
        self.invert_channels = list(invert_channels)

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        if not rng.random() < self.p:
            return sample
        W = sample.clip.shape[2]
        if sample.clip.shape[-1] <= 4:  # OpenCV's flip is much faster for image-like channel counts
            clip = np.empty_like(sample.clip)
            for t, frame in enumerate(sample.clip):
                cv2.flip(frame, 1, dst=clip[t])
        else:
            clip = np.ascontiguousarray(sample.clip[:, :, ::-1])
        if self.invert_channels:
            clip[..., self.invert_channels] = 255 - clip[..., self.invert_channels]
        boxes = sample.boxes.copy()
        boxes[..., 0], boxes[..., 2] = W - sample.boxes[..., 2], W - sample.boxes[..., 0]
        ax, bx, ay, by = sample.affine
        return replace(sample, clip=clip, boxes=boxes, affine=np.array([-ax, W - bx, ay, by]))

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


class Resize:
    """Resize every frame to ``size = (H, W)`` (aspect ratio not kept, as ACT/MOC) and scale the boxes.

    Args:
        size: output ``(height, width)``.
        interpolation: OpenCV interpolation flag (default ``cv2.INTER_LINEAR``).
    """

    def __init__(self, size: tuple[int, int], *, interpolation: int = cv2.INTER_LINEAR) -> None:
        self.size = _check_size(size)
        self.interpolation = interpolation

    def __call__(self, sample: ClipSample, rng: np.random.Generator | None = None) -> ClipSample:
        out_h, out_w = self.size
        T, H, W, C = sample.clip.shape
        if (H, W) == (out_h, out_w):
            return sample
        clip = np.empty((T, out_h, out_w, C), dtype=np.uint8)
        for t, frame in enumerate(sample.clip):  # cv2 resizes one (H, W, C) image at a time
            clip[t] = cv2.resize(frame, (out_w, out_h), interpolation=self.interpolation).reshape(out_h, out_w, C)
        sx, sy = out_w / W, out_h / H
        boxes = sample.boxes * np.array([sx, sy, sx, sy])
        affine = sample.affine * np.array([sx, sx, sy, sy])
        return replace(sample, clip=clip, boxes=boxes, affine=affine)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise StadError(f"size must be (height, width) with positive ints, got {size}")
    return size  # type: ignore[return-value]


def build_train_transform(
    size: tuple[int, int],
    *,
    photometric: bool = True,
    expand: bool = True,
    max_expand_ratio: float = 4.0,
    fill: float | Sequence[float] = MEAN_PIXEL_RGB,
    crop: bool = True,
    min_area_fraction: float = 0.25,
    flip: bool = True,
    flip_invert_channels: Sequence[int] = (),
) -> Compose:
    """ACT/MOC training augmentation: photometric → expand → crop → flip → resize to ``size``.

    Args:
        size: network input ``(H, W)``.
        photometric: add ``PhotometricDistort`` (RGB only; turn off for flow input).
        expand: add ``Expand(max_ratio=max_expand_ratio, fill=fill)``.
        crop: add ``RandomCrop(min_area_fraction=min_area_fraction)`` with ACT's samplers.
        flip: add ``HorizontalFlip(invert_channels=flip_invert_channels)``.
    """
    ops: list[Transform] = []
    if photometric:
        ops.append(PhotometricDistort())
    if expand:
        ops.append(Expand(max_ratio=max_expand_ratio, fill=fill))
    if crop:
        ops.append(RandomCrop(min_area_fraction=min_area_fraction))
    if flip:
        ops.append(HorizontalFlip(invert_channels=flip_invert_channels))
    ops.append(Resize(size))
    return Compose(ops)


def build_test_transform(size: tuple[int, int]) -> Compose:
    """Test-time transform: resize to ``size = (H, W)`` only (deterministic)."""
    return Compose([Resize(size)])
