"""Network inputs of the RGB, flow and fused (RGB + flow) streams, frame by frame.

The flow stream of ACT (Kalogeiton et al., ICCV 2017) and MOC (Li et al., ECCV 2020) feeds, for frame
``f`` of a video of ``T`` frames, the ``flow_frames`` (5) flow images ``f .. f + flow_frames - 1``
stacked on the channel axis, the indices clamped to ``T`` at the video end (MOC-Detector
``src/datasets/sample/sampler.py``: ``flowfile(v, min(frame + i, nframes))``). This module builds
exactly the per-frame inputs that :class:`stad.data.datasets.TubeletClipDataset` builds for its
clips, as streams, so that inference (``stad.engine.families.tubelet``) reuses each frame's features:

    rgb   : (H0, W0, 3)                   RGB frame f
    flow  : (H0, W0, 3 * F)               flow images f .. f + F - 1 (clamped), channels (x, y, magnitude) each
    fused : (H0, W0, 3 + 3 * F)           rgb then flow, for :class:`stad.models.fusion.TwoStreamDetector`

Flow images are ``(H, W, 3)`` uint8 with channels ``(x, y, magnitude)`` (``stad.data.flow``: the bytes as
``cv2.imread`` returns them, which is also what the data set feeds the network). The x component of a
stacked flow input is therefore every channel ``3 * j + FLOW_X_CHANNEL``.

Horizontal flip of a flow input must negate the x flow. With the byte mapping
``p = round(127.5 + v * 127.5 / bound)`` the decoded value ``(p - 127.5) * bound / 127.5`` is odd around
127.5, so ``255 - p`` decodes to exactly ``-v`` of the stored value (ACT's and MOC's data layers do
``255 - image[..., c]`` on the x channel when mirroring, "reverse the x component of the flow").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stad.data.flow import FLOW_METHODS, flow_to_image, _make_estimator
from stad.data.frames import act_frame_path, read_rgb
from stad.errors import StadError

STREAMS = ("rgb", "flow", "fused")

# Channel of the x flow inside one flow image as the data set feeds it (OpenCV memory order). stad's own
# flow files (`stad flow`, stad.data.flow, following the dense_flow tools' Vec3b(x, y, magnitude)) and the
# flow computed on the fly have x first. Caution, checked in MOC-Detector (sampler.py, normal_moc_det.py)
# and the ACT data layer: they invert channel 2 of cv2.imread's output when mirroring ("reverse the x
# component of the flow"), i.e. the original ACT brox-images keep x in the last channel. Data sets with
# such files should have their flow recomputed with `stad flow` before training with stad's flip.
FLOW_X_CHANNEL = 0

# Byte value of zero flow under the mapping round(127.5 + v * 127.5 / bound) (half to even: 128); the
# fill of Expand for flow inputs, so the padding reads as "no motion".
ZERO_FLOW_BYTE = 128.0


@dataclass(frozen=True)
class StreamSpec:
    """What one network input frame is made of.

    Attributes:
        stream: ``"rgb"``, ``"flow"`` or ``"fused"`` (rgb then flow channels).
        flow_frames: flow images stacked per frame (MOC: 5).
    """

    stream: str = "rgb"
    flow_frames: int = 5

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise StadError(f"stream must be one of {list(STREAMS)}, got {self.stream!r}")
        if int(self.flow_frames) != self.flow_frames or self.flow_frames < 1:
            raise StadError(f"flow_frames must be a positive int, got {self.flow_frames!r}")

    @property
    def channels(self) -> int:
        """Input channels: 3 (rgb), ``3 * flow_frames`` (flow), ``3 + 3 * flow_frames`` (fused)."""
        return {"rgb": 3, "flow": 3 * self.flow_frames, "fused": 3 + 3 * self.flow_frames}[self.stream]

    @property
    def needs_flow(self) -> bool:
        return self.stream in ("flow", "fused")

    @property
    def flip_invert_channels(self) -> list[int]:
        """Channels whose bytes become ``255 - p`` on a horizontal flip (the x flow of every stacked image)."""
        if not self.needs_flow:
            return []
        offset = 3 if self.stream == "fused" else 0
        return [offset + 3 * j + FLOW_X_CHANNEL for j in range(self.flow_frames)]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> StreamSpec:
        """From ``data.options`` (keys ``stream``, default ``rgb``; ``flow_frames``, default 5)."""
        return cls(stream=str(options.get("stream", "rgb")), flow_frames=int(options.get("flow_frames", 5)))


def stack_flow(flow_images: Iterable[np.ndarray], flow_frames: int) -> Iterator[np.ndarray]:
    """Per-frame flow inputs from a video's flow images in order (streamed, ``flow_frames - 1`` look-ahead).

    Args:
        flow_images: the ``T`` flow images ``(H, W, 3)`` uint8 of one video, frames 1..T.
        flow_frames: images stacked per frame ``F``.

    Yields:
        ``T`` arrays ``(H, W, 3 * F)`` uint8: for frame ``f`` images ``min(f + j, T)``, ``j = 0 .. F-1``.
    """
    window: deque[np.ndarray] = deque()
    it = iter(flow_images)
    exhausted = False

    def fill() -> None:
        nonlocal exhausted
        while not exhausted and len(window) < flow_frames:
            try:
                window.append(next(it))
            except StopIteration:
                exhausted = True

    fill()
    while window:
        parts = [window[min(j, len(window) - 1)] for j in range(flow_frames)]  # clamped at the video end
        yield np.concatenate(parts, axis=-1)
        window.popleft()
        fill()


def read_flow_images(frames_root: str | Path, video: str, nframes: int) -> Iterator[np.ndarray]:
    """Flow images 1..nframes of ``video`` (``brox-images``), ``(H, W, 3)`` uint8 in the data set's channel order."""
    for frame in range(1, nframes + 1):
        # as TubeletClipDataset.read_clip: the bytes in OpenCV memory order (x, y, magnitude)
        yield np.ascontiguousarray(read_rgb(act_frame_path(frames_root, video, frame, "flow"))[..., ::-1])


