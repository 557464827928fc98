"""The few record types shared across stad (ARCHITECTURE.md §3).

Conventions, restated once here and relied on everywhere:

* boxes are ``x1, y1, x2, y2`` float pixels of the video's original resolution;
* frames are numbered from 1 (as in the ACT ground-truth files);
* labels are 0-based indices into ``labels`` inside the code.

Naming: ``T`` frames of a video, ``L`` frames of a tube, ``K`` frames of a tubelet,
``N`` detections, ``C`` classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TubeAnnotations:
    """Ground-truth action tubes of a data set: the ACT pickle model (UCF101v2-GT.pkl, JHMDB-GT.pkl).

    Attributes:
        labels: class names; a tube's label is an index into this list.
        gttubes: video -> label -> list of ``(L, 5)`` float arrays ``[frame, x1, y1, x2, y2]``
            on consecutive frames (frame from 1).
        nframes: video -> number of frames ``T``.
        resolution: video -> ``(height, width)`` in pixels.
        train_videos: per split, the training videos (ACT keeps 3 splits for JHMDB, 1 for UCF).
        test_videos: per split, the test videos.
        visibility: optional, video -> label -> list of ``(L,)`` float arrays in [0, 1], the visible
            fraction of each ground-truth box (parallel to ``gttubes``); the synthetic benchmark
            writes it, real data sets do not have it.
        name: a short name of the data set (for reports).
    """

    labels: list[str]
    gttubes: dict[str, dict[int, list[np.ndarray]]]
    nframes: dict[str, int]
    resolution: dict[str, tuple[int, int]]
    train_videos: list[list[str]] = field(default_factory=list)
    test_videos: list[list[str]] = field(default_factory=list)
    visibility: dict[str, dict[int, list[np.ndarray]]] | None = None
    name: str = ""

    @property
    def videos(self) -> list[str]:
        """All videos, sorted."""
        return sorted(self.nframes)

    def class_agnostic(self, label: str = "person") -> "TubeAnnotations":
        """The same tubes under one class ``label`` (e.g. to train a person detector on action tubes), in label order."""
        def merged(per_video: dict[str, dict[int, list[np.ndarray]]]) -> dict[str, dict[int, list[np.ndarray]]]:
            return {video: {0: [t for c in sorted(tubes) for t in tubes[c]]} for video, tubes in per_video.items()}

        return TubeAnnotations(
            labels=[label], gttubes=merged(self.gttubes), nframes=self.nframes, resolution=self.resolution,
            train_videos=self.train_videos, test_videos=self.test_videos,
            visibility=None if self.visibility is None else merged(self.visibility), name=f"{self.name}-{label}",
        )

    def split_videos(self, split: int, subset: str) -> list[str]:
        """Videos of 1-based ``split`` for ``subset`` in {"train", "test"}."""
        lists = {"train": self.train_videos, "test": self.test_videos}.get(subset)
        if lists is None:
            raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
        if not 1 <= split <= len(lists):
            raise ValueError(f"split must be in 1..{len(lists)} for {self.name or 'this data set'}, got {split}")
        return list(lists[split - 1])


@dataclass
class Tube:
    """A detected action tube.

    Attributes:
        label: 0-based class index.
        score: tube score.
        boxes: ``(L, 6)`` float array ``[frame, x1, y1, x2, y2, frame_score]`` on increasing frames.
    """

    label: int
    score: float
    boxes: np.ndarray


@dataclass
class FrameDetections:
    """Per-frame detections of many videos, column-wise (``N`` rows).

    Attributes:
        videos: the video names that ``video`` indexes.
        video: ``(N,)`` int, index into ``videos``.
        frame: ``(N,)`` int, frame number from 1.
        label: ``(N,)`` int, 0-based class index.
        score: ``(N,)`` float.
        boxes: ``(N, 4)`` float ``x1, y1, x2, y2`` pixels.
    """

    videos: list[str]
    video: np.ndarray
    frame: np.ndarray
    label: np.ndarray
    score: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.score)

    @classmethod
    def empty(cls, videos: list[str] | None = None) -> "FrameDetections":
        return cls(
            videos=list(videos or []),
            video=np.zeros(0, np.int64),
            frame=np.zeros(0, np.int64),
            label=np.zeros(0, np.int64),
            score=np.zeros(0, np.float64),
            boxes=np.zeros((0, 4), np.float64),
        )


@dataclass
class Tubelets:
    """K-frame tubelets of one video (the MOC/ACT detector output), ``N`` rows.

    Attributes:
        start: ``(N,)`` int, first frame of each tubelet (from 1); it covers ``start .. start+K-1``.
        label: ``(N,)`` int, 0-based class index.
        score: ``(N,)`` float.
        boxes: ``(N, K, 4)`` float ``x1, y1, x2, y2`` pixels, one box per covered frame.
    """

    start: np.ndarray
    label: np.ndarray
    score: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.score)

    @property
    def K(self) -> int:  # noqa: N802 - the paper's name
        return int(self.boxes.shape[1])


@dataclass
class KeyframeLabels:
    """Actors of one AVA-style keyframe with multi-label actions (``N`` actors, ``C`` classes).

    Attributes:
        video: video id.
        timestamp: keyframe time in whole seconds (AVA keyframe key ``(video, int(timestamp))``).
        boxes: ``(N, 4)`` float ``x1, y1, x2, y2`` normalized to [0, 1] (as AVA files store them).
        labels: ``(N, C)`` bool multi-hot over 0-based class indices.
        person_ids: ``(N,)`` int, the file's person id, -1 where the file has none.
    """

    video: str
    timestamp: int
    boxes: np.ndarray
    labels: np.ndarray
    person_ids: np.ndarray


@dataclass
class Problem:
    """One problem found while validating a data set or a predictions file.

    Attributes:
        location: where: a file (and line), or a video.
        field: the field at fault (e.g. ``"boxes"``, ``"nframes"``, ``"x2"``).
        message: what is wrong, with the bad value.
        frame: the frame concerned, if any (from 1).
    """

    location: str
    field: str
    message: str
    frame: int | None = None

    def __str__(self) -> str:
        where = self.location if self.frame is None else f"{self.location} frame {self.frame}"
        return f"{where}: {self.field}: {self.message}"


@dataclass
class KeyframeDetections:
    """Actor-action detections of one keyframe (STEP-style keyframe detectors), ``M`` rows, one per (box, class).

    Scores are independent per class (multi-label), so one box may appear in several rows with different labels.

    Attributes:
        boxes: ``(M, 4)`` float64 ``x1, y1, x2, y2`` normalized to [0, 1] by the network input width and height.
        labels: ``(M,)`` int64, 0-based class index.
        scores: ``(M,)`` float64, e.g. a sigmoid probability.
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "KeyframeDetections":
        """No detections: ``(0, 4)`` boxes, ``(0,)`` labels and scores."""
        return cls(boxes=np.zeros((0, 4), np.float64), labels=np.zeros(0, np.int64), scores=np.zeros(0, np.float64))
