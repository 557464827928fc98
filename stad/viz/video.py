"""Write and read MP4 videos with PyAV.

Frames are ``(H, W, 3)`` uint8 **RGB**. The encoder is H.264 (``libx264``) when the installed PyAV wheel has it,
else MPEG-4 Part 2 (``mpeg4``); both are written as ``yuv420p``, which needs an even width and height, so odd
sizes are padded by one black row/column at the bottom/right.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stad.errors import StadError

_PREFERRED_CODECS = ("libx264", "mpeg4")


def available_encoder() -> str:
    """The best MP4 video encoder this PyAV build has: ``"libx264"`` if present, else ``"mpeg4"``."""
    for name in _PREFERRED_CODECS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - PyAV raises several types for a missing codec
            continue
        return name
    raise StadError(f"this PyAV build has none of the encoders {list(_PREFERRED_CODECS)}")


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, fps: int = 25, codec: str | None = None,
                quality: int = 23) -> Path:
    """Encode RGB frames to an MP4 file.

    Args:
        path: output file (folders are created).
        frames: ``(H, W, 3)`` uint8 RGB frames of one size (an array ``(T, H, W, 3)`` works too).
        fps: frame rate.
        codec: encoder name; default :func:`available_encoder`.
        quality: libx264 CRF (lower is better), or for mpeg4 the fixed quantiser scale ``qscale`` = quality // 8 + 1.

    Returns:
        The path written. An empty frame sequence or a bad frame is an error (and leaves no file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or available_encoder()
    count = 0
    container = av.open(str(path), mode="w")
    try:
        stream = None
        size: tuple[int, int] | None = None
        for frame in frames:
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise StadError(f"{path}: frame {count + 1} must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
            if size is None:
                size = frame.shape[:2]
                stream = container.add_stream(codec, rate=Fraction(fps))
                stream.width, stream.height = size[1] + size[1] % 2, size[0] + size[0] % 2
                stream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    stream.options = {"crf": str(quality), "preset": "veryfast"}
                else:
                    stream.options = {"qscale": str(quality // 8 + 1)}
            elif frame.shape[:2] != size:
                raise StadError(f"{path}: frame {count + 1} is {frame.shape[:2]}, the first frame was {size}")
            if size[0] % 2 or size[1] % 2:
                frame = np.pad(frame, ((0, size[0] % 2), (0, size[1] % 2), (0, 0)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is None:
            raise StadError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    except BaseException:
        container.close()
        path.unlink(missing_ok=True)  # no half-written file
        raise
    container.close()
    return path


def read_video(path: str | Path) -> np.ndarray:
    """Decode a video file to ``(T, H, W, 3)`` uint8 RGB (all frames)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise StadError(f"{path}: no video frames decoded")
    return np.stack(frames)
