"""Dense optical flow for the flow stream: OpenCV DIS / Farneback, stored as ACT "brox-images" JPEGs.

The ACT detector (Kalogeiton et al., ICCV 2017) and MOC (Li et al., ECCV 2020) read the flow
stream as 3-channel JPEGs ``<root>/brox-images/<video>/%05d.jpg``. Those images were written by
the ``dense_flow`` tools (e.g. takumayagi/dense_flow, ``denseFlow_gpu.cpp``: ``convertFlowToImage``
with ``-b 20 -m 1``), whose convention we follow exactly (facts only, no code copied):

* pixel layout ``(x, y, magnitude)`` in **OpenCV memory order**, i.e. the first channel that
  ``cv2.imread`` returns (the "blue" one) is the x flow, the second y, the third the magnitude
  ``sqrt(x^2 + y^2)``; MOC feeds ``cv2.imread`` output to the network as is;
* each value ``v`` (pixels per frame) maps to ``p = clip(round(255 * (v + bound) / (2 * bound)), 0, 255)``,
  i.e. ``p = round(127.5 + v * 127.5 / bound)`` with ``bound = 20``; zero flow is 127.5 -> 128 (half to
  even rounding, as ``cvRound``) and the magnitude only uses 128..255;
* inverse (:func:`image_to_flow`): ``v = (p - 127.5) * bound / 127.5``; the quantisation step is
  ``2 * bound / 255`` (0.157 px for bound 20), so a round trip is exact to ``bound / 255`` for
  ``|v| <= bound``, and values beyond ``bound`` saturate.

In this module a "flow image" is an ``(H, W, 3)`` uint8 array in that channel order
(0 = x, 1 = y, 2 = magnitude). :func:`write_flow_image` and :func:`read_flow_image` convert to and
from the file so that the bytes on disk match the ACT files (the RGB helpers of
:mod:`stad.data.frames` swap channels 0 and 2, which these functions undo).

Frame ``t`` of a video's flow is the flow from RGB frame ``t`` to frame ``t + 1`` (forward flow,
in pixels of the frame); the last frame ``T`` has no successor and **repeats the flow of frame
``T - 1``**; a one-frame video gets zero flow. All ``T`` flow frames exist so that the flow stream
is indexed like the RGB stream.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from stad.data.frames import act_frame_path, read_rgb, write_jpeg
from stad.errors import StadError
from stad.structures import TubeAnnotations

FLOW_METHODS = ("dis", "farneback")

# cv2.calcOpticalFlowFarneback parameters (the values of OpenCV's dense optical-flow tutorial):
# pyramid scale 0.5, 3 levels, 15 px averaging window, 3 iterations per level, 5 px polynomial
# neighbourhood with Gaussian sigma 1.2, no flags.
FARNEBACK_PARAMS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)

# Suffix of the folder a video is written into before it is renamed into place.
PARTIAL_SUFFIX = ".partial"


def _to_gray(image: np.ndarray, name: str) -> np.ndarray:
    """``(H, W, 3)`` RGB or ``(H, W)`` gray uint8 -> ``(H, W)`` uint8 gray."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise StadError(f"{name} must be a uint8 numpy array, got {getattr(image, 'dtype', type(image))}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise StadError(f"{name} must have shape (H, W, 3) RGB or (H, W) gray, got {image.shape}")


def _check_method(method: str) -> None:
    if method not in FLOW_METHODS:
        raise StadError(f"unknown flow method {method!r}; expected one of {list(FLOW_METHODS)}")


def _check_bound(bound: float) -> None:
    if not bound > 0:
        raise StadError(f"flow bound must be > 0, got {bound}")


def _make_estimator(method: str):
    """A function ``(prev_gray, next_gray) -> (H, W, 2) float32`` for ``method`` (one DIS object reused)."""
    _check_method(method)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return lambda prev_gray, next_gray: dis.calc(prev_gray, next_gray, None)
    return lambda prev_gray, next_gray: cv2.calcOpticalFlowFarneback(prev_gray, next_gray, None, **FARNEBACK_PARAMS)


def compute_flow(prev_rgb: np.ndarray, next_rgb: np.ndarray, *, method: str = "dis") -> np.ndarray:
    """Dense forward optical flow from ``prev_rgb`` to ``next_rgb`` with OpenCV, on grayscale frames.

    Args:
        prev_rgb, next_rgb: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` uint8 gray) frames of the same size.
        method: ``"dis"`` (``cv2.DISOpticalFlow`` with ``DISOPTICAL_FLOW_PRESET_MEDIUM``, default) or
            ``"farneback"`` (``cv2.calcOpticalFlowFarneback`` with :data:`FARNEBACK_PARAMS`).

    Returns:
        ``(H, W, 2)`` float32: ``[..., 0]`` the x (column) and ``[..., 1]`` the y (row) displacement in
        pixels, such that ``prev[y, x]`` moves to ``next[y + fy, x + fx]``.
    """
    prev_gray = _to_gray(prev_rgb, "prev_rgb")
    next_gray = _to_gray(next_rgb, "next_rgb")
    if prev_gray.shape != next_gray.shape:
        raise StadError(f"frames differ in size: {prev_gray.shape} vs {next_gray.shape}")
    flow = _make_estimator(method)(prev_gray, next_gray)  # [H, W, 2]
    return np.ascontiguousarray(flow, dtype=np.float32)


