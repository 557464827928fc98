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
    [paste occluders]       (STADO: moving textured occluders; lowers visibility, records occluder_mask)
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
  with the boxes (kept or dropped with them) and only ``PasteOccluders`` changes it (box-area based);
* ``occluder_mask``: ``(T, H, W)`` bool or ``None``, the pixels pasted occluders cover; every geometric
  op (expand, crop, flip, resize) moves it with the pixels, so ``PasteOccluders`` may run at any point.

Geometry convention: coordinates are continuous positions on pixel edges (pixel column ``c`` spans
``[c, c + 1)``), the torchvision/OpenCV-resize convention. A box covering columns ``a..b`` has
``x1 = a, x2 = b + 1``; a flip maps ``x`` to ``W - x`` and a resize multiplies by the size ratio. For
ACT's inclusive "+1" boxes this differs by less than one pixel.

STEP's keyframe augmentation (``build_step_train_transform``, STEP.md §2) is a second pipeline at the end
of this module: SSD photometric distortion on float BGR values, ``StepRandomSampleCrop`` (keyframe IoU
test and centre rule), ``StepHorizontalFlip`` (zero boxes stay zero), ``RandomErase`` inside each
keyframe box, resize. It works on float32 pixel clips (``ToFloat32``), which ``Resize`` and
``HorizontalFlip`` also accept (they keep the dtype). ``boxes_from_original`` moves boxes that did not
go through a transform (neighbour boxes, proposals) by the recorded ``affine``.

