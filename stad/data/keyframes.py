"""The keyframe data layer of STEP and FBIL: frame layouts, clip rules, proposals and the keyframe dataset.

Sources (facts, not code): ``/work/shared/methods/STEP.md`` §2 (frames, clip rule, labels, neighbour
boxes, normalisation, augmentation) and §9, ``/work/shared/methods/FBIL.md`` §2 (ACAR frame layout,
annotation pickle, ``TemporalCenterCrop``). Clean-room: written from those descriptions.

Naming: ``T`` clip frames, ``N`` actors of a keyframe, ``C`` classes, ``P`` proposals, ``B`` batch items,
``S`` seconds of a video. A **keyframe** is ``(video, timestamp)`` with the timestamp in whole seconds.
Frames are numbered from 1 inside each video (see ``VideoFrameIndex``).

Frame layouts (``FrameLayout``: path of frame ``f``, frames of second ``s``)::

    ava    <root>/frames/<video>/img_%05d.jpg     fps frames a second (30), frame 1 = time timestamp_start
                                                  (0: stad synth, whole videos; 900: mmaction2 cut videos)
    step   <root>/frames/<video>/<ts:05d>/*.jpg   one folder per second, any number of frames, sorted by name;
                                                  frame numbers count through the folders in time order
    acar   <root>/<video>/image_%06d.jpg          30 fps, frame 1 = second 900 (ACAR/FBIL)

For the flat layouts (ava, acar) "second ``s``" is the frames of time ``[s, s + 1)``, i.e. frames
``(s - timestamp_start) * fps + 1 .. (s - timestamp_start + 1) * fps``; the keyframe of second ``s``
is its first frame (stad synth: ``s * 30 + 1``; STEP: "the annotation at ts refers to the first frame
of folder ts"). ``detect_layout`` recognises a layout from disk.

Clip rules (``(T,)`` frame numbers for a keyframe; pure numpy underneath)::

    StepClipRule     STEP.md §2: 12 samples a second, linspace(0, n, 12, endpoint=False).astype(int) of the
                     second's n frames; clip = last 6 samples of ts-2, 12 of ts-1, 12 of ts, first 6 of ts+1
                     (36 frames, 12 fps, 3 s); keyframe = clip index 18
    AcarClipRule     FBIL.md §2 TemporalCenterCrop: window of 91 frames centred on the keyframe frame
                     (or the pickle's start_frame/n_frames), centre 64, cyclic fill, every 2nd -> 32 frames;
                     keyframe = clip index 16
    CenteredClipRule the older stad rule: centre ± i * frame_stride (KeyframeClipDataset)

**Edge rule** (our decision, STEP never samples near a video's edge: its keyframes are 902..1798 of
900..1799): a second with no frames on disk contributes copies of the nearest sample *towards the
keyframe*: a missing second before the keyframe repeats the first sample of the next second that has
frames, a missing second after repeats the last sample of the previous one (edge replication at
the sample level). A second with fewer frames is sampled from what it has (STEP's own rule for short
folders). The ACAR rule clamps frame numbers to ``1..nframes`` (edge replication of frames). A
keyframe whose own second has no frames is a ``StadError`` naming the video and timestamp.

Items of ``KeyframeDataset`` (one keyframe clip)::

    clip            (T, 3, H, W) float32   RGB, (pixels - mean) / std (STEP: x * 2 / 255 - 1, in [-1, 1])
    boxes           (N, 4) float32         keyframe boxes, x1, y1, x2, y2 continuous input pixels
    labels          (N, C) float32         multi-hot in label-map order
    person_ids      (N,) int64             -1 without ids
    neighbor_boxes  (N, 2, 4) float32      the same person id's box at ts-1 / ts+1 (STEP's chunks 0 and 2),
                                           input pixels, zeros where not annotated (or cropped away)
    neighbor_valid  (N, 2) bool
    proposals       (P, 4) float32         person proposals, input pixels (only with a proposals mapping)
    proposal_scores (P,) float32
    video, timestamp, center_frame (keyframe frame number), keyframe_index (its clip index),
    frames (T,) int64, orig_size (2,) int64 (H0, W0), affine (4,), scale (2,), num_dropped

Augmentation randomness and worker seeding follow ``stad.data.datasets`` (``default_rng([seed, epoch, i])``).

ACAR/FBIL annotation pickles (FBIL.md §2): ``read_acar_annotations`` (restricted unpickler, every field
checked, optionally against the frames on disk) and ``write_acar_annotations`` (AVA keyframes + proposals →
``(data, idx_to_class)`` in plain containers; ``stad convert ava-to-acar``). ``collate_keyframes`` stacks
clips of one size (STEP); ``collate_keyframes_padded`` zero-pads clips of different sizes to the batch's
largest and records ``pad_ratio`` / ``sizes_before_padding`` (FBIL).
"""

from __future__ import annotations

import csv
import io
import math
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stad.boxes import box_iou
from stad.data.ava import AVARows, LabelMap, read_ava_annotations, read_keyframes
from stad.data.datasets import _AugmentedDataset, _collate, _positive
from stad.data.frames import read_rgb
from stad.data.safe_pickle import safe_load_pickle
from stad.data.transforms import ClipSample, Transform, boxes_from_original
from stad.errors import StadError
from stad.structures import KeyframeLabels
from stad.textio import read_text

LAYOUT_NAMES = ("ava", "step", "acar")
_DIGITS = re.compile(r"\d+")

# --------------------------------------------------------------------------------------------------
# Frame layouts
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VideoFrameIndex:
    """The frames of one video on disk, grouped by second (``S`` seconds that have frames).

    Frame numbers run from 1 in time order: for the flat layouts they are the file numbers, for the
    ``step`` layout they count through the second folders (folder ``ts`` holds frames
    ``first_frames[i] .. first_frames[i] + counts[i] - 1``).

    Attributes:
        video: the video id.
        seconds: ``(S,)`` int64 ascending seconds with at least one frame.
        first_frames: ``(S,)`` int64 frame number of each second's first frame.
        counts: ``(S,)`` int64 frames in each second (>= 1).
        nframes: the highest frame number.
        fps, timestamp_start: the flat layouts' time mapping (``None`` for ``step``).
        folders, files: the ``step`` layout's folder names and sorted file names per second.
    """

    video: str
    seconds: np.ndarray
    first_frames: np.ndarray
    counts: np.ndarray
    nframes: int
    fps: int | None = None
    timestamp_start: int | None = None
    folders: tuple[str, ...] | None = None
    files: tuple[tuple[str, ...], ...] | None = None

    def _position(self, second: int) -> int:
        i = int(np.searchsorted(self.seconds, second))
        return i if i < len(self.seconds) and int(self.seconds[i]) == second else -1

    def has_second(self, second: int) -> bool:
        """Whether second ``second`` has at least one frame."""
        return self._position(int(second)) >= 0

    def second_frames(self, second: int) -> np.ndarray:
        """``(n,)`` int64 frame numbers of second ``second`` (empty when it has none)."""
        i = self._position(int(second))
        if i < 0:
            return np.zeros(0, np.int64)
        return np.arange(self.first_frames[i], self.first_frames[i] + self.counts[i], dtype=np.int64)

    def keyframe_frame(self, second: int) -> int:
        """The keyframe of second ``second``: its first frame.

        Raises:
            StadError: the second has no frames (naming the video and timestamp).
        """
        i = self._position(int(second))
        if i < 0:
            raise StadError(f"keyframe {self.video},{int(second)}: no frames of second {int(second)} on disk {self._span()}")
        return int(self.first_frames[i])

    def nominal_frame(self, second: int) -> int:
        """Frame number of time ``second`` by the layout's clock: ``(second - timestamp_start) * fps + 1``
        for the flat layouts (may lie outside ``1..nframes``), ``keyframe_frame`` for ``step``."""
        if self.fps is None:
            return self.keyframe_frame(second)
        return (int(second) - int(self.timestamp_start or 0)) * int(self.fps) + 1

    def _span(self) -> str:
        if len(self.seconds) == 0:
            return "(the video has no frames)"
        return f"(the video has seconds {int(self.seconds[0])}..{int(self.seconds[-1])}, {self.nframes} frames)"


class FrameLayout:
    """Where a keyframe data set keeps its frames; subclasses say how (see the module docstring).

    ``index(video)`` lists the video's frames once and caches the result (the last 64 videos).
    """

    name = "layout"
    _CACHE = 64

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._cache: OrderedDict[str, VideoFrameIndex] = OrderedDict()

    def video_folder(self, video: str) -> Path:
        """The folder holding ``video``'s frames."""
        raise NotImplementedError

    def frame_path(self, video: str, frame: int, index: VideoFrameIndex | None = None) -> Path:
        """Path of frame ``frame`` (from 1) of ``video``."""
        raise NotImplementedError

    def _build_index(self, video: str) -> VideoFrameIndex:
        raise NotImplementedError

    def index(self, video: str) -> VideoFrameIndex:
        """The ``VideoFrameIndex`` of ``video``.

        Raises:
            FileNotFoundError: the video's folder is missing or holds no frames of this layout.
        """
        if video in self._cache:
            self._cache.move_to_end(video)
            return self._cache[video]
        built = self._build_index(video)
        self._cache[video] = built
        while len(self._cache) > self._CACHE:
            self._cache.popitem(last=False)
        return built

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()  # DataLoader workers rebuild what they need
        return state


def _printf_regex(pattern: str) -> re.Pattern[str]:
    """Regex with one group for the number of a printf file pattern such as ``img_%05d.jpg``."""
    match = re.fullmatch(r"(.*?)%0?\d*d(.*)", pattern)
    if match is None or "%" in match.group(1) + match.group(2):
        raise StadError(f"frame file pattern must hold one integer field like 'img_%05d.jpg', got {pattern!r}")
    return re.compile(re.escape(match.group(1)) + r"(\d+)" + re.escape(match.group(2)))


