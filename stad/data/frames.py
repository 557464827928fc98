"""Frame stores: JPEG folders in the ACT and AVA layouts, video files (PyAV), cameras.

Layouts (frames numbered from 1):

* ACT: ``<root>/rgb-images/<video>/%05d.jpg`` and ``<root>/brox-images/<video>/%05d.jpg`` (flow);
* AVA: ``<root>/frames/<video_id>/img_%05d.jpg`` at 30 fps.

Images are handled as ``(H, W, 3)`` uint8 arrays in **RGB** order.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stad.errors import StadError

ACT_STREAMS = {"rgb": "rgb-images", "flow": "brox-images"}


def act_frame_path(root: str | Path, video: str, frame: int, stream: str = "rgb", ext: str = "jpg") -> Path:
    """Path of ``frame`` (from 1) of ``video`` in the ACT layout under ``root``."""
    if stream not in ACT_STREAMS:
        raise StadError(f"unknown stream {stream!r}; expected one of {sorted(ACT_STREAMS)}")
    return Path(root) / ACT_STREAMS[stream] / video / f"{frame:05d}.{ext}"


def ava_frame_path(root: str | Path, video_id: str, index: int) -> Path:
    """Path of frame ``index`` (from 1, 30 fps) of ``video_id`` in the AVA layout under ``root``."""
    return Path(root) / "frames" / video_id / f"img_{index:05d}.jpg"


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array; a clear error if it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame not found: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise StadError(f"cannot decode image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """The JPEG bytes of an ``(H, W, 3)`` uint8 RGB array (OpenCV's encoder: deterministic for identical input)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise StadError(f"cannot encode a {rgb.shape} image as JPEG")
    return buf.tobytes()


def jpeg_roundtrip(rgb: np.ndarray, quality: int = 95) -> np.ndarray:
    """``rgb`` ``(H, W, 3)`` uint8 as it reads back from :func:`write_jpeg` with ``quality`` (same pixels as
    :func:`read_rgb` of the written file), without touching the disk."""
    bgr = cv2.imdecode(np.frombuffer(encode_jpeg(rgb, quality), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_jpeg(path: str | Path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an ``(H, W, 3)`` uint8 RGB array as JPEG (deterministic for identical input), creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = encode_jpeg(rgb, quality)
    except StadError as error:
        raise StadError(f"cannot encode JPEG for {path}: {error}") from None
    path.write_bytes(data)