FBIL / ACAR-Net's keyframe pipeline (``build_fbil_train_transform``, FBIL.md §2) is much smaller:
``ScaleShortSide(256)`` (shorter side to 256, aspect kept, PIL bilinear), ``HorizontalFlip(p=0.5)`` at
training, nothing else; the size of its output depends on the video. ``jitter_boxes`` is the neck's
training jitter of normalised boxes (with FBIL's clamping quirk).

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
        occluder_mask: ``(T, H, W)`` bool, True on the pixels that ``PasteOccluders`` drew over, or
            ``None`` when no occluder was pasted. Every geometric op moves it with the pixels.
    """

    clip: np.ndarray
    boxes: np.ndarray
    visibility: np.ndarray
    keep: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 1.0, 0.0]))
    occluder_mask: np.ndarray | None = None  # (T, H, W) bool: pixels drawn over by PasteOccluders, or None

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


def boxes_from_original(boxes: np.ndarray, affine: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Map ``(..., 4)`` boxes from original pixels into a transformed clip and clip them to its frame.

    The inverse direction of ``boxes_to_original``: this moves boxes that did not go through the
    transform (e.g. an AVA keyframe's neighbour boxes or person proposals) exactly as the transform
    moved the pixels, since every geometric op (expand, crop, flip, resize) is an axis-wise affine map
    recorded in ``ClipSample.affine``; clipping once at the end equals clipping at every crop.

    Args:
        boxes: ``(..., 4)`` ``x1, y1, x2, y2`` original pixels.
        affine: ``(4,)`` ``[ax, bx, ay, by]`` from ``ClipSample.affine`` (``x = ax * x_orig + bx``).
        size: ``(H, W)`` of the transformed clip.

    Returns:
        ``(..., 4)`` float64 boxes with ``x1 <= x2``, ``y1 <= y2`` (a flip swaps them back), inside
        ``[0, W] x [0, H]``; a box outside the frame becomes a zero-width or zero-height box on its border.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    ax, bx, ay, by = (float(v) for v in np.asarray(affine, dtype=np.float64).reshape(4))
    H, W = _check_size(size)
    xs = np.clip(ax * boxes[..., [0, 2]] + bx, 0.0, W)  # [..., 2]
    ys = np.clip(ay * boxes[..., [1, 3]] + by, 0.0, H)
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
        mask = sample.occluder_mask
        if mask is not None:
            mask = np.zeros((T, new_h, new_w), dtype=bool)
            mask[:, top : top + H, left : left + W] = sample.occluder_mask
        return replace(sample, clip=canvas, boxes=boxes, affine=affine, occluder_mask=mask)

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
            occluder_mask=None if sample.occluder_mask is None else np.ascontiguousarray(sample.occluder_mask[:, y1:y2, x1:x2]),
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
        mask = None if sample.occluder_mask is None else np.ascontiguousarray(sample.occluder_mask[:, :, ::-1])
        return replace(sample, clip=clip, boxes=boxes, affine=np.array([-ax, W - bx, ay, by]), occluder_mask=mask)

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


class Resize:
    """Resize every frame to ``size = (H, W)`` (aspect ratio not kept, as ACT/MOC) and scale the boxes.

    The clip keeps its dtype (uint8, or float32 in STEP's float pipeline, ``build_step_train_transform``).

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
        clip = np.empty((T, out_h, out_w, C), dtype=sample.clip.dtype)  # uint8, or float32 in STEP's pipeline
        for t, frame in enumerate(sample.clip):  # cv2 resizes one (H, W, C) image at a time
            clip[t] = cv2.resize(frame, (out_w, out_h), interpolation=self.interpolation).reshape(out_h, out_w, C)
        sx, sy = out_w / W, out_h / H
        boxes = sample.boxes * np.array([sx, sy, sx, sy])
        affine = sample.affine * np.array([sx, sx, sy, sy])
        mask = None
        if sample.occluder_mask is not None:  # nearest neighbour keeps it boolean
            mask = np.empty((T, out_h, out_w), dtype=bool)
            for t, mask_per_frame in enumerate(sample.occluder_mask.view(np.uint8)):
                mask[t] = cv2.resize(mask_per_frame, (out_w, out_h), interpolation=cv2.INTER_NEAREST).astype(bool)
        return replace(sample, clip=clip, boxes=boxes, affine=affine, occluder_mask=mask)

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
    occlusion: float = 0.0,
    occlusion_size: tuple[float, float] = (0.15, 0.5),
    occlusion_max: int = 2,
) -> Compose:
    """ACT/MOC training augmentation: photometric → expand → crop → flip → [occlusion] → resize to ``size``.

    Args:
        size: network input ``(H, W)``.
        photometric: add ``PhotometricDistort`` (RGB only; turn off for flow input).
        expand: add ``Expand(max_ratio=max_expand_ratio, fill=fill)``.
        crop: add ``RandomCrop(min_area_fraction=min_area_fraction)`` with ACT's samplers.
        flip: add ``HorizontalFlip(invert_channels=flip_invert_channels)``.
        occlusion: when > 0, add ``PasteOccluders(p=occlusion)`` just before the resize (default 0:
            no occluders, the transform is exactly ACT/MOC's).
        occlusion_size: ``PasteOccluders(size_range=...)``: occluder side as a fraction of the frame side.
        occlusion_max: ``PasteOccluders(max_occluders=...)``: most occluders per clip.
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
    if occlusion > 0:
        ops.append(PasteOccluders(p=occlusion, size_range=tuple(occlusion_size), max_occluders=int(occlusion_max)))
    ops.append(Resize(size))
    return Compose(ops)


def build_test_transform(size: tuple[int, int]) -> Compose:
    """Test-time transform: resize to ``size = (H, W)`` only (deterministic)."""
    return Compose([Resize(size)])


# --------------------------------------------------------------------------------------------------
# STEP's training augmentation (Yang et al., "STEP: Spatio-Temporal Progressive Learning for Video
# Action Detection", CVPR 2019), written from /work/shared/methods/STEP.md §2 "Training augmentation"
# (no code copied). STEP's order, one random draw per clip for every frame:
#
#     photometric distortion   (SSD-style, float BGR values, unclipped between steps)
#         ↓
#     scale to [-1, 1]         (clip to 0..255, then x * 2 / 255 - 1)
#         ↓
#     RandomSampleCrop         (SSD modes, 50 tries, keyframe-box IoU test, keyframe-centre rule)
#         ↓
#     horizontal flip          (non-zero boxes only)
#         ↓
#     RandomErase              (noise U(-1, 1) inside each keyframe box)
#         ↓
#     resize                   (to the square input, bilinear, aspect not kept)
#
# Here the clip stays in float32 **pixel units** (0..255, RGB order) through the whole pipeline and
# the dataset normalises at the end ((x - 127.5) / 127.5 = x * 2 / 255 - 1, ``stad.data.keyframes``):
# ``ClampPixels`` stands for the clip of step 2, crop/flip move pixels without changing values, the
# resize is linear, and ``RandomErase`` draws its noise as U(mean - std, mean + std) pixels, which
# the normalisation maps to U(-1, 1). The result equals STEP's up to float rounding.
# --------------------------------------------------------------------------------------------------

_CHANNEL_PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


class ToFloat32:
    """Convert the clip to float32 pixel values (0..255), the working type of STEP's ops; boxes unchanged."""

    def __call__(self, sample: ClipSample, rng: np.random.Generator | None = None) -> ClipSample:
        if sample.clip.dtype == np.float32:
            return sample
        return replace(sample, clip=sample.clip.astype(np.float32))

    def __repr__(self) -> str:
        return "ToFloat32()"


class ClampPixels:
    """Clip float pixel values to ``[low, high]`` (STEP clips to 0..255 before scaling to [-1, 1])."""

    def __init__(self, low: float = 0.0, high: float = 255.0) -> None:
        self.low, self.high = float(low), float(high)

    def __call__(self, sample: ClipSample, rng: np.random.Generator | None = None) -> ClipSample:
        return replace(sample, clip=np.clip(sample.clip, self.low, self.high).astype(sample.clip.dtype, copy=False))

    def __repr__(self) -> str:
        return f"ClampPixels({self.low}, {self.high})"


class StepPhotometricDistort:
    """SSD-style photometric distortion on float BGR values, as STEP applies it (STEP.md §2 item 1).

    One draw per clip; every frame gets the same values. On the BGR-ordered float pixels (0..255,
    not clipped between steps):

    1. brightness: with probability ``p`` add ``U(-brightness_delta, brightness_delta)`` (default 32);
    2. with probability 1/2 the "contrast first" variant, else "contrast last":
       ``[contrast] -> BGR to HSV -> [saturation] -> [hue] -> HSV to BGR`` or
       ``BGR to HSV -> [saturation] -> [hue] -> HSV to BGR -> [contrast]``; each bracketed op runs with
       probability ``p``: contrast multiplies by ``U(contrast_range)`` (default 0.5..1.5), saturation
       multiplies S by ``U(saturation_range)`` (default 0.5..1.5), hue adds ``U(-hue_delta, hue_delta)``
       degrees (default 18; OpenCV's float HSV: H in degrees, wrapped into 0..360);
    3. with probability ``p`` permute the BGR channels by one of the 6 permutations (uniform).

    The HSV round trip always runs (as in SSD's composition). Input: a ``C == 3`` RGB clip of any
    dtype; output: float32 RGB, possibly outside 0..255 (follow with ``ClampPixels``).

    Args:
        p: probability of each random op (default 0.5).
        brightness_delta, contrast_range, saturation_range, hue_delta: see above.
    """

    def __init__(
        self,
        *,
        p: float = 0.5,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18.0,
    ) -> None:
        self.p = p
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        clip = sample.clip
        if clip.shape[-1] != 3:
            raise StadError(f"StepPhotometricDistort needs RGB clips with 3 channels, got {clip.shape[-1]}")
        # A fixed number of draws, whatever branch is taken.
        use = rng.random(5) < self.p  # brightness, contrast, saturation, hue, channel permutation
        contrast_last = bool(rng.random() < 0.5)
        brightness = rng.uniform(-self.brightness_delta, self.brightness_delta)
        contrast = rng.uniform(*self.contrast_range)
        saturation = rng.uniform(*self.saturation_range)
        hue = rng.uniform(-self.hue_delta, self.hue_delta)
        permutation = _CHANNEL_PERMUTATIONS[int(rng.integers(len(_CHANNEL_PERMUTATIONS)))]

        T, H, W, _ = clip.shape
        bgr = np.ascontiguousarray(clip.reshape(T * H, W, 3)[..., ::-1], dtype=np.float32)  # [T*H, W, 3] one image for cv2
        if use[0]:
            bgr += np.float32(brightness)
        if use[1] and not contrast_last:
            bgr *= np.float32(contrast)
        hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)  # float32: H in degrees, S = (V - min) / V, V = max
        if use[2]:
            hsv[..., 1] *= np.float32(saturation)
        if use[3]:
            h = hsv[..., 0]  # a view
            h += np.float32(hue)
            h[h > 360.0] -= 360.0
            h[h < 0.0] += 360.0
        bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if use[1] and contrast_last:
            bgr *= np.float32(contrast)
        if use[4]:
            bgr = bgr[..., list(permutation)]
        rgb = np.ascontiguousarray(bgr[..., ::-1]).reshape(T, H, W, 3)
        return replace(sample, clip=rgb)

    def __repr__(self) -> str:
        return f"StepPhotometricDistort(p={self.p})"