def flat_frame_index(video: str, nframes: int, *, fps: int, timestamp_start: int = 0) -> VideoFrameIndex:
    """The index of a flat layout's frames ``1 .. nframes``: second ``timestamp_start + s`` holds frames
    ``s * fps + 1 ..`` (at most ``fps`` of them)."""
    seconds = timestamp_start + np.arange((int(nframes) - 1) // fps + 1, dtype=np.int64)  # [S]
    first = (seconds - timestamp_start) * fps + 1
    counts = np.minimum(fps, int(nframes) - first + 1)
    return VideoFrameIndex(video, seconds, first, counts, int(nframes), fps=fps, timestamp_start=timestamp_start)


class FlatFrameLayout(FrameLayout):
    """Frames ``<root>/<folder>/<pattern % f>`` numbered from 1 at ``fps``, frame 1 = time ``timestamp_start``.

    Args:
        root: the data set root.
        name: the layout's name (``"ava"``, ``"acar"`` or your own).
        folder: the video's folder relative to ``root``, with ``{video}`` (e.g. ``"frames/{video}"``).
        pattern: printf file name with one integer field (e.g. ``"img_%05d.jpg"``).
        fps: frames per second, a positive int (default 30).
        timestamp_start: the time of frame 1 in whole seconds (default 0).

    ``nframes`` of a video is its highest file number; a file missing below it is reported
    (FileNotFoundError with its path) when a clip needs it.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        name: str,
        folder: str,
        pattern: str,
        fps: int = 30,
        timestamp_start: int = 0,
    ) -> None:
        super().__init__(root)
        self.name = name
        self.folder = folder
        self.pattern = pattern
        self.fps = _positive("fps", fps)
        if int(timestamp_start) != timestamp_start:
            raise StadError(f"timestamp_start must be whole seconds, got {timestamp_start!r}")
        self.timestamp_start = int(timestamp_start)
        self._regex = _printf_regex(pattern)

    def video_folder(self, video: str) -> Path:
        return self.root / self.folder.format(video=video)

    def frame_path(self, video: str, frame: int, index: VideoFrameIndex | None = None) -> Path:
        return self.video_folder(video) / (self.pattern % int(frame))

    def _build_index(self, video: str) -> VideoFrameIndex:
        folder = self.video_folder(video)
        if not folder.is_dir():
            raise FileNotFoundError(f"frame folder not found: {folder} ({self.name} layout: {folder}/{self.pattern})")
        nframes = 0
        with os.scandir(folder) as entries:
            for entry in entries:
                match = self._regex.fullmatch(entry.name)
                if match is not None:
                    nframes = max(nframes, int(match.group(1)))
        if nframes < 1:
            raise FileNotFoundError(f"no {self.pattern} frames in {folder}")
        return flat_frame_index(video, nframes, fps=self.fps, timestamp_start=self.timestamp_start)

    def __repr__(self) -> str:
        return f"FlatFrameLayout({str(self.root)!r}, name={self.name!r}, {self.folder}/{self.pattern}, fps={self.fps}, start={self.timestamp_start})"


class StepFrameLayout(FrameLayout):
    """STEP's per-second folders ``<root>/frames/<video>/<ts:05d>/*.jpg`` (STEP.md §2).

    Folder ``ts`` holds the frames of the second starting at ``ts`` (any number, sorted by file name);
    folders with non-digit names and empty folders are ignored (an empty second counts as missing).
    """

    name = "step"

    def __init__(self, root: str | Path, *, extension: str = ".jpg") -> None:
        super().__init__(root)
        self.extension = extension

    def video_folder(self, video: str) -> Path:
        return self.root / "frames" / video

    def _build_index(self, video: str) -> VideoFrameIndex:
        folder = self.video_folder(video)
        if not folder.is_dir():
            raise FileNotFoundError(f"frame folder not found: {folder} (step layout: {folder}/<ts:05d>/*{self.extension})")
        found: list[tuple[int, str, tuple[str, ...]]] = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir() and _DIGITS.fullmatch(entry.name):
                    with os.scandir(Path(entry.path)) as inner:
                        names = tuple(sorted(e.name for e in inner if e.name.endswith(self.extension) and e.is_file()))
                    if names:
                        found.append((int(entry.name), entry.name, names))
        if not found:
            raise FileNotFoundError(f"no <ts:05d>/*{self.extension} second folders with frames in {folder}")
        found.sort()
        seconds = np.array([s for s, _, _ in found], dtype=np.int64)
        if len(np.unique(seconds)) != len(seconds):
            raise StadError(f"{folder}: two folders name the same second (e.g. '902' and '00902')")
        counts = np.array([len(names) for _, _, names in found], dtype=np.int64)
        first = np.concatenate([[1], 1 + np.cumsum(counts)[:-1]]).astype(np.int64)
        return VideoFrameIndex(
            video,
            seconds,
            first,
            counts,
            int(counts.sum()),
            folders=tuple(name for _, name, _ in found),
            files=tuple(names for _, _, names in found),
        )

    def frame_path(self, video: str, frame: int, index: VideoFrameIndex | None = None) -> Path:
        index = self.index(video) if index is None else index
        frame = int(frame)
        if not 1 <= frame <= index.nframes:
            raise StadError(f"frame {frame} of {video} is outside 1..{index.nframes} ({self.video_folder(video)})")
        i = int(np.searchsorted(index.first_frames, frame, side="right")) - 1
        assert index.folders is not None and index.files is not None
        return self.video_folder(video) / index.folders[i] / index.files[i][frame - int(index.first_frames[i])]

    def __repr__(self) -> str:
        return f"StepFrameLayout({str(self.root)!r})"


def ava_layout(root: str | Path, *, fps: int = 30, timestamp_start: int = 0) -> FlatFrameLayout:
    """The ``ava`` layout ``<root>/frames/<video>/img_%05d.jpg`` (stad synth, mmaction2; ``stad.data.frames.ava_frame_path``)."""
    return FlatFrameLayout(root, name="ava", folder="frames/{video}", pattern="img_%05d.jpg", fps=fps, timestamp_start=timestamp_start)


def acar_layout(
    root: str | Path, *, fps: int = 30, timestamp_start: int = 900, pattern: str = "image_%06d.jpg"
) -> FlatFrameLayout:
    """The ``acar`` layout ``<root>/<video>/image_%06d.jpg``, 30 fps, frame 1 = second 900 (FBIL.md §2).

    ``pattern`` can follow an ACAR pickle's ``format_str`` (``AcarAnnotations.format_strs``).
    """
    return FlatFrameLayout(root, name="acar", folder="{video}", pattern=pattern, fps=fps, timestamp_start=timestamp_start)


def step_layout(root: str | Path) -> StepFrameLayout:
    """The ``step`` layout ``<root>/frames/<video>/<ts:05d>/*.jpg`` (STEP.md §2)."""
    return StepFrameLayout(root)


def _expected_layouts(root: Path, video: str) -> str:
    return (
        f"ava: {root / 'frames' / video}/img_%05d.jpg; step: {root / 'frames' / video}/<ts:05d>/*.jpg; "
        f"acar: {root / video}/image_%06d.jpg"
    )


def detect_layout(root: str | Path, video: str) -> str:
    """Recognise the frame layout of ``video`` under ``root`` from the files on disk.

    Returns:
        ``"ava"``, ``"step"`` or ``"acar"`` (see the module docstring), checked in this order.

    Raises:
        StadError: no layout fits; the message names the folders looked at and the patterns expected.
    """
    root = Path(root)
    ava_regex, acar_regex = _printf_regex("img_%05d.jpg"), _printf_regex("image_%06d.jpg")
    found: list[str] = []
    frames_dir = root / "frames" / video
    if frames_dir.is_dir():
        with os.scandir(frames_dir) as entries:
            for entry in entries:
                if entry.is_file() and ava_regex.fullmatch(entry.name):
                    return "ava"
                if entry.is_dir() and _DIGITS.fullmatch(entry.name):
                    with os.scandir(Path(entry.path)) as inner:
                        if any(e.name.endswith(".jpg") for e in inner):
                            return "step"
        found.append(f"{frames_dir} holds neither img_%05d.jpg files nor <ts:05d>/ folders with .jpg frames")
    else:
        found.append(f"{frames_dir} does not exist")
    acar_dir = root / video
    if acar_dir.is_dir():
        with os.scandir(acar_dir) as entries:
            if any(entry.is_file() and acar_regex.fullmatch(entry.name) for entry in entries):
                return "acar"
        found.append(f"{acar_dir} holds no image_%06d.jpg files")
    else:
        found.append(f"{acar_dir} does not exist")
    raise StadError(
        f"cannot recognise the frame layout of video {video!r} under {root}: {'; '.join(found)}. "
        f"Expected one of: {_expected_layouts(root, video)}"
    )


def make_layout(name: str, root: str | Path, *, fps: int | None = None, timestamp_start: int | None = None) -> FrameLayout:
    """Build a layout by name (``"ava"``, ``"step"``, ``"acar"``), e.g. from a config.

    Args:
        fps, timestamp_start: override the flat layouts' defaults (ava: 30 / 0, acar: 30 / 900); the
            ``step`` layout has no clock and refuses them.
    """
    if name == "ava":
        return ava_layout(root, fps=30 if fps is None else fps, timestamp_start=0 if timestamp_start is None else timestamp_start)
    if name == "acar":
        return acar_layout(root, fps=30 if fps is None else fps, timestamp_start=900 if timestamp_start is None else timestamp_start)
    if name == "step":
        if fps is not None or timestamp_start is not None:
            raise StadError("the step layout has one folder per second: fps and timestamp_start do not apply")
        return step_layout(root)
    raise StadError(f"unknown frame layout {name!r}; expected one of {list(LAYOUT_NAMES)} or 'auto'")


def resolve_layout(
    root: str | Path,
    videos: Sequence[str],
    layout: str = "auto",
    *,
    fps: int | None = None,
    timestamp_start: int | None = None,
) -> FrameLayout:
    """The layout named ``layout``, or with ``"auto"`` the one ``detect_layout`` finds for every video.

    Raises:
        StadError: ``"auto"`` with no videos, a video no layout fits, or videos in different layouts.
    """
    if layout != "auto":
        return make_layout(layout, root, fps=fps, timestamp_start=timestamp_start)
    if not videos:
        raise StadError("layout 'auto' needs at least one video to look at")
    names: dict[str, list[str]] = {}
    for video in videos:
        names.setdefault(detect_layout(root, video), []).append(video)
    if len(names) > 1:
        found = "; ".join(f"{name}: {', '.join(vs[:3])}" for name, vs in sorted(names.items()))
        raise StadError(f"videos under {root} are in different frame layouts ({found}); name the layout")
    return make_layout(next(iter(names)), root, fps=fps, timestamp_start=timestamp_start)


# --------------------------------------------------------------------------------------------------
# Clip rules
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ClipFrames:
    """The frames of one keyframe clip.

    Attributes:
        frames: ``(T,)`` int64 frame numbers (from 1), in clip order.
        keyframe_index: the clip position of the keyframe (STEP: 18, ACAR: 16).
        keyframe_frame: the keyframe's frame number.
    """

    frames: np.ndarray
    keyframe_index: int
    keyframe_frame: int


def step_second_samples(n: int, samples: int = 12) -> np.ndarray:
    """STEP's positions inside a second of ``n`` frames: ``linspace(0, n, samples, endpoint=False).astype(int)``.

    ``n = 30`` gives ``[0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27]``, ``n = 24`` or ``25`` gives
    ``[0, 2, 4, ..., 22]`` (STEP.md §8 fact 12). Returns ``(samples,)`` int64 0-based positions.
    """
    if int(n) < 1:
        raise StadError(f"a second needs at least one frame to sample from, got n={n}")
    return np.linspace(0, int(n), int(samples), endpoint=False).astype(np.int64)


def step_clip_frames(
    timestamp: int,
    seconds: np.ndarray,
    first_frames: np.ndarray,
    counts: np.ndarray,
    *,
    samples_per_second: int = 12,
    before: int = 18,
    after: int = 18,
    video: str = "",
) -> np.ndarray:
    """STEP's clip of keyframe ``timestamp`` as frame numbers (STEP.md §2 "Clip", edge rule of the module).

    Every second ``s`` with ``n`` frames gives the samples ``first_frame(s) + step_second_samples(n)``.
    The clip is the last ``before`` samples of the seconds before ``timestamp`` followed by the first
    ``after`` samples from ``timestamp`` on (defaults: 6 of ts-2, 12 of ts-1, 12 of ts, 6 of ts+1);
    the keyframe (first frame of ``timestamp``) is clip index ``before``. A second without frames
    repeats the nearest sample towards the keyframe (see the module docstring).

    Args:
        timestamp: the keyframe second.
        seconds, first_frames, counts: ``(S,)`` the seconds with frames, their first frame number and
            their frame count (``VideoFrameIndex``).
        samples_per_second: samples per second (default 12).
        before, after: clip samples before the keyframe and from the keyframe on (default 18, 18).
        video: the video id, for the error message.

    Returns:
        ``(before + after,)`` int64 frame numbers.

    Raises:
        StadError: ``timestamp`` has no frames.
    """
    per = {int(s): (int(f), int(c)) for s, f, c in zip(seconds, first_frames, counts) if c > 0}
    timestamp = int(timestamp)
    if timestamp not in per:
        raise StadError(f"keyframe {video},{timestamp}: no frames of second {timestamp} on disk, cannot build its clip")

    def samples(second: int) -> np.ndarray | None:
        if second not in per:
            return None
        first, n = per[second]
        return first + step_second_samples(n, samples_per_second)

    # From the keyframe on: missing seconds repeat the last sample so far.
    right: list[np.ndarray] = []
    total, second = 0, timestamp
    while total < after:
        chunk = samples(second)
        if chunk is None:
            chunk = np.full(samples_per_second, right[-1][-1], np.int64)
        right.append(chunk)
        total += len(chunk)
        second += 1
    # Before the keyframe, walking back: missing seconds repeat the first sample after them.
    left: list[np.ndarray] = []
    total, second = 0, timestamp - 1
    next_first = int(right[0][0])
    while total < before:
        chunk = samples(second)
        if chunk is None:
            chunk = np.full(samples_per_second, next_first, np.int64)
        left.insert(0, chunk)
        next_first = int(chunk[0])
        total += len(chunk)
        second -= 1
    left_frames = np.concatenate(left) if left else np.zeros(0, np.int64)
    return np.concatenate([left_frames[len(left_frames) - before :], np.concatenate(right)[:after]]).astype(np.int64)


def second_index(nframes: int, fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seconds of a video of ``nframes`` frames at ``fps``: ``(S,)`` seconds, their first frame (from 1) and
    their frame count; second ``s`` holds the frames whose time ``(f - 1) / fps`` lies in ``[s, s + 1)``."""
    if nframes < 1 or fps <= 0:
        raise StadError(f"a video needs frames and a positive frame rate, got {nframes} frames at {fps} fps")
    starts = np.ceil(np.arange(int(np.ceil(nframes / fps)) + 1) * fps - 1e-9).astype(np.int64)  # 0-based first frames
    starts = np.minimum(starts, nframes)
    counts = np.diff(starts)
    keep = counts > 0
    return np.flatnonzero(keep).astype(np.int64), starts[:-1][keep] + 1, counts[keep]


def temporal_center_crop(indices: np.ndarray, *, size: int = 64, step: int = 2) -> np.ndarray:
    """ACAR's ``TemporalCenterCrop`` (FBIL.md §2) of a list of frame indices.

    Centre ``c = n // 2``; ``begin = max(0, c - size // 2)``; ``end = min(begin + size, n)``; a window
    shorter than ``size`` is filled by repeating its own elements cyclically; then every ``step``-th.

    Args:
        indices: ``(n,)`` frame numbers (``range(start_frame, start_frame + n_frames)`` in ACAR).
        size, step: window length and stride (ACAR's config: 64, 2).

    Returns:
        ``(ceil(size / step),)`` int64 (32 with the defaults).
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) == 0:
        raise StadError("temporal_center_crop needs at least one frame index")
    n = len(indices)
    begin = max(0, n // 2 - size // 2)
    window = indices[begin : min(begin + size, n)]
    return np.resize(window, size)[::step].astype(np.int64)  # np.resize repeats cyclically


class StepClipRule:
    """STEP's clip rule (``step_clip_frames``): 36 frames at 12 fps, keyframe at clip index 18.

    Args:
        samples_per_second, before, after: see ``step_clip_frames`` (defaults 12, 18, 18).
    """

    name = "step"

    def __init__(self, *, samples_per_second: int = 12, before: int = 18, after: int = 18) -> None:
        self.samples_per_second = _positive("samples_per_second", samples_per_second)
        if int(before) < 0 or int(after) < 1:
            raise StadError(f"before must be >= 0 and after >= 1, got {before}, {after}")
        self.before, self.after = int(before), int(after)

    @property
    def num_frames(self) -> int:
        return self.before + self.after

    def __call__(self, index: VideoFrameIndex, timestamp: int) -> ClipFrames:
        frames = step_clip_frames(
            timestamp,
            index.seconds,
            index.first_frames,
            index.counts,
            samples_per_second=self.samples_per_second,
            before=self.before,
            after=self.after,
            video=index.video,
        )
        return ClipFrames(frames, self.before, int(frames[self.before]))

    def __repr__(self) -> str:
        return f"StepClipRule({self.before}+{self.after} samples, {self.samples_per_second}/s)"


class AcarClipRule:
    """ACAR/FBIL's clip rule (FBIL.md §2): ``temporal_center_crop`` of a window around the keyframe.

    The window is ``windows[(video, timestamp)] = (start_frame, n_frames)`` when given (an ACAR
    pickle's entries, ``AcarAnnotations.windows``), else ``span`` frames centred on the keyframe
    frame ``k``: ``k - span // 2 .. k + span // 2`` (ACAR's converter: ``mid - 45``, 91 frames). Frame
    numbers outside ``1..nframes`` are clamped (edge replication). With the defaults the clip is
    ``k - 32, k - 30, ..., k + 30`` (32 frames) and the keyframe is clip index 16.

    Args:
        size, step: ``temporal_center_crop``'s window and stride (64, 2).
        span: default window length in frames (91).
        windows: optional per-keyframe ``(start_frame, n_frames)``.
    """

    name = "acar"

    def __init__(
        self,
        *,
        size: int = 64,
        step: int = 2,
        span: int = 91,
        windows: Mapping[tuple[str, int], tuple[int, int]] | None = None,
    ) -> None:
        self.size = _positive("size", size)
        self.step = _positive("step", step)
        self.span = _positive("span", span)
        self.windows = dict(windows or {})

    @property
    def num_frames(self) -> int:
        return len(range(0, self.size, self.step))

    def __call__(self, index: VideoFrameIndex, timestamp: int) -> ClipFrames:
        keyframe = index.keyframe_frame(timestamp)
        start, n = self.windows.get((index.video, int(timestamp)), (keyframe - self.span // 2, self.span))
        if int(n) < 1:
            raise StadError(f"keyframe {index.video},{int(timestamp)}: window of {n} frames")
        crop = temporal_center_crop(np.arange(int(start), int(start) + int(n)), size=self.size, step=self.step)
        position = int(np.argmin(np.abs(crop - keyframe)))  # where the keyframe (or the nearest frame) sits
        return ClipFrames(np.clip(crop, 1, index.nframes), position, keyframe)

    def __repr__(self) -> str:
        return f"AcarClipRule(size={self.size}, step={self.step}, span={self.span}, {len(self.windows)} windows)"


class CenteredClipRule:
    """Stad's earlier rule: ``num_frames`` frames ``c + (i - num_frames // 2) * frame_stride`` around
    the keyframe frame ``c`` (``VideoFrameIndex.nominal_frame``, clamped to ``1..nframes``), clamped to
    ``1..nframes``; the keyframe is clip index ``num_frames // 2``."""

    name = "centered"

    def __init__(self, *, num_frames: int = 32, frame_stride: int = 2) -> None:
        self.num_frames = _positive("num_frames", num_frames)
        self.frame_stride = _positive("frame_stride", frame_stride)

    def __call__(self, index: VideoFrameIndex, timestamp: int) -> ClipFrames:
        center = int(np.clip(index.nominal_frame(timestamp), 1, index.nframes))
        offsets = (np.arange(self.num_frames) - self.num_frames // 2) * self.frame_stride
        frames = np.clip(center + offsets, 1, index.nframes).astype(np.int64)
        return ClipFrames(frames, self.num_frames // 2, center)

    def __repr__(self) -> str:
        return f"CenteredClipRule(num_frames={self.num_frames}, frame_stride={self.frame_stride})"


ClipRule = StepClipRule | AcarClipRule | CenteredClipRule

# --------------------------------------------------------------------------------------------------
# Keyframe lists
# --------------------------------------------------------------------------------------------------


def list_keyframes(layout: FrameLayout, video: str, *, first: int | None = None, last: int | None = None) -> np.ndarray:
    """The keyframe timestamps of ``video`` found on disk: the seconds with frames in ``[first, last]``.

    Examples: STEP/AVA evaluates ``first=902, last=1798``; stad synth annotates seconds ``>= 1``.

    Returns:
        ``(K,)`` int64 ascending timestamps.
    """
    seconds = layout.index(video).seconds
    keep = np.ones(len(seconds), bool)
    if first is not None:
        keep &= seconds >= int(first)
    if last is not None:
        keep &= seconds <= int(last)
    return seconds[keep].astype(np.int64)


def enumerate_keyframes(
    layout: FrameLayout,
    videos: Sequence[str],
    annotations: Sequence[KeyframeLabels] = (),
    *,
    num_classes: int,
    first: int | None = None,
    last: int | None = None,
    excluded: set[tuple[str, int]] | None = None,
) -> list[KeyframeLabels]:
    """Every keyframe of ``videos`` for testing (STEP's ``foreground_only=False``): labelled or not.

    The keyframes are the seconds with frames on disk in ``[first, last]`` (``list_keyframes``) plus
    the annotated keyframes of these videos in that range; annotated ones carry their actors, the
    others have zero actors (``boxes`` ``(0, 4)``, ``labels`` ``(0, num_classes)``). ``excluded``
    keyframes are left out.

    Returns:
        ``KeyframeLabels`` sorted by (video, timestamp).
    """
    wanted = set(videos)
    by_key = {(k.video, int(k.timestamp)): k for k in annotations if k.video in wanted}
    excluded = excluded or set()
    out: list[KeyframeLabels] = []
    for video in sorted(wanted):
        stamps = set(list_keyframes(layout, video, first=first, last=last).tolist())
        stamps |= {
            ts for v, ts in by_key if v == video and (first is None or ts >= first) and (last is None or ts <= last)
        }
        for ts in sorted(stamps):
            if (video, ts) in excluded:
                continue
            known = by_key.get((video, ts))
            out.append(known if known is not None else _empty_keyframe(video, ts, num_classes))
    return out


def _empty_keyframe(video: str, timestamp: int, num_classes: int) -> KeyframeLabels:
    return KeyframeLabels(
        video=video,
        timestamp=int(timestamp),
        boxes=np.zeros((0, 4), np.float64),
        labels=np.zeros((0, num_classes), bool),
        person_ids=np.zeros(0, np.int64),
    )


def foreground_keyframes(keyframes: Sequence[KeyframeLabels]) -> list[KeyframeLabels]:
    """The keyframes with at least one actor (STEP's training list, ``foreground_only=True``)."""
    return [k for k in keyframes if len(k.boxes) > 0]


def read_keyframe_annotations(
    annotations: str | Path | AVARows,
    labelmap: LabelMap,
    *,
    excluded: set[tuple[str, int]] | None = None,
) -> list[KeyframeLabels]:
    """``stad.data.ava.read_keyframes`` plus a check that the label map fits the annotations.

    Action ids missing from the label map add no label (the AVA protocol: e.g. the 80-class CSV with
    the 60-class map); but when **no** action id of the file is in the map, the map is the wrong one.

    Raises:
        StadError: zero overlap between the file's action ids and the label map (both listed).
    """
    rows = annotations if isinstance(annotations, AVARows) else read_ava_annotations(annotations)
    if len(rows) and not np.any(labelmap.index_of(rows.action_id) >= 0):
        file_ids = np.unique(rows.action_id).tolist()
        raise StadError(
            f"{rows.path or 'annotations'}: none of its action ids {_few(file_ids)} is in the label map "
            f"(ids {_few(labelmap.ids)}); is it the label map of this data set?"
        )
    return read_keyframes(rows, labelmap, excluded=excluded)


def _few(values: Sequence[Any], limit: int = 8) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}] ({len(values)})"


def neighbor_table(annotations: Sequence[KeyframeLabels]) -> dict[tuple[str, int], dict[int, np.ndarray]]:
    """``(video, timestamp) -> {person_id: (4,) normalised box}`` for the persons with an id (>= 0)."""
    table: dict[tuple[str, int], dict[int, np.ndarray]] = {}
    for keyframe in annotations:
        boxes = np.asarray(keyframe.boxes, dtype=np.float64).reshape(-1, 4)
        persons = {int(p): boxes[i] for i, p in enumerate(np.asarray(keyframe.person_ids).reshape(-1)) if p >= 0}
        if persons:
            table.setdefault((keyframe.video, int(keyframe.timestamp)), {}).update(persons)
    return table


def neighbor_boxes(
    keyframe: KeyframeLabels,
    table: Mapping[tuple[str, int], Mapping[int, np.ndarray]],
    offsets: Sequence[int] = (-1, 1),
) -> tuple[np.ndarray, np.ndarray]:
    """The same person's box at ``timestamp + offset`` for each actor (STEP's GT chunks 0 and 2).

    Returns:
        ``(N, len(offsets), 4)`` float64 normalised boxes (zeros where missing) and ``(N, len(offsets))``
        bool validity; actors without a person id (-1) have no neighbours.
    """
    person_ids = np.asarray(keyframe.person_ids).reshape(-1)
    boxes = np.zeros((len(person_ids), len(offsets), 4), np.float64)
    valid = np.zeros((len(person_ids), len(offsets)), bool)
    for j, offset in enumerate(offsets):
        persons = table.get((keyframe.video, int(keyframe.timestamp) + int(offset)), {})
        for n, pid in enumerate(person_ids.tolist()):
            if pid >= 0 and pid in persons:
                boxes[n, j] = persons[pid]
                valid[n, j] = True
    return boxes, valid


# --------------------------------------------------------------------------------------------------
# Person proposals: CSV, ACAR/FBIL annotation pickles, checks
# --------------------------------------------------------------------------------------------------


def read_proposals_csv(path: str | Path) -> dict[tuple[str, int], np.ndarray]:
    """Read a proposals CSV ``video_id,timestamp,x1,y1,x2,y2[,score]`` (no header, boxes normalised to [0, 1]).

    A 6-column row has score 1.0. Rows of one keyframe are gathered in file order.

    Returns:
        ``(video_id, second) -> (P, 5)`` float64 ``x1, y1, x2, y2, score``.

    Raises:
        FileNotFoundError: no file. StadError: a row with a wrong column count or value (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"proposals CSV not found: {path}")
    grouped: dict[tuple[str, int], list[list[float]]] = {}
    reader = csv.reader(io.StringIO(read_text(path, what="a proposals CSV")))
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        line = reader.line_num
        if len(row) not in (6, 7) or not row[0]:
            raise StadError(f"{path} line {line}: expected 'video_id,timestamp,x1,y1,x2,y2[,score]', got {','.join(row)!r}")
        try:
            ts = int(row[1])
        except ValueError:
            raise StadError(f"{path} line {line}: timestamp must be an integer, got {row[1]!r}") from None
        try:
            values = [float(v) for v in row[2:]] + ([1.0] if len(row) == 6 else [])
        except ValueError:
            raise StadError(f"{path} line {line}: box and score must be numbers, got {','.join(row[2:])!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise StadError(f"{path} line {line}: non-finite value in {','.join(row[2:])!r}")
        grouped.setdefault((row[0], ts), []).append(values)
    return {key: np.asarray(rows, dtype=np.float64).reshape(-1, 5) for key, rows in grouped.items()}


def write_proposals_csv(path: str | Path, proposals: Mapping[tuple[str, int], np.ndarray], *, decimals: int | None = None) -> None:
    """Write ``(video_id, second) -> (P, 5)`` normalised proposals as a header-less CSV (timestamps ``%04d``).

    ``decimals=None`` writes the shortest exact repr of each value.
    """
    lines: list[str] = []
    for (video, second), boxes in sorted(proposals.items()):
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            continue
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise StadError(f"proposals of ({video!r}, {second}) must be (P, 5) [x1, y1, x2, y2, score], got {boxes.shape}")
        for values in boxes.tolist():
            text = [repr(v) if decimals is None else f"{v:.{decimals}f}" for v in values]
            lines.append(",".join([video, f"{int(second):04d}", *text]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def check_proposal_videos(
    proposals: Mapping[tuple[str, int], np.ndarray], videos: Sequence[str] | set[str], *, source: str = "proposals"
) -> None:
    """Fail when the proposals name videos outside ``videos`` (usually the wrong file or split).

    Raises:
        StadError: listing up to 5 unknown videos and how many there are.
    """
    known = set(videos)
    unknown = sorted({video for video, _ in proposals} - known)
    if unknown:
        raise StadError(
            f"{source}: {len(unknown)} video(s) are not in the data set ({len(known)} videos), e.g. "
            f"{', '.join(unknown[:5])}; use the proposals of this split, or allow extra videos"
        )


def _proposal_array(value: Any, where: str) -> np.ndarray:
    boxes = np.asarray(value, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 5), np.float64)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
        raise StadError(f"{where}: proposals must be (P, 5) [x1, y1, x2, y2, score] or (P, 4), got {boxes.shape}")
    if boxes.shape[1] == 4:
        boxes = np.concatenate([boxes, np.ones((len(boxes), 1))], axis=1)
    if not np.isfinite(boxes).all():
        raise StadError(f"{where}: non-finite proposal values")
    return boxes


# FBIL.md §2: an ACAR pickle entry's frame window is start_frame = keyframe - 45, n_frames = 91 ([I], a third-party
# converter that mimics the format); format_str of ACAR's own frame extraction.
ACAR_SPAN = 91
ACAR_FORMAT_STR = "image_%06d.jpg"
# Normalised box coordinates may exceed [0, 1] by this much (float rounding of a detector's output) and still be read.
ACAR_BOX_TOLERANCE = 1e-3


@dataclass
class AcarAnnotations:
    """An ACAR/FBIL annotation pickle read into stad's records (FBIL.md §2).

    Attributes:
        keyframes: one ``KeyframeLabels`` per entry (sorted by video, time): the boxes with at least
            one label are its actors (``labels`` ``(N, C)`` over ``labelmap``); an entry without
            labelled boxes (val pickles: detector boxes only) has zero actors. With
            ``read_acar_annotations(..., keep_unlabelled=True)`` every box is an actor (FBIL's RoIs:
            an unlabelled box is a negative with an all-zero row).
        proposals: ``(video, time) -> (P, 5)`` every box of the entry (labelled or not), normalised,
            score 1.0 (the pickles carry no score).
        labelmap: the classes: ``idx_to_class`` ids and names (or the ``labelmap`` given to the reader).
        windows: ``(video, time) -> (start_frame, n_frames)``, for ``AcarClipRule(windows=...)``.
        format_strs: the distinct ``format_str`` file patterns (e.g. ``{"image_%06d.jpg"}``).
        midframes: ``(video, time) -> midframe`` of the entries that carry one (the keyframe's frame number).
    """

    keyframes: list[KeyframeLabels]
    proposals: dict[tuple[str, int], np.ndarray]
    labelmap: LabelMap
    windows: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    format_strs: set[str] = field(default_factory=set)
    midframes: dict[tuple[str, int], int] = field(default_factory=dict)


def _acar_int(value: Any, where: str, name: str) -> int:
    """``value`` as an int: Python/numpy integers, integral floats, digit strings ("0902") or a one-element array/list."""
    if isinstance(value, (list, tuple, np.ndarray)) and np.size(value) == 1:
        value = np.asarray(value, dtype=object).reshape(-1)[0]
    if isinstance(value, (bool, np.bool_)):
        pass
    elif isinstance(value, (int, np.integer)):
        return int(value)
    elif isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise StadError(f"{where}: {name} must be an integer, got {value!r}")


def _acar_box(value: Any, where: str) -> np.ndarray:
    """A ``(4,)`` float64 normalised box ``x1 < x2``, ``y1 < y2`` inside ``[0, 1]`` (± ``ACAR_BOX_TOLERANCE``)."""
    try:
        box = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        box = None
    if box is None or box.shape != (4,) or not np.isfinite(box).all():
        raise StadError(f"{where} must be 4 finite numbers, got {value!r}")
    if not (box[0] < box[2] and box[1] < box[3]):
        raise StadError(f"{where} {box.tolist()} is degenerate (needs x1 < x2 and y1 < y2)")
    if box.min() < -ACAR_BOX_TOLERANCE or box.max() > 1.0 + ACAR_BOX_TOLERANCE:
        raise StadError(f"{where} {box.tolist()} is outside [0, 1]: ACAR boxes are normalised by the frame size")
    return box


def _acar_label_indices(value: Any, where: str, num_classes: int) -> np.ndarray:
    """A box's ``label``: class indices ``0 .. num_classes - 1`` (a list, an array or one int) → ``(k,)`` int64."""
    if value is None:
        return np.zeros(0, np.int64)
    items = value.reshape(-1).tolist() if isinstance(value, np.ndarray) else value
    if not isinstance(items, (list, tuple)):
        items = [items]
    indices = np.asarray([_acar_int(v, where, "a class index") for v in items], dtype=np.int64)
    if np.any((indices < 0) | (indices >= num_classes)):
        raise StadError(f"{where} {indices.tolist()} outside 0..{num_classes - 1}")
    return indices


def _check_acar_frames(
    where: str, layout: FrameLayout, video: str, time: int, window: tuple[int, int] | None, format_str: str | None,
    midframe: int | None,
) -> None:
    """Fail when an entry does not match the frames on disk (see ``read_acar_annotations``)."""
    pattern = getattr(layout, "pattern", None)
    if format_str is not None and format_str != pattern:
        raise StadError(
            f"{where}: format_str {format_str!r} does not name the frames on disk "
            f"({layout.video_folder(video)}/{pattern}); use the matching layout or rewrite the pickle"
        )
    try:
        index = layout.index(video)
    except FileNotFoundError as err:
        raise StadError(f"{where}: video {video!r}: {err}") from None
    if not index.has_second(time):
        raise StadError(f"{where}: time {time} has no frames in {layout.video_folder(video)} {index._span()}")
    keyframe = index.keyframe_frame(time)
    if window is not None:
        start, n = window
        if not start <= keyframe < start + n:
            raise StadError(
                f"{where}: start_frame {start} / n_frames {n} (frames {start}..{start + n - 1}) miss the keyframe "
                f"of time {time}, frame {keyframe} of {layout.video_folder(video)} (fps {index.fps}, frame 1 = "
                f"second {index.timestamp_start}): the pickle numbers its frames differently"
            )
    if midframe is not None and not 1 <= midframe <= index.nframes:
        raise StadError(f"{where}: midframe {midframe} is outside the frames on disk 1..{index.nframes} ({layout.video_folder(video)})")


def read_acar_annotations(
    path: str | Path,
    *,
    labelmap: LabelMap | None = None,
    layout: FrameLayout | None = None,
    keep_unlabelled: bool = False,
) -> AcarAnnotations:
    """Read an ACAR/FBIL annotation pickle ``(data, idx_to_class)`` (FBIL.md §2) with the safe unpickler.

    ``data`` is a list of dicts with ``video`` (str), ``format_str`` (printf file pattern),
    ``start_frame`` (1-based), ``n_frames``, ``time`` (int seconds), optionally ``midframe`` (the
    keyframe's frame) and ``person_id`` (a list parallel to ``labels``, -1 for detector boxes), and
    ``labels``: a list of dicts with ``bounding_box`` (``[x1, y1, x2, y2]`` normalised) and ``label``
    (class indices into ``idx_to_class``; missing or empty = an unlabelled box), optionally a per-box
    ``person_id``. ``idx_to_class`` is a list of dicts with ``id`` (official AVA id) and ``name``.
    ``video``, ``time`` and ``labels`` are required; ``start_frame`` and ``n_frames`` come together.
    Boxes must be finite, ``x1 < x2``, ``y1 < y2``, inside ``[0, 1]`` (± ``ACAR_BOX_TOLERANCE``).

    Args:
        path: the pickle.
        labelmap: map the classes onto this label map by AVA id (ids it lacks are dropped, as the AVA
            protocol does); default: ``idx_to_class`` itself, in its order.
        layout: the frames on disk (a flat layout, e.g. ``acar_layout(root)``); when given every entry must
            match them: ``format_str`` equals the layout's file pattern, the video's folder exists, second
            ``time`` has frames, the window ``start_frame .. start_frame + n_frames - 1`` holds the keyframe
            frame of ``time`` by the layout's clock, ``midframe`` is a frame on disk. (Frames of the window
            outside ``1..nframes`` are allowed: ``AcarClipRule`` clamps them.)
        keep_unlabelled: make every box an actor, unlabelled ones with an all-zero label row (FBIL trains
            on every box of an entry); default False: only labelled boxes are actors.

    Raises:
        StadError: a refused global (no code from the file runs), a wrong structure or type, a missing
            key, a bad box, a label index outside ``idx_to_class``, a duplicated keyframe or class id, zero
            id overlap with ``labelmap``, or an entry that does not match ``layout``; the message names the
            file, the entry index (with its video and time) and the field.
    """
    path = Path(path)
    if layout is not None and not isinstance(layout, FlatFrameLayout):
        raise StadError(f"ACAR pickles name flat frame files (format_str); layout {layout!r} is not a flat layout")
    raw = safe_load_pickle(path, what="ACAR annotations")
    if not isinstance(raw, (tuple, list)) or len(raw) != 2:
        raise StadError(f"{path}: expected a tuple (data, idx_to_class), got {type(raw).__name__}")
    data, idx_to_class = raw
    if not isinstance(idx_to_class, (list, tuple)) or not idx_to_class:
        raise StadError(f"{path}: idx_to_class must be a non-empty list of {{'id', 'name'}} dicts")
    ids, names = [], []
    for i, cls in enumerate(idx_to_class):
        if not isinstance(cls, dict) or "id" not in cls:
            raise StadError(f"{path}: idx_to_class[{i}] must be a dict with an 'id', got {cls!r}")
        class_id = _acar_int(cls["id"], f"{path}: idx_to_class[{i}]", "id")
        if class_id in ids:
            raise StadError(f"{path}: idx_to_class[{i}]: id {class_id} repeats idx_to_class[{ids.index(class_id)}]")
        ids.append(class_id)
        names.append(str(cls.get("name", cls["id"])))
    own = LabelMap(ids=ids, names=names, label_types=[None] * len(ids))
    target = own if labelmap is None else labelmap
    class_of_index = target.index_of(np.asarray(ids))  # [C_file] position in target, -1 = dropped
    if not np.any(class_of_index >= 0):
        raise StadError(f"{path}: none of the class ids {_few(ids)} is in the label map (ids {_few(target.ids)})")
    if not isinstance(data, (list, tuple)):
        raise StadError(f"{path}: data must be a list of per-keyframe dicts, got {type(data).__name__}")

    keyframes: list[KeyframeLabels] = []
    proposals: dict[tuple[str, int], np.ndarray] = {}
    windows: dict[tuple[str, int], tuple[int, int]] = {}
    midframes: dict[tuple[str, int], int] = {}
    formats: set[str] = set()
    for e, entry in enumerate(data):
        where = f"{path} entry {e}"
        if not isinstance(entry, dict):
            raise StadError(f"{where}: expected a dict, got {type(entry).__name__}")
        missing = [k for k in ("video", "time", "labels") if k not in entry]
        if missing:
            raise StadError(f"{where}: missing key(s) {missing}")
        video = entry["video"]
        if not isinstance(video, str) or not video:
            raise StadError(f"{where}: video must be a non-empty string, got {video!r}")
        time = _acar_int(entry["time"], where, "time")
        where = f"{where} ({video},{time})"
        if (video, time) in proposals:
            raise StadError(f"{where}: keyframe {video},{time} appears twice")
        window = None
        if ("start_frame" in entry) != ("n_frames" in entry):
            given, absent = ("start_frame", "n_frames") if "start_frame" in entry else ("n_frames", "start_frame")
            raise StadError(f"{where}: {given} without {absent} (the frame window needs both)")
        if "start_frame" in entry:
            window = (_acar_int(entry["start_frame"], where, "start_frame"), _acar_int(entry["n_frames"], where, "n_frames"))
            if window[1] < 1:
                raise StadError(f"{where}: n_frames must be >= 1, got {window[1]}")
            windows[(video, time)] = window
        format_str = entry.get("format_str")
        if format_str is not None:
            if not isinstance(format_str, str):
                raise StadError(f"{where}: format_str must be a string like 'image_%06d.jpg', got {format_str!r}")
            try:
                _printf_regex(format_str)
            except StadError as err:
                raise StadError(f"{where}: format_str: {err}") from None
            formats.add(format_str)
        midframe = None
        if entry.get("midframe") is not None:
            midframe = _acar_int(entry["midframe"], where, "midframe")
            if window is not None and not window[0] <= midframe < window[0] + window[1]:
                raise StadError(f"{where}: midframe {midframe} is outside its window start_frame {window[0]} .. {window[0] + window[1] - 1}")
            midframes[(video, time)] = midframe
        if layout is not None:
            _check_acar_frames(where, layout, video, time, window, format_str, midframe)
        box_dicts = entry["labels"]
        if not isinstance(box_dicts, (list, tuple)):
            raise StadError(f"{where}: labels must be a list of {{'bounding_box', 'label'}} dicts, got {type(box_dicts).__name__}")
        entry_pids = entry.get("person_id")
        if entry_pids is not None:
            if not isinstance(entry_pids, (list, tuple, np.ndarray)) or len(entry_pids) != len(box_dicts):
                size = len(entry_pids) if isinstance(entry_pids, (list, tuple, np.ndarray)) else type(entry_pids).__name__
                raise StadError(f"{where}: person_id must be a list with one id per box of labels ({len(box_dicts)}), got {size}")
        boxes, labels, person_ids = [], [], []
        all_boxes = []
        for b, box_dict in enumerate(box_dicts):
            if not isinstance(box_dict, dict) or "bounding_box" not in box_dict:
                raise StadError(f"{where}: labels[{b}] must be a dict with 'bounding_box' and 'label'")
            box = _acar_box(box_dict["bounding_box"], f"{where}: labels[{b}].bounding_box")
            indices = _acar_label_indices(box_dict.get("label"), f"{where}: labels[{b}].label", len(ids))
            all_boxes.append(box)
            if len(indices) == 0 and not keep_unlabelled:
                continue
            multi_hot = np.zeros(len(target), bool)
            mapped = class_of_index[indices]
            multi_hot[mapped[mapped >= 0]] = True
            pid = box_dict.get("person_id")
            if pid is None and entry_pids is not None:
                pid = entry_pids[b]
            boxes.append(box)
            labels.append(multi_hot)
            person_ids.append(-1 if pid is None else _acar_int(pid, f"{where}: labels[{b}]", "person_id"))
        proposals[(video, time)] = _proposal_array(np.asarray(all_boxes).reshape(-1, 4), where)
        keyframes.append(
            KeyframeLabels(
                video=video,
                timestamp=time,
                boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                labels=np.asarray(labels, dtype=bool).reshape(-1, len(target)),
                person_ids=np.asarray(person_ids, dtype=np.int64),
            )
        )
    keyframes.sort(key=lambda k: (k.video, k.timestamp))
    return AcarAnnotations(
        keyframes=keyframes, proposals=proposals, labelmap=target, windows=windows, format_strs=formats, midframes=midframes
    )


@dataclass
class AcarWriteSummary:
    """What ``write_acar_annotations`` wrote.

    Attributes:
        entries: keyframe entries (keyframes with at least one box).
        gt_boxes: ground-truth boxes written (train).
        proposals: proposal boxes written.
        labelled_proposals: of them, the ones that got the labels of a ground-truth box (train).
        skipped_proposals: proposals left out: score below ``min_score``, or no area left inside [0, 1].
        idx_to_class: the class list written (ascending official id).
    """

    entries: int
    gt_boxes: int
    proposals: int
    labelled_proposals: int
    skipped_proposals: int
    idx_to_class: list[dict[str, Any]]


def acar_class_order(labelmap: LabelMap) -> tuple[list[dict[str, Any]], np.ndarray]:
    """ACAR's ``idx_to_class`` for ``labelmap``: its classes in ascending official id (AVA's 60: the 13 pose
    classes, ids 1 and 3-14, come first, as FBIL's pose softmax needs, FBIL.md §5).

    Returns:
        ``idx_to_class`` (``[{"id": int, "name": str}, ...]``) and ``(C,)`` int64: the pickle index of each
        label-map class.
    """
    order = np.argsort(np.asarray(labelmap.ids, dtype=np.int64), kind="stable")  # [C] label-map positions by id
    index_of_class = np.empty(len(order), np.int64)
    index_of_class[order] = np.arange(len(order))
    idx_to_class = [{"id": int(labelmap.ids[c]), "name": str(labelmap.names[c])} for c in order.tolist()]
    return idx_to_class, index_of_class


def _writer_boxes(boxes: np.ndarray, where: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for n, box in enumerate(boxes):
        _acar_box(box, f"{where} box {n}")
    return boxes


def write_acar_annotations(
    path: str | Path,
    keyframes: Sequence[KeyframeLabels],
    labelmap: LabelMap,
    proposals: Mapping[tuple[str, int], np.ndarray] | None = None,
    *,
    # which boxes
    split: str = "train",
    min_score: float = 0.0,
    match_iou: float = 0.5,
    allow_extra_proposal_videos: bool = False,
    # frames: a flat layout on disk, or its clock and file pattern
    layout: FrameLayout | None = None,
    format_str: str | None = None,
    fps: int | None = None,
    timestamp_start: int | None = None,
    span: int = ACAR_SPAN,
) -> AcarWriteSummary:
    """Write an ACAR/FBIL annotation pickle ``(data, idx_to_class)`` (FBIL.md §2) from AVA keyframes and proposals.

    Entries (one per keyframe with at least one box, sorted by video and time)::

        {"video": str, "time": int, "format_str": str, "start_frame": mid - span // 2, "n_frames": span,
         "midframe": mid, "labels": [{"bounding_box": [x1, y1, x2, y2], "label": [class indices]}, ...],
         "person_id": [one int per box, -1 for proposals]}

    with ``mid`` the keyframe's frame number: the first frame of second ``time`` on disk (``layout``), or
    ``(time - timestamp_start) * fps + 1``. Class indices point into ``idx_to_class``, the label map in
    ascending official id (``acar_class_order``). The pickle holds plain Python containers, ints, floats
    and strings only, so ``read_acar_annotations`` (a restricted unpickler) reads it back.

    Boxes per split (ACAR's train pickle = ground truth + detector boxes, its val pickle = detector boxes
    only, FBIL.md §2):

    * ``"train"``: every ground-truth box with its labels and person id, then the proposals scoring
      ``>= min_score``. **Proposal labels (our rule; the original one is unknown, FBIL.md §9)**: a
      proposal gets the labels of the ground-truth box of its keyframe with the highest IoU (continuous,
      normalised coordinates; the first box on ties) when that IoU is ``>= match_iou`` (0.5), else no
      labels (a negative). Its person id is -1.
    * ``"val"``: the proposals scoring ``>= min_score`` only, without labels (person id -1); ``proposals``
      is required, so the entries are the keyframes with proposals (the evaluator scores every keyframe
      with detections, PROTOCOLS.md §B).

    Proposals are clipped to ``[0, 1]``; one left without area is skipped. Ground-truth boxes must be valid
    normalised boxes (``x1 < x2``, ``y1 < y2`` inside [0, 1]).

    Args:
        path: the pickle to write (folders are created).
        keyframes: AVA keyframes (``read_keyframe_annotations``), ``labels`` ``(N, C)`` over ``labelmap``.
        labelmap: the classes (e.g. AVA's 60-class ActivityNet list).
        proposals: ``(video, time) -> (P, 5)`` normalised ``x1, y1, x2, y2, score`` (or ``(P, 4)``, score 1).
        split: ``"train"`` or ``"val"`` (see above).
        min_score: keep proposals scoring at least this (default 0: all; ACAR's files: 0.9 train, 0.85 val).
        match_iou: IoU for a proposal to take a ground-truth box's labels (default 0.5).
        allow_extra_proposal_videos: accept proposals of videos without annotations (default False).
        layout: a flat frame layout (``acar_layout(root)``, ``ava_layout(root)``): ``format_str``, fps and
            frame 1's second come from it and every keyframe's second must have frames on disk.
        format_str, fps, timestamp_start: without ``layout``: the frame file pattern and clock (default
            ACAR's ``image_%06d.jpg``, 30 fps, frame 1 = second 900).
        span: the window length ``n_frames`` (default 91).

    Returns:
        ``AcarWriteSummary``.

    Raises:
        StadError: a bad split, a conflicting layout/clock, invalid ground-truth boxes or label shapes,
            proposals of unknown videos, a keyframe without frames on disk (with ``layout``).
        FileNotFoundError: a video's frame folder is missing (with ``layout``).
    """
    if split not in ("train", "val"):
        raise StadError(f"split must be 'train' (ground truth + labelled proposals) or 'val' (proposals only), got {split!r}")
    if split == "val" and proposals is None:
        raise StadError("split 'val' writes the detector boxes only: give proposals")
    if layout is not None:
        if not isinstance(layout, FlatFrameLayout):
            raise StadError(f"ACAR pickles name flat frame files (format_str); layout {layout!r} is not a flat layout")
        if format_str is not None or fps is not None or timestamp_start is not None:
            raise StadError("give either a frame layout or format_str / fps / timestamp_start, not both")
        format_str, fps, timestamp_start = layout.pattern, layout.fps, layout.timestamp_start
    else:
        format_str = ACAR_FORMAT_STR if format_str is None else str(format_str)
        fps = 30 if fps is None else _positive("fps", fps)
        timestamp_start = 900 if timestamp_start is None else int(timestamp_start)
        _printf_regex(format_str)
    span = _positive("span", span)
    if not 0.0 <= match_iou <= 1.0:
        raise StadError(f"match_iou must be in [0, 1], got {match_iou}")
    idx_to_class, index_of_class = acar_class_order(labelmap)
    num_classes = len(labelmap)

    by_key: dict[tuple[str, int], KeyframeLabels] = {}
    for keyframe in keyframes:
        _check_keyframe(keyframe, num_classes)
        key = (str(keyframe.video), int(keyframe.timestamp))
        if key in by_key:
            raise StadError(f"keyframe {key[0]},{key[1]} is given twice")
        by_key[key] = keyframe
    props: dict[tuple[str, int], np.ndarray] = {}
    if proposals is not None:
        if not allow_extra_proposal_videos:
            check_proposal_videos(proposals, {v for v, _ in by_key})
        props = {(str(v), int(t)): _proposal_array(p, f"proposals of {v},{t}") for (v, t), p in proposals.items()}

    data: list[dict[str, Any]] = []
    counts = {"gt": 0, "proposals": 0, "labelled": 0, "skipped": 0}
    for video, time in sorted(set(by_key) | set(props)):
        where = f"keyframe {video},{time}"
        box_dicts: list[dict[str, Any]] = []
        person_ids: list[int] = []
        keyframe = by_key.get((video, time))
        gt_boxes = np.zeros((0, 4))
        gt_labels: list[list[int]] = []
        if keyframe is not None:
            gt_boxes = _writer_boxes(keyframe.boxes, where)
            gt_labels = [sorted(index_of_class[np.flatnonzero(row)].tolist()) for row in np.asarray(keyframe.labels, bool)]
            if split == "train":
                for box, label, pid in zip(gt_boxes.tolist(), gt_labels, np.asarray(keyframe.person_ids).tolist()):
                    box_dicts.append({"bounding_box": [float(v) for v in box], "label": [int(c) for c in label]})
                    person_ids.append(int(pid))
                counts["gt"] += len(gt_boxes)
        raw = props.get((video, time), np.zeros((0, 5)))
        kept = raw[raw[:, 4] >= min_score, :4].clip(0.0, 1.0)  # [P, 4]
        alive = (kept[:, 2] > kept[:, 0]) & (kept[:, 3] > kept[:, 1])
        counts["skipped"] += len(raw) - int(alive.sum())
        kept = kept[alive]
        match = np.full(len(kept), -1, np.int64)
        if split == "train" and len(kept) and len(gt_boxes):
            iou = box_iou(kept, gt_boxes, plus_one=False)  # [P, N]
            best = iou.argmax(axis=1)  # the first box on ties
            match = np.where(iou[np.arange(len(kept)), best] >= match_iou, best, -1)
        for box, m in zip(kept.tolist(), match.tolist()):
            box_dicts.append({"bounding_box": [float(v) for v in box], "label": list(gt_labels[m]) if m >= 0 else []})
            person_ids.append(-1)
        counts["proposals"] += len(kept)
        counts["labelled"] += int((match >= 0).sum())
        if not box_dicts:
            continue
        if layout is not None:
            mid = layout.index(video).keyframe_frame(time)
        else:
            mid = (time - timestamp_start) * fps + 1
        data.append(
            {
                "video": video,
                "time": int(time),
                "format_str": format_str,
                "start_frame": int(mid - span // 2),
                "n_frames": int(span),
                "midframe": int(mid),
                "labels": box_dicts,
                "person_id": person_ids,
            }
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump((data, idx_to_class), f, protocol=4)
    return AcarWriteSummary(
        entries=len(data), gt_boxes=counts["gt"], proposals=counts["proposals"], labelled_proposals=counts["labelled"],
        skipped_proposals=counts["skipped"], idx_to_class=idx_to_class,
    )


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipNormalization:
    """Per-channel ``(pixel - mean) / std`` with ``mean``/``std`` in **pixel units** (0..255), RGB order."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_unit(cls, mean: Sequence[float], std: Sequence[float]) -> "ClipNormalization":
        """From the ``x / 255`` convention (e.g. ImageNet's 0.485 / 0.229): multiplies by 255."""
        return cls(tuple(255.0 * float(m) for m in mean), tuple(255.0 * float(s) for s in std))  # type: ignore[arg-type]


# STEP.md §2: x * 2 / 255 - 1, i.e. (x - 127.5) / 127.5, range [-1, 1].
STEP_NORMALIZATION = ClipNormalization((127.5, 127.5, 127.5), (127.5, 127.5, 127.5))
# FBIL.md §2 (ACAR R101 config: ToTensor(norm_value=1) then Normalize, RGB, pixel units).
ACAR_NORMALIZATION = ClipNormalization((110.63666788, 103.16065604, 96.29023126), (38.7568578, 37.88248729, 40.02898126))
IMAGENET_NORMALIZATION = ClipNormalization.from_unit((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def normalize_pixels(clip: np.ndarray, normalization: ClipNormalization) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 or float pixels (0..255, RGB) → ``(T, 3, H, W)`` float32 ``(x - mean) / std``.

    The input is never modified.
    """
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise StadError(f"clip must be (T, H, W, 3), got {clip.shape}")
    mean = torch.tensor(normalization.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(normalization.std, dtype=torch.float32).view(1, 3, 1, 1)
    tensor = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).to(torch.float32)  # [T, 3, H, W]
    return (tensor - mean) / std  # a new tensor


# --------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------


class KeyframeItems(_AugmentedDataset):
    """What every keyframe data set shares: a keyframe's clip, actors, neighbour boxes and proposals into a training
    item. Subclasses set ``num_classes``, ``normalization``, ``neighbor_offsets`` and ``proposal_min_score``."""

    num_classes: int
    normalization: ClipNormalization
    neighbor_offsets: tuple[int, ...]
    proposal_min_score: float

    def make_item(
        self, keyframe: KeyframeLabels, clip_frames: ClipFrames, clip: np.ndarray, neighbors: Mapping[Any, Any],
        proposals: np.ndarray | None, *, epoch: int, index: int,
    ) -> dict[str, Any]:
        """The item of ``keyframe`` from its ``clip`` ``(T, H0, W0, 3)`` uint8 (frames ``clip_frames``), the
        neighbour table ``neighbors`` (:func:`neighbor_table`) and its ``(P, 5)`` normalised ``proposals`` (None:
        the item has none), augmented with the draw of ``(seed, epoch, index)``."""
        h0, w0 = int(clip.shape[1]), int(clip.shape[2])
        to_pixels = np.array([w0, h0, w0, h0], dtype=np.float64)
        boxes = np.asarray(keyframe.boxes, dtype=np.float64).reshape(-1, 4) * to_pixels
        out = self._apply(ClipSample.create(clip, boxes), index, epoch)
        keep = out.keep  # [N] actors still present

        near, near_valid = neighbor_boxes(keyframe, neighbors, self.neighbor_offsets)  # [N, 2, 4], [N, 2]
        near = boxes_from_original(near * to_pixels, out.affine, out.size)[keep]
        near_valid = near_valid[keep] & (near[..., 2] > near[..., 0]) & (near[..., 3] > near[..., 1])
        near[~near_valid] = 0.0

        labels = np.asarray(keyframe.labels, dtype=np.float32).reshape(-1, self.num_classes)[keep]
        item: dict[str, Any] = {
            "clip": normalize_pixels(out.clip, self.normalization),  # [T, 3, H, W]
            "boxes": torch.from_numpy(out.boxes.astype(np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(labels),
            "person_ids": torch.from_numpy(np.asarray(keyframe.person_ids, dtype=np.int64).reshape(-1)[keep]),
            "neighbor_boxes": torch.from_numpy(near.astype(np.float32)).reshape(-1, len(self.neighbor_offsets), 4),
            "neighbor_valid": torch.from_numpy(near_valid).reshape(-1, len(self.neighbor_offsets)),
        }
        if proposals is not None:
            raw = proposals[proposals[:, 4] >= self.proposal_min_score]
            moved = boxes_from_original(raw[:, :4] * to_pixels, out.affine, out.size)  # [P, 4]
            alive = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
            item["proposals"] = torch.from_numpy(moved[alive].astype(np.float32)).reshape(-1, 4)
            item["proposal_scores"] = torch.from_numpy(raw[alive, 4].astype(np.float32))
        item.update(
            {
                "video": keyframe.video,
                "timestamp": int(keyframe.timestamp),
                "center_frame": int(clip_frames.keyframe_frame),
                "keyframe_index": int(clip_frames.keyframe_index),
                "frames": torch.from_numpy(clip_frames.frames.astype(np.int64)),
                **self._meta(out, (h0, w0)),
            }
        )
        return item


class KeyframeDataset(KeyframeItems):
    """Keyframe clips with multi-label actors, neighbour boxes and proposals (STEP, FBIL; see the module docstring).

    Per item: the clip rule gives the ``(T,)`` frame numbers, the frames are read as RGB from the
    layout (all must have one size ``H0 x W0``), the keyframe boxes (normalised in the annotations)
    are scaled to ``W0, H0`` and go through ``transform`` with the clip, which ends at ``input_size``
    (STEP: every frame resized to the square input, aspect not kept). Neighbour boxes and proposals
    follow the pixels through ``ClipSample.affine`` (``boxes_from_original``) and are clipped to the
    input; persons the transform drops lose their neighbour rows too; a neighbour box or proposal left
    with zero width or height is invalid (neighbour: zeroed, ``neighbor_valid`` False; proposal: removed).

    Args:
        keyframes: the keyframes (``KeyframeLabels``, ``labels`` ``(N, num_classes)``), e.g.
            ``foreground_keyframes(read_keyframe_annotations(...))`` to train, ``enumerate_keyframes`` to test.
        layout: where the frames are (``ava_layout``, ``step_layout``, ``acar_layout``, ``resolve_layout``).
        clip_rule: ``StepClipRule()`` (default), ``AcarClipRule()`` or ``CenteredClipRule()``.
        input_size: network input ``(H, W)`` (default (400, 400), STEP's).
        num_classes: ``C``.
        transform: clip transform ending at ``input_size`` (default ``build_test_transform``, a uint8
            resize; STEP: ``build_step_train_transform`` / ``build_step_test_transform``).
        normalization: ``STEP_NORMALIZATION`` (default), ``ACAR_NORMALIZATION``, ``IMAGENET_NORMALIZATION``
            or your own ``ClipNormalization``.
        seed: augmentation seed (default 0).
        foreground_only: keep only keyframes with at least one actor (default False).
        neighbor_annotations: where to look up the neighbour boxes (default ``keyframes``; pass the
            full annotation list when ``keyframes`` is filtered).
        neighbor_offsets: seconds of the neighbours (default (-1, 1), STEP's chunks 0 and 2).
        proposals: ``(video, timestamp) -> (P, 5)`` or ``(P, 4)`` normalised boxes (+ score); items
            then carry ``proposals``/``proposal_scores``; a keyframe missing from it has ``P = 0``.
        proposal_min_score: drop proposals scoring below this (default 0: keep all).
        allow_extra_proposal_videos: accept proposals of videos outside the keyframes (default False:
            ``check_proposal_videos`` raises).

    Raises:
        StadError: no keyframes, bad shapes, a keyframe whose second has no frames (for the STEP and
            ACAR rules), bad proposals. FileNotFoundError: a video's frame folder is missing.
    """

    def __init__(
        self,
        keyframes: Sequence[KeyframeLabels],
        layout: FrameLayout,
        *,
        # clip sampling
        clip_rule: ClipRule | None = None,
        # items
        input_size: Sequence[int] = (400, 400),
        num_classes: int,
        transform: Transform | None = None,
        normalization: ClipNormalization = STEP_NORMALIZATION,
        seed: int = 0,
        # which keyframes, neighbours, proposals
        foreground_only: bool = False,
        neighbor_annotations: Sequence[KeyframeLabels] | None = None,
        neighbor_offsets: Sequence[int] = (-1, 1),
        proposals: Mapping[tuple[str, int], np.ndarray] | None = None,
        proposal_min_score: float = 0.0,
        allow_extra_proposal_videos: bool = False,
    ) -> None:
        super().__init__(input_size=input_size, transform=transform, seed=seed)
        self.layout = layout
        self.clip_rule = StepClipRule() if clip_rule is None else clip_rule
        self.num_classes = _positive("num_classes", num_classes)
        self.normalization = normalization
        self.keyframes = foreground_keyframes(keyframes) if foreground_only else list(keyframes)
        if not self.keyframes:
            raise StadError(f"no keyframes given to {type(self).__name__}" + (" (foreground_only)" if foreground_only else ""))
        for keyframe in self.keyframes:
            _check_keyframe(keyframe, self.num_classes)
        videos = sorted({k.video for k in self.keyframes})
        self.frame_indexes = {video: layout.index(video) for video in videos}
        if not isinstance(self.clip_rule, CenteredClipRule):  # STEP and ACAR need the keyframe's own second
            for keyframe in self.keyframes:
                if not self.frame_indexes[keyframe.video].has_second(keyframe.timestamp):
                    index = self.frame_indexes[keyframe.video]
                    raise StadError(
                        f"keyframe {keyframe.video},{keyframe.timestamp}: no frames of second {keyframe.timestamp} "
                        f"in {layout.video_folder(keyframe.video)} {index._span()}"
                    )
        self.neighbor_offsets = tuple(int(o) for o in neighbor_offsets)
        self.neighbors = neighbor_table(self.keyframes if neighbor_annotations is None else neighbor_annotations)
        self.proposal_min_score = float(proposal_min_score)
        self.proposals: dict[tuple[str, int], np.ndarray] | None = None
        if proposals is not None:
            if not allow_extra_proposal_videos:
                check_proposal_videos(proposals, videos)
            self.proposals = {
                (str(v), int(t)): _proposal_array(p, f"proposals of {v},{t}") for (v, t), p in proposals.items()
            }

    @property
    def nframes(self) -> dict[str, int]:
        """``video -> highest frame number`` of the videos used."""
        return {video: index.nframes for video, index in self.frame_indexes.items()}

    def __len__(self) -> int:
        return len(self.keyframes)

    def clip_frames(self, keyframe: KeyframeLabels) -> ClipFrames:
        """The frames of ``keyframe``'s clip by the clip rule."""
        return self.clip_rule(self.frame_indexes[keyframe.video], int(keyframe.timestamp))

    def read_clip(self, video: str, frames: np.ndarray) -> np.ndarray:
        """``(T, H0, W0, 3)`` uint8 RGB frames of ``video`` (each distinct frame read once).

        Raises:
            FileNotFoundError: a frame file is missing (its path named). StadError: frames of different sizes.
        """
        index = self.frame_indexes.get(video) or self.layout.index(video)
        cache: dict[int, np.ndarray] = {}
        for frame in frames.tolist():
            if frame not in cache:
                cache[frame] = read_rgb(self.layout.frame_path(video, frame, index))
        shapes = {image.shape for image in cache.values()}
        if len(shapes) != 1:
            raise StadError(f"frames {frames.tolist()} of {video} have different sizes: {sorted(shapes)}")
        return np.stack([cache[frame] for frame in frames.tolist()])

    def __getitem__(self, key: Any) -> dict[str, Any]:
        epoch, index = self._key(key)
        keyframe = self.keyframes[index]
        clip_frames = self.clip_frames(keyframe)
        clip = self.read_clip(keyframe.video, clip_frames.frames)  # [T, H0, W0, 3]
        proposals = None
        if self.proposals is not None:
            proposals = self.proposals.get((keyframe.video, int(keyframe.timestamp)), np.zeros((0, 5)))
        return self.make_item(keyframe, clip_frames, clip, self.neighbors, proposals, epoch=epoch, index=index)

def _check_keyframe(keyframe: KeyframeLabels, num_classes: int) -> None:
    where = f"keyframe {keyframe.video},{keyframe.timestamp}"
    n = len(keyframe.boxes)
    if np.shape(keyframe.boxes) != (n, 4):
        raise StadError(f"{where}: boxes must be (N, 4), got {np.shape(keyframe.boxes)}")
    if np.shape(keyframe.labels) != (n, num_classes):
        raise StadError(f"{where}: labels must be (N={n}, num_classes={num_classes}), got {np.shape(keyframe.labels)}")
    if np.shape(keyframe.person_ids) != (n,):
        raise StadError(f"{where}: person_ids must be (N={n},), got {np.shape(keyframe.person_ids)}")


class KeyframeClipDataset(KeyframeDataset):
    """Stad's earlier keyframe dataset, kept for its callers: ``KeyframeDataset`` with the ``ava``
    layout, ``CenteredClipRule(num_frames, frame_stride)`` and mean/std in ``x / 255`` units (ImageNet).

    Frames ``<frames_root>/frames/<video>/img_%05d.jpg``; the clip is ``num_frames`` frames
    ``frame_stride`` apart around the keyframe frame ``(timestamp - timestamp_start) * fps + 1``,
    clamped to the frames that exist. Items are those of ``KeyframeDataset`` (no proposals).
    """

    def __init__(
        self,
        keyframes: Sequence[KeyframeLabels],
        frames_root: str | Path,
        *,
        # clip sampling
        num_frames: int = 32,
        frame_stride: int = 2,
        fps: int = 30,
        timestamp_start: int = 0,
        # items
        input_size: Sequence[int] = (256, 256),
        num_classes: int,
        transform: Transform | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        seed: int = 0,
    ) -> None:
        self.frames_root = Path(frames_root)
        self.num_frames = _positive("num_frames", num_frames)
        self.frame_stride = _positive("frame_stride", frame_stride)
        self.fps = _positive("fps", fps)
        self.timestamp_start = int(timestamp_start)
        self.mean, self.std = tuple(mean), tuple(std)
        super().__init__(
            keyframes,
            ava_layout(frames_root, fps=fps, timestamp_start=timestamp_start),
            clip_rule=CenteredClipRule(num_frames=num_frames, frame_stride=frame_stride),
            input_size=input_size,
            num_classes=num_classes,
            transform=transform,
            normalization=ClipNormalization.from_unit(mean, std),
            seed=seed,
        )


# --------------------------------------------------------------------------------------------------
# Collate
# --------------------------------------------------------------------------------------------------

_PROPOSAL_KEYS = ("proposals", "proposal_scores")


def collate_keyframes(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch keyframe items (``KeyframeDataset``, ``KeyframeClipDataset``).

    Returns:
        ``clip`` ``(B, T, 3, H, W)``; per actor, padded to ``N_max``: ``boxes`` ``(B, N_max, 4)`` (0),
        ``labels`` ``(B, N_max, C)`` (0), ``person_ids`` ``(B, N_max)`` (-1), ``neighbor_boxes``
        ``(B, N_max, 2, 4)`` (0), ``neighbor_valid`` ``(B, N_max, 2)`` (False), ``mask`` ``(B, N_max)``
        bool (True = real actor); with proposals, padded to ``P_max``: ``proposals`` ``(B, P_max, 4)``
        (0), ``proposal_scores`` ``(B, P_max)`` (0), ``proposal_mask`` ``(B, P_max)`` bool; meta:
        ``timestamp``, ``center_frame``, ``keyframe_index``, ``num_dropped`` ``(B,)`` int64,
        ``frames`` ``(B, T)``, ``orig_size`` ``(B, 2)``, ``affine`` ``(B, 4)``, ``scale`` ``(B, 2)``,
        ``video`` a list of B names.

    Raises:
        StadError: an empty batch, or items with and without proposals mixed.
    """
    if not items:
        raise StadError("cannot collate an empty batch")
    with_proposals = ["proposals" in item for item in items]
    if any(with_proposals) and not all(with_proposals):
        raise StadError("cannot collate keyframe items with and without proposals in one batch")
    core = [{k: v for k, v in item.items() if k not in _PROPOSAL_KEYS} for item in items]
    batch = _collate(
        core, {"boxes": 0.0, "labels": 0.0, "person_ids": -1, "neighbor_boxes": 0.0, "neighbor_valid": False}
    )
    if all(with_proposals):
        counts = [len(item["proposals"]) for item in items]
        p_max = max(counts)
        boxes = torch.zeros((len(items), p_max, 4), dtype=torch.float32)
        scores = torch.zeros((len(items), p_max), dtype=torch.float32)
        for b, item in enumerate(items):
            boxes[b, : counts[b]] = item["proposals"]
            scores[b, : counts[b]] = item["proposal_scores"]
        batch["proposals"] = boxes  # [B, P_max, 4]
        batch["proposal_scores"] = scores  # [B, P_max]
        batch["proposal_mask"] = torch.arange(p_max)[None, :] < torch.tensor(counts)[:, None]  # [B, P_max]
    return batch


def collate_keyframes_padded(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch keyframe items of different frame sizes (FBIL/ACAR, FBIL.md §2 ``batch_pad``).

    Every ``clip`` ``(T, 3, H_b, W_b)`` is zero-padded on the right and bottom to the batch's largest
    ``H_pad = max H_b``, ``W_pad = max W_b`` (the clips are normalised, so zero is the mean colour), then
    the batch is ``collate_keyframes``'s. Boxes, neighbour boxes and proposals stay in input pixels, which
    are also pixels of the padded frame (padding adds columns and rows after the image); divide by
    ``(W_pad, H_pad)`` for FBIL's coordinates normalised to the padded frame. Items of one size give
    ``collate_keyframes``'s batch plus ``pad_ratio`` and ``sizes_before_padding`` of ones.

    Returns:
        ``collate_keyframes``'s batch with ``clip`` ``(B, T, 3, H_pad, W_pad)`` and, per item:
        ``pad_ratio`` ``(B, 2)`` float64 ``[W_pad / W_b, H_pad / H_b]``, ``sizes_before_padding``
        ``(B, 2)`` float64 ``[W_b / W_pad, H_b / H_pad]`` (= 1 / pad_ratio, the head's valid fraction of
        the feature map) and ``unpadded_size`` ``(B, 2)`` int64 ``(H_b, W_b)``.

    Raises:
        StadError: an empty batch, clips that differ in anything but height and width, or what
            ``collate_keyframes`` refuses.
    """
    if not items:
        raise StadError("cannot collate an empty batch")
    shapes = [tuple(item["clip"].shape) for item in items]
    if any(len(shape) != 4 or shape[:2] != shapes[0][:2] for shape in shapes):
        raise StadError(f"clips must be (T, 3, H, W) with the same T and channels to pad into one batch, got {shapes}")
    h_pad = max(shape[2] for shape in shapes)
    w_pad = max(shape[3] for shape in shapes)
    padded = []
    for item, (_, _, h, w) in zip(items, shapes):
        clip = item["clip"]  # [T, 3, H_b, W_b]
        if (h, w) != (h_pad, w_pad):
            clip = torch.nn.functional.pad(clip, (0, w_pad - w, 0, h_pad - h))  # [T, 3, H_pad, W_pad], zeros right/bottom
        padded.append({**item, "clip": clip})
    batch = collate_keyframes(padded)
    sizes = torch.tensor([[shape[2], shape[3]] for shape in shapes], dtype=torch.int64)  # [B, 2] (H_b, W_b)
    padded_size = torch.tensor([w_pad, h_pad], dtype=torch.float64)
    batch["pad_ratio"] = padded_size / sizes.flip(1).to(torch.float64)  # [B, 2] [W_pad / W_b, H_pad / H_b]
    batch["sizes_before_padding"] = sizes.flip(1).to(torch.float64) / padded_size  # [B, 2] [W_b / W_pad, H_b / H_pad]
    batch["unpadded_size"] = sizes
    return batch


__all__ = [
    "ACAR_BOX_TOLERANCE",
    "ACAR_FORMAT_STR",
    "ACAR_NORMALIZATION",
    "ACAR_SPAN",
    "AcarAnnotations",
    "AcarClipRule",
    "AcarWriteSummary",
    "CenteredClipRule",
    "ClipFrames",
    "ClipNormalization",
    "ClipRule",
    "FlatFrameLayout",
    "FrameLayout",
    "IMAGENET_NORMALIZATION",
    "KeyframeClipDataset",
    "KeyframeDataset",
    "LAYOUT_NAMES",
    "STEP_NORMALIZATION",
    "StepClipRule",
    "StepFrameLayout",
    "VideoFrameIndex",
    "acar_class_order",
    "acar_layout",
    "ava_layout",
    "check_proposal_videos",
    "collate_keyframes",
    "collate_keyframes_padded",
    "detect_layout",
    "enumerate_keyframes",
    "foreground_keyframes",
    "list_keyframes",
    "make_layout",
    "neighbor_boxes",
    "neighbor_table",
    "normalize_pixels",
    "read_acar_annotations",
    "read_keyframe_annotations",
    "read_proposals_csv",
    "resolve_layout",
    "step_clip_frames",
    "step_layout",
    "step_second_samples",
    "temporal_center_crop",
    "write_acar_annotations",
    "write_proposals_csv",
]
