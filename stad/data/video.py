"""Video decoding with PyAV and frame extraction into the AVA / ACT JPEG layouts.

Works on containers (MP4, AVI, MKV, WebM ...) and on raw elementary streams such as the UCF101-24
demo clips of YOWOv2 (MPEG-4 Part 2 streams named ``.mp4``), which FFmpeg probes by content.
Frames are ``(H, W, 3)`` uint8 RGB arrays; frame numbers in file names start at 1.

Resampling to a fixed rate (AVA's 30 fps) uses the decoded timestamps, exactly (fractions): output
frame ``k`` (from 0) shows the last decoded frame whose time is ``<= k / fps``, and the video lasts
until the last frame's time plus one source frame period; output times before the first decoded
frame show the first frame. The same input always gives the same frames.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from stad.data.frames import write_jpeg
from stad.errors import StadError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


@dataclass
class DecodedFrame:
    """One decoded frame: ``index`` (from 0, decode order), ``time`` in seconds (exact), ``(H, W, 3)`` RGB ``image``."""

    index: int
    time: Fraction
    image: np.ndarray


def iter_decoded(path: str | Path) -> Iterator[DecodedFrame]:
    """Decode every frame of the first video stream of ``path`` with its presentation time.

    Frames without a timestamp get ``index / rate`` (the stream's average or guessed rate).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        StadError: FFmpeg cannot open or decode the file (the message names it).
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise StadError(f"cannot open video {path}: {err}") from err
    with container:
        if not container.streams.video:
            raise StadError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        time_base = Fraction(stream.time_base) if stream.time_base else None
        index = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is not None and time_base is not None:
                    time = Fraction(frame.pts) * time_base
                elif rate:
                    time = Fraction(index) / Fraction(rate)
                else:
                    raise StadError(f"{path}: frame {index} has no timestamp and the stream no frame rate")
                yield DecodedFrame(index=index, time=time, image=frame.to_ndarray(format="rgb24"))
                index += 1
        except av.error.FFmpegError as err:
            raise StadError(f"cannot decode video {path} after {index} frame(s): {err}") from err
    if index == 0:
        raise StadError(f"{path}: no frame could be decoded")


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every decoded frame of ``path`` as an ``(H, W, 3)`` uint8 RGB array, in presentation order."""
    for decoded in iter_decoded(path):
        yield decoded.image


def count_frames(path: str | Path) -> int:
    """Number of frames of ``path``, by decoding them all (container headers can be wrong)."""
    return sum(1 for _ in iter_decoded(path))


def video_rate(path: str | Path) -> Fraction:
    """The nominal frame rate of the first video stream (average, else guessed, rate)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    except (av.error.FFmpegError, IndexError) as err:
        raise StadError(f"cannot read the frame rate of {path}: {err}") from err
    if not rate:
        raise StadError(f"{path}: the video stream has no frame rate")
    return Fraction(rate)


def resample(frames: Iterator[DecodedFrame], fps: float | Fraction, *, source_rate: Fraction) -> Iterator[np.ndarray]:
    """Frames at a fixed ``fps`` from timestamped ``frames`` (rule in the module docstring).

    Args:
        frames: decoded frames in presentation order.
        fps: output rate; ``Fraction`` or a float (read through its decimal text, so 29.97 is exact).
        source_rate: the source's nominal rate; the last frame lasts ``1 / source_rate``.
    """
    step = Fraction(1) / (Fraction(str(fps)) if not isinstance(fps, Fraction) else fps)
    if step <= 0:
        raise StadError(f"fps must be > 0, got {fps}")
    k = 0
    previous: DecodedFrame | None = None
    for current in frames:
        if previous is not None:
            while k * step < current.time:
                yield previous.image
                k += 1
        previous = current
    if previous is not None:
        end = previous.time + Fraction(1) / source_rate
        while k * step < end:
            yield previous.image
            k += 1


@dataclass
class ExtractResult:
    """Outcome of :func:`extract_frames`: videos written, skipped (already complete) and failed (name -> reason)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)


def find_videos(video_dir: str | Path) -> dict[str, Path]:
    """Video files under ``video_dir`` (recursive): video id (relative path without suffix) -> path."""
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise FileNotFoundError(f"video folder not found: {video_dir}")
    return {
        p.relative_to(video_dir).with_suffix("").as_posix(): p
        for p in sorted(video_dir.rglob("*"))
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
    }


def frame_folder(out_dir: str | Path, video_id: str, *, layout: str) -> Path:
    """Where the frames of ``video_id`` go: ``frames/<id>`` (AVA) or ``rgb-images/<id>`` (ACT)."""
    folders = {"ava": "frames", "act": "rgb-images"}
    if layout not in folders:
        raise StadError(f"unknown layout {layout!r}; expected one of {sorted(folders)}")
    return Path(out_dir) / folders[layout] / video_id


def frame_name(index: int, *, layout: str) -> str:
    """File name of frame ``index`` (from 1): ``img_00001.jpg`` (AVA) or ``00001.jpg`` (ACT)."""
    return f"img_{index:05d}.jpg" if layout == "ava" else f"{index:05d}.jpg"


def extract_video(path: str | Path, folder: str | Path, *, layout: str, fps: float | None, quality: int = 95) -> int:
    """Write the frames of one video into ``folder`` as JPEGs; returns the number written.

    The frames go to a sibling temporary folder first that is renamed to ``folder`` once complete, so
    an existing ``folder`` always holds a whole video. ``fps`` None keeps every decoded frame.
    """
    folder = Path(folder)
    partial = folder.with_name(f".{folder.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)  # left over by an interrupted run
    partial.mkdir(parents=True)
    try:
        decoded = iter_decoded(path)
        images = (d.image for d in decoded) if fps is None else resample(decoded, fps, source_rate=video_rate(path))
        count = 0
        for count, image in enumerate(images, start=1):
            write_jpeg(partial / frame_name(count, layout=layout), image, quality=quality)
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return count


def extract_frames(
    video_dir: str | Path,
    out_dir: str | Path,
    *,
    layout: str = "ava",
    fps: float | None = 30.0,
    quality: int = 95,
    progress: bool = True,
) -> ExtractResult:
    """Extract the frames of every video under ``video_dir`` into ``out_dir`` (resumable).

    Args:
        video_dir: folder of video files (searched recursively; the id is the relative path
            without suffix, e.g. ``Basketball/v_Basketball_g01_c01``).
        out_dir: root of the frame layout: ``frames/<id>/img_%05d.jpg`` (``layout="ava"``) or
            ``rgb-images/<id>/%05d.jpg`` (``layout="act"``).
        layout: ``"ava"`` or ``"act"``.
        fps: output rate (timestamp resampling); None keeps every decoded frame.
        quality: JPEG quality.
        progress: show a tqdm progress bar over videos.

    Returns:
        Which videos were written, skipped (their folder already exists, i.e. is complete) and
        failed (id -> error); a failed video leaves no folder and the others continue.
    """
    from tqdm import tqdm

    frame_folder(out_dir, "", layout=layout)  # rejects an unknown layout before any work
    if fps is not None and fps <= 0:
        raise StadError(f"fps must be > 0, got {fps}")
    videos = find_videos(video_dir)
    result = ExtractResult()
    for video_id, path in tqdm(videos.items(), desc="videos", unit="video", disable=not progress):
        folder = frame_folder(out_dir, video_id, layout=layout)
        if folder.is_dir():
            result.skipped.append(video_id)
            continue
        try:
            result.frames[video_id] = extract_video(path, folder, layout=layout, fps=fps, quality=quality)
        except (ValueError, OSError) as err:  # StadError is a ValueError; one bad video must not stop the others
            result.failed[video_id] = str(err)
            continue
        result.written.append(video_id)
    return result