# SSD's RandomSampleCrop modes: None = keep the whole clip; (min_iou, max_iou), None = unbounded.
STEP_CROP_MODES: tuple[tuple[float | None, float | None] | None, ...] = (
    None,
    (0.1, None),
    (0.3, None),
    (0.5, None),
    (0.7, None),
    (0.9, None),
    (None, None),
)


class StepRandomSampleCrop:
    """SSD-style ``RandomSampleCrop`` on keyframe boxes, as STEP applies it (STEP.md §2 item 3).

    Repeat: draw a mode uniformly from ``modes``; ``None`` returns the clip unchanged; otherwise try
    ``max_trials`` crops: ``w = U(min_scale * W, W)``, ``h = U(min_scale * H, H)``, rejected unless
    ``aspect_range[0] <= h / w <= aspect_range[1]``; ``left = U(0, W - w)``, ``top = U(0, H - h)``, the
    crop is the integer rectangle ``int(left), int(top), int(left + w), int(top + h)``. A crop is
    accepted when

    * the IoU test passes: with ``require_all=True`` (default) **every** keyframe box's continuous IoU
      with the crop lies in ``[min_iou, max_iou]``; with ``False`` at least one box's does;
    * at least one keyframe box centre lies strictly inside the crop.

    Accepted: the persons whose centre is outside are dropped (``ClipSample.keep``), the others are
    clipped to the crop; the same rectangle crops every frame. Without boxes no crop can pass, so the
    clip is returned unchanged. After ``max_rounds`` rounds without success (probability about
    ``(1 - 1/7) ** 100``) the clip is returned unchanged.

    Args:
        modes: the modes (default ``STEP_CROP_MODES``: whole, min IoU 0.1/0.3/0.5/0.7/0.9, free).
        max_trials: crops tried per mode draw (default 50).
        min_scale: smallest crop side as a fraction of the frame side (default 0.3).
        aspect_range: allowed ``h / w`` in pixels (default (0.5, 2.0)).
        require_all: IoU test over all boxes (True, default) or any box (False).
        max_rounds: mode draws before giving up (default 100).

    Boxes must be ``(N, 4)`` keyframe boxes (float pixels of the clip).
    """

    def __init__(
        self,
        *,
        modes: Sequence[tuple[float | None, float | None] | None] = STEP_CROP_MODES,
        max_trials: int = 50,
        min_scale: float = 0.3,
        aspect_range: tuple[float, float] = (0.5, 2.0),
        require_all: bool = True,
        max_rounds: int = 100,
    ) -> None:
        if not modes:
            raise StadError("StepRandomSampleCrop needs at least one mode")
        if not 0.0 < min_scale <= 1.0:
            raise StadError(f"min_scale must be in (0, 1], got {min_scale}")
        self.modes = tuple(modes)
        self.max_trials = int(max_trials)
        self.min_scale = float(min_scale)
        self.aspect_range = (float(aspect_range[0]), float(aspect_range[1]))
        self.require_all = bool(require_all)
        self.max_rounds = int(max_rounds)

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        boxes = sample.boxes
        if boxes.ndim != 2:
            raise StadError(f"StepRandomSampleCrop needs (N, 4) keyframe boxes, got shape {boxes.shape}")
        if len(boxes) == 0:
            return sample  # no keyframe centre can be inside a crop
        H, W = sample.size
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0  # [N, 2] x, y
        for _ in range(self.max_rounds):
            mode = self.modes[int(rng.integers(len(self.modes)))]
            if mode is None:
                return sample
            min_iou = -np.inf if mode[0] is None else float(mode[0])
            max_iou = np.inf if mode[1] is None else float(mode[1])
            for _ in range(self.max_trials):
                w = rng.uniform(self.min_scale * W, W)
                h = rng.uniform(self.min_scale * H, H)
                if not self.aspect_range[0] <= h / w <= self.aspect_range[1]:
                    continue
                left = rng.uniform(0.0, W - w)
                top = rng.uniform(0.0, H - h)
                rect = np.array([int(left), int(top), int(left + w), int(top + h)], dtype=np.int64)
                overlap = _crop_overlap(boxes, rect.astype(np.float64)[None])[0]  # [N]
                fits = (overlap >= min_iou) & (overlap <= max_iou)
                if not (fits.all() if self.require_all else fits.any()):
                    continue
                inside = (
                    (rect[0] < centres[:, 0]) & (rect[1] < centres[:, 1]) & (rect[2] > centres[:, 0]) & (rect[3] > centres[:, 1])
                )  # [N]
                if not inside.any():
                    continue
                return self.apply(sample, rect, inside)
        return sample

    @staticmethod
    def apply(sample: ClipSample, rect: np.ndarray, inside: np.ndarray) -> ClipSample:
        """Crop to the integer ``rect`` ``(4,)`` ``x1, y1, x2, y2``; keep the persons of ``inside`` ``(N,)``, clipped."""
        x1, y1, x2, y2 = (int(v) for v in rect)
        offset = np.array([x1, y1, x1, y1], dtype=np.float64)
        boxes = sample.boxes[inside].copy()
        boxes[:, :2] = np.maximum(boxes[:, :2], offset[:2])
        boxes[:, 2:] = np.minimum(boxes[:, 2:], [x2, y2])
        keep = sample.keep.copy()
        keep[keep] = inside
        return replace(
            sample,
            clip=np.ascontiguousarray(sample.clip[:, y1:y2, x1:x2]),
            boxes=boxes - offset,
            visibility=sample.visibility[inside],
            keep=keep,
            affine=sample.affine - np.array([0.0, x1, 0.0, y1]),
            occluder_mask=None if sample.occluder_mask is None else np.ascontiguousarray(sample.occluder_mask[:, y1:y2, x1:x2]),
        )

    def __repr__(self) -> str:
        return f"StepRandomSampleCrop({len(self.modes)} modes, max_trials={self.max_trials})"