def jpeg_round_trip(image: np.ndarray, quality: int = 95) -> np.ndarray:
    """What writing ``image`` with :func:`stad.data.flow.write_flow_image` and reading it back gives (bytes equal)."""
    # write_flow_image -> write_jpeg encodes image[..., ::-1] after an RGB->BGR swap, i.e. `image` itself in
    # OpenCV order; read_flow_image decodes with cv2.imread and swaps twice, i.e. returns the decoded array.
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise StadError("cannot encode a flow image as JPEG")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def flow_images_from_frames(
    frames: Iterable[np.ndarray], *, method: str = "dis", bound: float = 20.0, jpeg_quality: int | None = 95
) -> Iterator[np.ndarray]:
    """Flow images of a video computed on the fly, the same as ``stad flow`` writes (``stad.data.flow``).

    Frame ``t`` gets the flow from RGB frame ``t`` to ``t + 1``; the last frame repeats the previous one;
    a one-frame video gets zero flow.

    Args:
        frames: the ``T`` RGB frames ``(H, W, 3)`` uint8, in order (streamed).
        method: ``"dis"`` or ``"farneback"``.
        bound: flow in pixels mapped to 0 / 255 (default 20).
        jpeg_quality: pass each image through the JPEG encoding ``stad flow`` stores (default 95), so the
            network sees the bytes it was trained on; ``None`` keeps the exact quantised flow.

    Yields:
        ``T`` flow images ``(H, W, 3)`` uint8, channels (x, y, magnitude).
    """
    if method not in FLOW_METHODS:
        raise StadError(f"unknown flow method {method!r}; expected one of {list(FLOW_METHODS)}")
    estimate = _make_estimator(method)
    finish = (lambda img: jpeg_round_trip(img, jpeg_quality)) if jpeg_quality is not None else (lambda img: img)
    it = iter(frames)
    try:
        prev = next(it)
    except StopIteration:
        return
    prev_gray = cv2.cvtColor(prev, cv2.COLOR_RGB2GRAY)
    image = finish(flow_to_image(np.zeros(prev.shape[:2] + (2,), np.float32), bound=bound))  # one-frame video
    for frame in it:
        if frame.shape != prev.shape:
            raise StadError(f"frames differ in size: {frame.shape} vs {prev.shape}")
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        image = finish(flow_to_image(estimate(prev_gray, gray), bound=bound))
        yield image
        prev, prev_gray = frame, gray
    yield image  # the last frame repeats the previous flow


def combine_streams(spec: StreamSpec, rgb: Iterable[np.ndarray] | None, flow_images: Iterable[np.ndarray] | None) -> Iterator[np.ndarray]:
    """Per-frame network inputs ``(H, W, spec.channels)`` uint8 of ``spec`` from RGB frames and flow images."""
    if spec.stream == "rgb":
        assert rgb is not None
        yield from rgb
        return
    assert flow_images is not None
    stacks = stack_flow(flow_images, spec.flow_frames)
    if spec.stream == "flow":
        yield from stacks
        return
    assert rgb is not None
    for frame, stack in zip(rgb, stacks, strict=True):
        yield np.concatenate([frame, stack], axis=-1)


def read_stream_frames(frames_root: str | Path, video: str, nframes: int, spec: StreamSpec) -> Iterator[np.ndarray]:
    """Per-frame inputs of ``spec`` for a video in the ACT layout (``rgb-images`` and/or ``brox-images``)."""
    rgb = (_read_rgb_or_png(frames_root, video, f) for f in range(1, nframes + 1)) if spec.stream != "flow" else None
    flow_images = read_flow_images(frames_root, video, nframes) if spec.needs_flow else None
    return combine_streams(spec, rgb, flow_images)


def _read_rgb_or_png(frames_root: str | Path, video: str, frame: int) -> np.ndarray:
    path = act_frame_path(frames_root, video, frame)
    if not path.is_file() and path.with_suffix(".png").is_file():
        path = path.with_suffix(".png")
    return read_rgb(path)