def flow_to_image(flow: np.ndarray, *, bound: float = 20.0) -> np.ndarray:
    """Quantise ``(H, W, 2)`` flow to an ``(H, W, 3)`` uint8 flow image (channels x, y, magnitude).

    Each value ``v`` becomes ``clip(round(127.5 + v * 127.5 / bound), 0, 255)`` (module docstring).
    """
    _check_bound(bound)
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise StadError(f"flow must have shape (H, W, 2), got {flow.shape}")
    magnitude = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)  # [H, W]
    values = np.concatenate([flow, magnitude[..., None]], axis=2)  # [H, W, 3]
    pixels = np.rint(127.5 + values * (127.5 / bound))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def image_to_flow(image: np.ndarray, *, bound: float = 20.0) -> np.ndarray:
    """Inverse of :func:`flow_to_image`: ``(H, W, 3)`` uint8 flow image -> ``(H, W, 2)`` float32 flow.

    ``v = (p - 127.5) * bound / 127.5`` for the x and y channels; the magnitude channel is dropped.
    Accurate to ``bound / 255`` pixels where ``|v| <= bound``.
    """
    _check_bound(bound)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise StadError(f"flow image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return ((image[..., :2].astype(np.float32) - 127.5) * (bound / 127.5)).astype(np.float32)


def write_flow_image(path: str | Path, image: np.ndarray, quality: int = 95) -> None:
    """Write a flow image (channels x, y, magnitude) as JPEG with the ACT byte layout (x first in memory)."""
    # write_jpeg swaps RGB -> BGR; pre-swapping keeps x in OpenCV's first channel, as in the ACT files.
    write_jpeg(path, np.ascontiguousarray(image[..., ::-1]), quality=quality)


def read_flow_image(path: str | Path) -> np.ndarray:
    """Read an ACT ``brox-images`` JPEG as an ``(H, W, 3)`` uint8 flow image (channels x, y, magnitude)."""
    return np.ascontiguousarray(read_rgb(path)[..., ::-1])


@dataclass
class FlowResult:
    """Outcome of :func:`compute_dataset_flow`.

    Attributes:
        written: videos whose flow was computed in this run.
        skipped: videos whose ``T`` flow images already existed.
        failed: video -> reason, for videos that could not be done (nothing of them is left in place).
        frames: video -> number of flow images written in this run.
    """

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)


def _flow_complete(root: Path, video: str, nframes: int) -> bool:
    return all(act_frame_path(root, video, t, "flow").is_file() for t in range(1, nframes + 1))


def _write_video_flow(root: Path, video: str, nframes: int, out_dir: Path, *, method: str, bound: float) -> None:
    """Write the ``nframes`` flow images of ``video`` into ``out_dir`` (frame numbering in the module docstring)."""
    if nframes < 1:
        raise StadError(f"video {video}: nframes must be >= 1, got {nframes}")
    estimate = _make_estimator(method)
    out_dir.mkdir(parents=True)
    prev_rgb = read_rgb(act_frame_path(root, video, 1))
    image = flow_to_image(np.zeros(prev_rgb.shape[:2] + (2,), np.float32), bound=bound)  # T == 1: zero flow
    for t in range(1, nframes):
        next_path = act_frame_path(root, video, t + 1)
        next_rgb = read_rgb(next_path)
        if next_rgb.shape != prev_rgb.shape:
            raise StadError(f"frame {next_path} has shape {next_rgb.shape}, frame {t} has {prev_rgb.shape}")
        flow = estimate(cv2.cvtColor(prev_rgb, cv2.COLOR_RGB2GRAY), cv2.cvtColor(next_rgb, cv2.COLOR_RGB2GRAY))
        image = flow_to_image(flow, bound=bound)
        write_flow_image(out_dir / f"{t:05d}.jpg", image)
        prev_rgb = next_rgb
    write_flow_image(out_dir / f"{nframes:05d}.jpg", image)  # the last frame repeats the previous flow


def compute_dataset_flow(ann: TubeAnnotations, root: str | Path, *, method: str = "dis", bound: float = 20.0,
                         overwrite: bool = False, progress: bool = True) -> FlowResult:
    """Compute ``<root>/brox-images/<video>/%05d.jpg`` (frames 1..T) from ``<root>/rgb-images`` for every video.

    Resumable: a video whose ``T`` flow images all exist is skipped (unless ``overwrite``). Each video is
    written into ``<video>.partial`` beside its final folder and renamed into place only when complete,
    so a killed run never leaves a half video that looks complete; a leftover ``.partial`` folder is
    removed and the video redone. A video that fails (missing or corrupt frame, size change) is
    reported in :attr:`FlowResult.failed` by name and the others continue.

    Args:
        ann: the data set (videos and ``nframes``), e.g. from :func:`stad.data.act.load_act`.
        root: the ACT root holding ``rgb-images``.
        method: ``"dis"`` or ``"farneback"`` (see :func:`compute_flow`).
        bound: flow (pixels per frame) mapped to the ends of the 0..255 range (default 20, as ACT).
        overwrite: recompute videos whose flow is complete.
        progress: show a tqdm bar over videos.

    Returns:
        A :class:`FlowResult`.
    """
    _check_method(method)
    _check_bound(bound)
    root = Path(root)
    result = FlowResult()
    for video in tqdm(ann.videos, desc="flow", unit="video", disable=not progress):
        nframes = int(ann.nframes[video])
        if not overwrite and _flow_complete(root, video, nframes):
            result.skipped.append(video)
            continue
        final_dir = act_frame_path(root, video, 1, "flow").parent
        partial_dir = final_dir.with_name(final_dir.name + PARTIAL_SUFFIX)
        if partial_dir.exists():
            shutil.rmtree(partial_dir)
        try:
            _write_video_flow(root, video, nframes, partial_dir, method=method, bound=bound)
        except (StadError, ValueError, OSError, cv2.error) as err:
            shutil.rmtree(partial_dir, ignore_errors=True)
            result.failed[video] = str(err)
            continue
        if final_dir.exists():
            shutil.rmtree(final_dir)
        partial_dir.rename(final_dir)
        result.written.append(video)
        result.frames[video] = nframes
    return result