class StepHorizontalFlip(HorizontalFlip):
    """STEP's flip (STEP.md §2 item 4): mirror with probability ``p``, ``x1' = W - x2``, ``x2' = W - x1``,
    for non-zero boxes only: an all-zero box (STEP's "person not annotated here") stays all zero."""

    def __init__(self, *, p: float = 0.5) -> None:
        super().__init__(p=p)

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        zero = np.all(sample.boxes == 0.0, axis=-1)  # [N] or [N, T]
        out = super().__call__(sample, rng)
        if out is sample or not zero.any():
            return out
        boxes = out.boxes.copy()
        boxes[zero] = 0.0
        return replace(out, boxes=boxes)

    def __repr__(self) -> str:
        return f"StepHorizontalFlip(p={self.p})"


class RandomErase:
    """STEP's ``RandomErase`` (STEP.md §2 item 5): noise rectangles inside the keyframe boxes.

    With probability ``p`` per clip, inside **each** keyframe box one rectangle is filled with noise:
    area ``U(area_range)`` times the box area (default 2-20 %), aspect ``h / w = U(aspect_range)``
    (default 0.3-3.33), sides rounded to whole pixels; up to ``max_attempts`` draws per box until the
    rectangle fits in the box (else that box is left alone), then a uniform integer position inside
    the box (and the frame). The noise is ``U(noise_low, noise_high)`` per pixel and channel, drawn
    once and written to **all** frames (same pixels, same values). ``build_step_train_transform``
    sets the noise range to U(-1, 1) in STEP's normalised units, i.e. 0..255 pixels.

    Args:
        p: probability per clip (default 0.5).
        area_range: rectangle area as a fraction of the box area (default (0.02, 0.2)).
        aspect_range: rectangle ``h / w`` (default (0.3, 1 / 0.3)).
        noise_low, noise_high: per-channel noise range in the clip's pixel units (default 0..255).
        max_attempts: size draws per box (default 10).

    Boxes must be ``(N, 4)``; zero-area boxes are skipped. An integer clip gets rounded noise.
    """

    def __init__(
        self,
        *,
        p: float = 0.5,
        area_range: tuple[float, float] = (0.02, 0.2),
        aspect_range: tuple[float, float] = (0.3, 1.0 / 0.3),
        noise_low: float | Sequence[float] = 0.0,
        noise_high: float | Sequence[float] = 255.0,
        max_attempts: int = 10,
    ) -> None:
        self.p = p
        self.area_range = (float(area_range[0]), float(area_range[1]))
        self.aspect_range = (float(aspect_range[0]), float(aspect_range[1]))
        self.noise_low = np.atleast_1d(np.asarray(noise_low, dtype=np.float64))
        self.noise_high = np.atleast_1d(np.asarray(noise_high, dtype=np.float64))
        self.max_attempts = int(max_attempts)

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        if not rng.random() < self.p:
            return sample
        if sample.boxes.ndim != 2:
            raise StadError(f"RandomErase needs (N, 4) keyframe boxes, got shape {sample.boxes.shape}")
        T, H, W, C = sample.clip.shape
        clip = sample.clip.copy()
        for box in _clip_boxes(sample.boxes, W, H):
            x1, y1, x2, y2 = (float(v) for v in box)
            bw, bh = x2 - x1, y2 - y1
            if bw < 1.0 or bh < 1.0:
                continue
            for _ in range(self.max_attempts):
                area = rng.uniform(*self.area_range) * bw * bh
                aspect = rng.uniform(*self.aspect_range)
                h, w = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
                if 1 <= w <= bw and 1 <= h <= bh:
                    break
            else:
                continue
            left = min(int(rng.uniform(x1, x2 - w)), W - w)
            top = min(int(rng.uniform(y1, y2 - h)), H - h)
            noise = rng.uniform(self.noise_low, self.noise_high, size=(h, w, C))  # [h, w, C], same on every frame
            if np.issubdtype(clip.dtype, np.integer):
                noise = np.clip(np.rint(noise), 0, 255)
            clip[:, top : top + h, left : left + w] = noise.astype(clip.dtype)
        return replace(sample, clip=clip)

    def __repr__(self) -> str:
        return f"RandomErase(p={self.p}, area_range={self.area_range})"


def build_step_train_transform(
    input_size: tuple[int, int],
    *,
    photometric: bool = True,
    crop: bool = True,
    flip: bool = True,
    erase: bool = True,
    erase_p: float = 0.5,
    mean: Sequence[float] = (127.5, 127.5, 127.5),
    std: Sequence[float] = (127.5, 127.5, 127.5),
) -> Compose:
    """STEP's training augmentation (STEP.md §2 items 1-6) on a float32 pixel clip.

    ``ToFloat32 → [StepPhotometricDistort] → ClampPixels(0, 255) → [StepRandomSampleCrop] →
    [StepHorizontalFlip] → [RandomErase] → Resize(input_size)``. The output is float32 RGB pixels
    0..255; normalise with STEP's ``(x - 127.5) / 127.5`` afterwards (the keyframe dataset does).

    Args:
        input_size: network input ``(H, W)`` (STEP: 400x400; aspect ratio not kept).
        photometric, crop, flip, erase: switch each op (all on in STEP's ``train_step.sh``).
        erase_p: ``RandomErase`` probability per clip (default 0.5).
        mean, std: the normalisation the dataset applies afterwards, in pixel units (default STEP's
            127.5); ``RandomErase`` draws U(-1, 1) in these normalised units, i.e. U(mean - std, mean + std) pixels.
    """
    mean_arr, std_arr = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    ops: list[Transform] = [ToFloat32()]
    if photometric:
        ops.append(StepPhotometricDistort())
    ops.append(ClampPixels(0.0, 255.0))
    if crop:
        ops.append(StepRandomSampleCrop())
    if flip:
        ops.append(StepHorizontalFlip())
    if erase:
        ops.append(RandomErase(p=erase_p, noise_low=mean_arr - std_arr, noise_high=mean_arr + std_arr))
    ops.append(Resize(tuple(input_size)))
    return Compose(ops)


