"""Accumulating evaluators (detectron2-style ``reset() / process() / evaluate()``) for the training engine.

The engine calls ``process`` with the detections of each batch; ``evaluate`` runs the pure metric
(:func:`stad.eval.frame_map.frame_map`, :func:`stad.eval.video_map.video_map`) on everything seen.
No files, no torch: inputs are numpy arrays.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from stad.errors import StadError
from stad.eval.frame_map import FrameMAPResult, frame_map
from stad.eval.video_map import DEFAULT_THRESHOLDS, VideoMAPResult, video_map
from stad.structures import FrameDetections, Tube, TubeAnnotations


class FrameMAPEvaluator:
    """Collects per-frame detections of many batches, then computes frame-mAP.

    Args:
        gt: ground truth.
        split: 1-based split whose test videos are evaluated.
        iou: IoU threshold.
        protocol: ``"act"``, ``"voc"`` or ``"yowo"``.
    """

    def __init__(self, gt: TubeAnnotations, *, split: int = 1, iou: float = 0.5, protocol: str = "act") -> None:
        self.gt = gt
        self.split = split
        self.iou = iou
        self.protocol = protocol
        self.reset()

    def reset(self) -> None:
        self._videos: dict[str, int] = {}
        self._parts: list[tuple[np.ndarray, ...]] = []

    def process(
        self, *, video: str, frame: np.ndarray, label: np.ndarray, score: np.ndarray, boxes: np.ndarray
    ) -> None:
        """Add the ``N`` detections of one video.

        Args:
            video: video name.
            frame: ``(N,)`` int frames (from 1).
            label: ``(N,)`` int 0-based labels.
            score: ``(N,)`` float scores.
            boxes: ``(N, 4)`` ``x1, y1, x2, y2`` pixels of the original resolution.
        """
        frame = np.asarray(frame, np.int64).reshape(-1)
        n = frame.shape[0]
        label = np.asarray(label, np.int64).reshape(-1)
        score = np.asarray(score, np.float64).reshape(-1)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not (label.shape[0] == score.shape[0] == boxes.shape[0] == n):
            raise StadError(
                f"process: frame/label/score/boxes lengths differ: {n}, {label.shape[0]}, {score.shape[0]}, {boxes.shape[0]}"
            )
        iv = self._videos.setdefault(video, len(self._videos))
        self._parts.append((np.full(n, iv, np.int64), frame, label, score, boxes))

    def detections(self) -> FrameDetections:
        """Everything processed so far, in processing order."""
        if not self._parts:
            return FrameDetections.empty(list(self._videos))
        cols = [np.concatenate([p[i] for p in self._parts]) for i in range(5)]
        return FrameDetections(list(self._videos), *cols)

    def evaluate(self) -> FrameMAPResult:
        return frame_map(self.gt, self.detections(), split=self.split, iou=self.iou, protocol=self.protocol)


class VideoMAPEvaluator:
    """Collects tubes video by video, then computes video-mAP (ACT protocol)."""

    def __init__(
        self,
        gt: TubeAnnotations,
        *,
        split: int = 1,
        thresholds: Sequence[float | str] = DEFAULT_THRESHOLDS,
        nms: float | None = 0.3,
    ) -> None:
        self.gt = gt
        self.split = split
        self.thresholds = tuple(thresholds)
        self.nms = nms
        self.reset()

    def reset(self) -> None:
        self._tubes: dict[str, list[Tube]] = {}

    def process(self, video: str, tubes: Sequence[Tube]) -> None:
        """Add tubes of ``video`` (may be called several times per video)."""
        self._tubes.setdefault(video, []).extend(tubes)

    def evaluate(self) -> VideoMAPResult:
        return video_map(self.gt, self._tubes, split=self.split, thresholds=self.thresholds, nms=self.nms)