def build_step_test_transform(input_size: tuple[int, int]) -> Compose:
    """STEP's test transform (``BaseTransform``): float pixels resized to ``input_size``, nothing else."""
    return Compose([ToFloat32(), Resize(tuple(input_size))])


# --------------------------------------------------------------------------------------------------
# FBIL / ACAR-Net's spatial pipeline (FBIL.md §2 "Spatial pipeline" and "Neck"): the shorter side scaled to
# 256 (aspect kept, bilinear), a horizontal flip with p = 0.5 at training, no crop and no colour jitter;
# the neck jitters the normalised boxes at training. Written from the description in FBIL.md.

FBIL_SHORT_SIDE = 256
FBIL_JITTER_SCALE = 0.075


def scale_short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """ACAR's ``Scale(short_side)`` output ``(H, W)``: the shorter side becomes ``short_side``, the other
    ``int(short_side * long / short)`` (truncated); a frame whose shorter side already is ``short_side`` keeps
    its size. 360x640 → 256x455, 360x480 → 256x341 (FBIL.md §7 fact 4)."""
    height, width = _check_size((height, width))
    short_side = int(short_side)
    if short_side < 1:
        raise StadError(f"short_side must be a positive int, got {short_side}")
    if min(height, width) == short_side:
        return height, width
    if width < height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def _pil_resize(frame: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """``(H, W, C)`` uint8 or float32 frame → ``(out_h, out_w, C)`` by PIL's bilinear filter (antialiased when shrinking)."""
    from PIL import Image

    if frame.dtype == np.uint8 and frame.shape[-1] == 3:
        return np.asarray(Image.fromarray(frame).resize((out_w, out_h), Image.BILINEAR))
    if frame.dtype not in (np.uint8, np.float32):
        raise StadError(f"ScaleShortSide(backend='pil') resizes uint8 or float32 frames, got {frame.dtype}")
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(frame[..., c])).resize((out_w, out_h), Image.BILINEAR))
        for c in range(frame.shape[-1])
    ]
    return np.stack(channels, axis=-1).astype(frame.dtype, copy=False)


class ScaleShortSide:
    """FBIL/ACAR's ``Scale(256)``: resize every frame so that its shorter side is ``short_side`` (aspect kept).

    The other side is ``int(short_side * long / short)`` (``scale_short_side_size``); boxes, the affine map
    and an occluder mask follow as in ``Resize``. The output size therefore depends on the video
    (640x360 → 455x256, 480x360 → 341x256): batch such clips with ``collate_keyframes_padded``.

    Args:
        short_side: the shorter side after scaling (default 256).
        backend: ``"pil"`` (default): PIL's bilinear filter, as ACAR (``Image.resize(..., BILINEAR)``, which
            averages over the footprint when shrinking); uint8 or float32 clips. ``"cv2"``: OpenCV's
            ``INTER_LINEAR`` (faster, no antialiasing), any dtype OpenCV resizes.
    """

    def __init__(self, short_side: int = FBIL_SHORT_SIDE, *, backend: str = "pil") -> None:
        if backend not in ("pil", "cv2"):
            raise StadError(f"ScaleShortSide backend must be 'pil' or 'cv2', got {backend!r}")
        scale_short_side_size(short_side, short_side, short_side)  # checks short_side
        self.short_side = int(short_side)
        self.backend = backend

    def __call__(self, sample: ClipSample, rng: np.random.Generator | None = None) -> ClipSample:
        T, H, W, C = sample.clip.shape
        out_h, out_w = scale_short_side_size(H, W, self.short_side)
        if (out_h, out_w) == (H, W):
            return sample
        clip = np.empty((T, out_h, out_w, C), dtype=sample.clip.dtype)
        for t, frame in enumerate(sample.clip):  # one (H, W, C) image at a time
            if self.backend == "pil":
                clip[t] = _pil_resize(frame, out_w, out_h)
            else:
                clip[t] = cv2.resize(frame, (out_w, out_h), interpolation=cv2.INTER_LINEAR).reshape(out_h, out_w, C)
        sx, sy = out_w / W, out_h / H
        mask = None
        if sample.occluder_mask is not None:  # nearest neighbour keeps it boolean
            mask = np.empty((T, out_h, out_w), dtype=bool)
            for t, mask_per_frame in enumerate(sample.occluder_mask.view(np.uint8)):
                mask[t] = cv2.resize(mask_per_frame, (out_w, out_h), interpolation=cv2.INTER_NEAREST).astype(bool)
        return replace(
            sample,
            clip=clip,
            boxes=sample.boxes * np.array([sx, sy, sx, sy]),
            affine=sample.affine * np.array([sx, sx, sy, sy]),
            occluder_mask=mask,
        )

    def __repr__(self) -> str:
        return f"ScaleShortSide({self.short_side}, backend={self.backend!r})"


def build_fbil_train_transform(short_side: int = FBIL_SHORT_SIDE, *, flip: bool = True, backend: str = "pil") -> Compose:
    """FBIL's training transform (FBIL.md §2): ``ScaleShortSide(short_side) → HorizontalFlip(p=0.5)``.

    One flip draw per clip (every frame and box mirrored together); no crop, no colour jitter. The
    output is uint8 RGB of a size that depends on the video; normalise with ``ACAR_NORMALIZATION``
    (``stad.data.keyframes``) and batch with ``collate_keyframes_padded``. Box jitter is applied by
    ``jitter_boxes`` on the normalised boxes, not here.

    Args:
        short_side: the shorter side after scaling (default 256; the CPU-sized config uses 128).
        flip: add the flip (default True).
        backend: ``ScaleShortSide``'s resampler (default ``"pil"``, ACAR's).
    """
    ops: list[Transform] = [ScaleShortSide(short_side, backend=backend)]
    if flip:
        ops.append(HorizontalFlip(p=0.5))
    return Compose(ops)


def build_fbil_test_transform(short_side: int = FBIL_SHORT_SIDE, *, backend: str = "pil") -> Compose:
    """FBIL's test transform (FBIL.md §2, §6: one view, ``Scale 256``): ``ScaleShortSide(short_side)`` only."""
    return Compose([ScaleShortSide(short_side, backend=backend)])


def apply_box_jitter(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """FBIL/ACAR's box jitter with given offsets, its clamping quirk included (FBIL.md §2 "Neck").

    With ``w = x2 - x1``, ``h = y2 - y1`` and offsets ``j``::

        [max(x1 + j0 * w, 0), min(y1 + j1 * h, 1), max(x2 + j2 * w, 0), min(y2 + j3 * h, 1)]

    (sic: ``x`` is clamped only below at 0, ``y`` only above at 1, so ``y1`` may become negative and ``x2``
    may exceed 1). Fact 17: ``j = (.05, -.05, .05, .05)`` on ``[.1, .0, .5, .98]`` gives
    ``[0.12, -0.049, 0.52, 1.0]``.

    Args:
        boxes: ``(R, 4)`` ``x1, y1, x2, y2`` normalised to the frame (before any flip, as FBIL's neck).
        offsets: ``(R, 4)`` the draws ``j``, in box widths / heights.

    Returns:
        ``(R, 4)`` float64 jittered boxes (a new array).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    offsets = np.asarray(offsets, dtype=np.float64)
    if offsets.shape != boxes.shape:
        raise StadError(f"offsets must have the boxes' shape {boxes.shape}, got {offsets.shape}")
    w = boxes[:, 2] - boxes[:, 0]  # [R]
    h = boxes[:, 3] - boxes[:, 1]
    out = np.empty_like(boxes)
    out[:, 0] = np.maximum(boxes[:, 0] + offsets[:, 0] * w, 0.0)
    out[:, 1] = np.minimum(boxes[:, 1] + offsets[:, 1] * h, 1.0)
    out[:, 2] = np.maximum(boxes[:, 2] + offsets[:, 2] * w, 0.0)
    out[:, 3] = np.minimum(boxes[:, 3] + offsets[:, 3] * h, 1.0)
    return out


def jitter_boxes(boxes_normalised: np.ndarray, rng: np.random.Generator, scale: float = FBIL_JITTER_SCALE) -> np.ndarray:
    """FBIL's training box jitter (neck ``bbox jitter``, ``num 1, scale 0.075``): one jittered box replaces each box.

    Draws ``j ~ U(-scale, scale)`` ``(R, 4)`` from ``rng`` (one call, ``rng.uniform(-scale, scale, (R, 4))``)
    and applies ``apply_box_jitter`` (its clamping quirk: ``x`` only at 0 from below, ``y`` only at 1 from above).

    Args:
        boxes_normalised: ``(R, 4)`` ``x1, y1, x2, y2`` normalised to the frame, before the flip (FBIL jitters
            the stored boxes, then flips and pads them).
        rng: the generator (pass the item's or step's seeded generator; no global state).
        scale: the jitter range in box sizes (default 0.075).

    Returns:
        ``(R, 4)`` float64 boxes; ``(0, 4)`` for no boxes.
    """
    if not scale >= 0.0:
        raise StadError(f"jitter scale must be >= 0, got {scale}")
    boxes = np.asarray(boxes_normalised, dtype=np.float64).reshape(-1, 4)
    return apply_box_jitter(boxes, rng.uniform(-scale, scale, size=boxes.shape))


# --------------------------------------------------------------------------------------------------
# Occlusion augmentation (STADO): moving occluders pasted consistently over a clip, and the visible
# region target of the mask-guided attention.

OCCLUDER_TEXTURES = ("noise", "stripes", "checker", "flat")


@dataclass(frozen=True)
class Occluder:
    """One moving occluder: a textured rectangle or ellipse translated by a constant velocity.

    On frame ``t`` (0-based in the clip) its top-left corner lies at pixel
    ``(rint(x + vx * t), rint(y + vy * t))``; the same ``texture`` is drawn on every frame (parts
    outside the frame are cut off).

    Attributes:
        x, y: top-left corner on frame 0, float pixels of the clip (may lie outside the frame).
        vx, vy: velocity in pixels per frame.
        texture: ``(h, w, C)`` uint8 pixels of the occluder.
        ellipse: True for an ellipse inscribed in the ``h x w`` rectangle, False for the rectangle.
    """

    x: float
    y: float
    vx: float
    vy: float
    texture: np.ndarray
    ellipse: bool = False

    def shape_mask(self) -> np.ndarray:
        """``(h, w)`` bool: which texture pixels belong to the occluder (pixel centres inside the ellipse)."""
        h, w = self.texture.shape[:2]
        if not self.ellipse:
            return np.ones((h, w), dtype=bool)
        ry = (np.arange(h) + 0.5 - h / 2) / (h / 2)  # [h]
        rx = (np.arange(w) + 0.5 - w / 2) / (w / 2)  # [w]
        return ry[:, None] ** 2 + rx[None, :] ** 2 <= 1.0

    def position(self, t: int) -> tuple[int, int]:
        """``(left, top)`` integer pixel of the texture's corner on frame ``t``."""
        return int(np.rint(self.x + self.vx * t)), int(np.rint(self.y + self.vy * t))


def make_texture(kind: str, height: int, width: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``(height, width, channels)`` uint8 texture.

    Args:
        kind: ``"noise"`` (i.i.d. pixels), ``"stripes"`` (two colours, horizontal or vertical bands of a
            random period), ``"checker"`` (two colours, square cells of a random size) or ``"flat"`` (one colour).
        height, width, channels: texture size.
        rng: the generator; the texture depends only on it and the arguments.
    """
    if kind not in OCCLUDER_TEXTURES:
        raise StadError(f"unknown occluder texture {kind!r}, expected one of {OCCLUDER_TEXTURES}")
    colours = rng.integers(0, 256, size=(2, channels), dtype=np.uint8)  # [2, C]
    period = int(rng.integers(2, max(3, min(height, width) // 2 + 1)))
    vertical = bool(rng.random() < 0.5)
    if kind == "noise":
        return rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    if kind == "flat":
        return np.broadcast_to(colours[0], (height, width, channels)).copy()
    rows, cols = np.arange(height)[:, None] // period, np.arange(width)[None, :] // period  # [h, 1], [1, w]
    if kind == "stripes":
        index = np.broadcast_to(cols if vertical else rows, (height, width)) % 2
    else:  # checker
        index = (rows + cols) % 2
    return colours[index]  # [h, w, C]


def box_coverage(boxes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fraction of each box's area that lies on True pixels of a per-frame mask.

    Box-area based and exact for fractional boxes: pixel ``(r, c)`` spans ``[c, c + 1) x [r, r + 1)`` and
    counts with its overlap area with the box. Parts of a box outside the frame count as uncovered.

    Args:
        boxes: ``(N, T, 4)`` ``x1, y1, x2, y2`` pixels.
        mask: ``(T, H, W)`` bool.

    Returns:
        ``(N, T)`` float64 in [0, 1]; 0 for a zero-area box.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    T, H, W = mask.shape
    if boxes.ndim != 3 or boxes.shape[1:] != (T, 4):
        raise StadError(f"boxes must be (N, T={T}, 4), got shape {boxes.shape}")
    cols, rows = np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64)
    ox = np.clip(np.minimum(boxes[..., 2:3], cols + 1) - np.maximum(boxes[..., 0:1], cols), 0, None)  # [N, T, W]
    oy = np.clip(np.minimum(boxes[..., 3:4], rows + 1) - np.maximum(boxes[..., 1:2], rows), 0, None)  # [N, T, H]
    covered = np.einsum("nth,thw,ntw->nt", oy, mask.astype(np.float64), ox, optimize=True)  # [N, T]
    area = _area(boxes)  # [N, T]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, np.clip(covered / area, 0.0, 1.0), 0.0)


class PasteOccluders:
    """Paste moving occluders over the clip and lower the actors' visibility accordingly.

    With probability ``p``, ``1..max_occluders`` occluders are drawn: a rectangle or an ellipse (1/2 each)
    of a random texture from ``textures``, width ``u * W`` and height ``v * H`` with ``u, v`` uniform in
    ``size_range``, moving with a constant velocity of magnitude uniform in ``speed`` times ``max(H, W)``
    pixels per frame in a uniform direction. Each occluder is, with probability 1/2 (and when actors
    exist), *aimed*: its centre on the middle frame is a uniform point of a random actor's box on that
    frame, so it partly covers the actor; otherwise its centre on the middle frame is uniform over the
    frame. Every frame of the clip gets the same occluders at their moved positions (see ``Occluder``).

    Boxes are unchanged (they are amodal). Visibility is updated **by box area**, since the augmentation
    does not know the actors' silhouettes: for actor ``n`` on frame ``t``,
    ``visibility[n, t] *= 1 - coverage`` where ``coverage`` is the fraction of the box's area newly
    covered by the pasted occluders (pixels not already in ``occluder_mask``; see ``box_coverage``).
    For ``(N, 4)`` boxes (one box for the whole clip) the coverage is the mean over frames.
    ``occluder_mask`` becomes the union of the old mask and the pasted pixels.

    Args:
        p: probability of pasting (default 0.5).
        max_occluders: most occluders per clip (default 2).
        size_range: occluder side as a fraction of the frame side (default (0.15, 0.5)).
        speed: range of speeds, in frame sides (``max(H, W)``) per frame (default (0.0, 0.05)).
        textures: texture kinds to choose from (see ``make_texture``).
    """

    def __init__(
        self,
        *,
        p: float = 0.5,
        max_occluders: int = 2,
        size_range: tuple[float, float] = (0.15, 0.5),
        speed: tuple[float, float] = (0.0, 0.05),
        textures: Sequence[str] = OCCLUDER_TEXTURES,
    ) -> None:
        if max_occluders < 1:
            raise StadError(f"PasteOccluders max_occluders must be >= 1, got {max_occluders}")
        if not 0.0 < size_range[0] <= size_range[1] <= 1.0:
            raise StadError(f"PasteOccluders size_range must satisfy 0 < low <= high <= 1, got {size_range}")
        if not 0.0 <= speed[0] <= speed[1]:
            raise StadError(f"PasteOccluders speed must satisfy 0 <= low <= high, got {speed}")
        textures = tuple(textures)
        unknown = [kind for kind in textures if kind not in OCCLUDER_TEXTURES]
        if not textures or unknown:
            raise StadError(f"PasteOccluders textures must be a non-empty subset of {OCCLUDER_TEXTURES}, got {textures}")
        self.p = p
        self.max_occluders = int(max_occluders)
        self.size_range = (float(size_range[0]), float(size_range[1]))
        self.speed = (float(speed[0]), float(speed[1]))
        self.textures = textures

    def draw(self, sample: ClipSample, rng: np.random.Generator) -> list[Occluder]:
        """Draw ``1..max_occluders`` occluders for ``sample`` (ignores ``p``)."""
        T, H, W, C = sample.clip.shape
        t_mid = (T - 1) // 2
        boxes = sample.boxes if sample.boxes.ndim == 3 else np.repeat(sample.boxes[:, None], T, axis=1)  # [N, T, 4]
        occluders = []
        for _ in range(int(rng.integers(1, self.max_occluders + 1))):
            w = max(1, int(round(rng.uniform(*self.size_range) * W)))
            h = max(1, int(round(rng.uniform(*self.size_range) * H)))
            speed = rng.uniform(*self.speed) * max(H, W)
            angle = rng.uniform(0.0, 2.0 * np.pi)
            vx, vy = speed * np.cos(angle), speed * np.sin(angle)
            aimed = bool(rng.random() < 0.5) and len(boxes) > 0
            u, v = rng.random(2)
            if aimed:
                x1, y1, x2, y2 = boxes[int(rng.integers(len(boxes))), t_mid]
                cx, cy = x1 + u * (x2 - x1), y1 + v * (y2 - y1)
            else:
                cx, cy = u * W, v * H
            kind = self.textures[int(rng.integers(len(self.textures)))]
            texture = make_texture(kind, h, w, C, rng)
            ellipse = bool(rng.random() < 0.5)
            occluders.append(
                Occluder(x=cx - w / 2 - vx * t_mid, y=cy - h / 2 - vy * t_mid, vx=vx, vy=vy, texture=texture, ellipse=ellipse)
            )
        return occluders

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        if not rng.random() < self.p:
            return sample
        return self.apply(sample, self.draw(sample, rng))

    @staticmethod
    def apply(sample: ClipSample, occluders: Sequence[Occluder]) -> ClipSample:
        """Paste the given ``occluders`` (later ones over earlier ones) and update visibility and mask."""
        T, H, W, C = sample.clip.shape
        clip = sample.clip.copy()
        pasted = np.zeros((T, H, W), dtype=bool)
        for occluder in occluders:
            if occluder.texture.ndim != 3 or occluder.texture.shape[2] != C or occluder.texture.dtype != np.uint8:
                raise StadError(
                    f"occluder texture must be (h, w, C={C}) uint8, got shape {occluder.texture.shape} dtype {occluder.texture.dtype}"
                )
            h, w = occluder.texture.shape[:2]
            shape = occluder.shape_mask()  # [h, w]
            for t in range(T):
                left, top = occluder.position(t)
                x0, x1, y0, y1 = max(left, 0), min(left + w, W), max(top, 0), min(top + h, H)
                if x0 >= x1 or y0 >= y1:
                    continue  # outside the frame on this frame
                inside = shape[y0 - top : y1 - top, x0 - left : x1 - left]  # [y1-y0, x1-x0]
                region = clip[t, y0:y1, x0:x1]  # a view: writes go to clip
                region[inside] = occluder.texture[y0 - top : y1 - top, x0 - left : x1 - left][inside]
                pasted[t, y0:y1, x0:x1] |= inside
        old = sample.occluder_mask
        if old is not None and old.shape != (T, H, W):
            raise StadError(f"occluder_mask must have shape {(T, H, W)}, got {old.shape}")
        new = pasted if old is None else pasted & ~old
        boxes = sample.boxes if sample.boxes.ndim == 3 else np.repeat(sample.boxes[:, None], T, axis=1)  # [N, T, 4]
        coverage = box_coverage(boxes, new)  # [N, T]
        if sample.boxes.ndim == 2:
            coverage = coverage.mean(axis=1)  # [N]
        visibility = sample.visibility * (1.0 - coverage)
        mask = pasted if old is None else pasted | old
        return replace(sample, clip=clip, visibility=visibility, occluder_mask=mask)

    def __repr__(self) -> str:
        return f"PasteOccluders(p={self.p}, max_occluders={self.max_occluders}, size_range={self.size_range}, speed={self.speed})"


def visible_mask_targets(
    boxes: np.ndarray,
    visibility: np.ndarray,
    occluder_mask: np.ndarray | None,
    *,
    size: tuple[int, int],
    stride: int,
) -> np.ndarray:
    """Visible-region target of STADO's mask-guided attention, on the network's stride grid.

    Per frame: the union of the boxes of the actors with ``visibility > 0`` on that frame (a pixel belongs
    to a box when its centre lies inside it, i.e. columns ``ceil(x1 - 0.5) .. ceil(x2 - 0.5) - 1``), minus
    the occluder pixels, then the mean over each ``stride x stride`` cell (area average; cells that run
    past the frame's border count the missing pixels as 0).

    Args:
        boxes: ``(N, T, 4)`` ``x1, y1, x2, y2`` pixels of the clip of ``size``.
        visibility: ``(N, T)`` visible fraction; actors at 0 on a frame add nothing there.
        occluder_mask: ``(T, H, W)`` bool occluder pixels (``ClipSample.occluder_mask``) or ``None``.
        size: ``(H, W)`` of the clip.
        stride: output stride of the feature map (>= 1).

    Returns:
        ``(T, ceil(H / stride), ceil(W / stride))`` float32 in [0, 1].
    """
    H, W = _check_size(size)
    if int(stride) != stride or stride < 1:
        raise StadError(f"stride must be a positive int, got {stride}")
    boxes = np.asarray(boxes, dtype=np.float64)
    visibility = np.asarray(visibility, dtype=np.float64)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise StadError(f"boxes must be (N, T, 4), got shape {boxes.shape}")
    N, T = boxes.shape[:2]
    if visibility.shape != (N, T):
        raise StadError(f"visibility must have shape {(N, T)}, got {visibility.shape}")
    if occluder_mask is not None and occluder_mask.shape != (T, H, W):
        raise StadError(f"occluder_mask must have shape {(T, H, W)}, got {occluder_mask.shape}")
    edges = np.ceil(boxes - 0.5)  # first pixel inside / first pixel past each side
    edges[..., 0::2] = np.clip(edges[..., 0::2], 0, W)
    edges[..., 1::2] = np.clip(edges[..., 1::2], 0, H)
    edges = edges.astype(np.int64)
    stride = int(stride)
    h, w = -(-H // stride), -(-W // stride)
    full = np.zeros((T, h * stride, w * stride), dtype=bool)  # padded to whole cells
    for n, t in zip(*np.nonzero(visibility > 0)):
        x1, y1, x2, y2 = edges[n, t]
        full[t, y1:y2, x1:x2] = True
    if occluder_mask is not None:
        full[:, :H, :W] &= ~occluder_mask
    cells = full.reshape(T, h, stride, w, stride)  # [T, h, s, w, s]
    return cells.mean(axis=(2, 4), dtype=np.float64).astype(np.float32)
