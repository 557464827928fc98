"""K-frame tubelets: validation, the tubelet file format, and tubelets -> per-frame detections.

How MOC/ACT turn tubelets into frame detections (PROTOCOLS.md §A, MOC-Detector's
``ACT_build.load_frame_detections``): every tubelet puts its box on each of its K frames with the
tubelet's score and class; then, per (video, frame, class), the soft NMS at 0.6 rescores the boxes
(``stad.tubes.nms.batched_frame_soft_nms``). No box is removed. Here all groups of a batch of
videos are processed at once.

Tubelet file (``.npz``, written by ``save_tubelets``, read by ``load_tubelets``)::

    format   ()          str    "stad-tubelets-v1"
    videos   (V,)        str    video names
    nframes  (V,)        int    frames per video (optional; -1 where unknown)
    video    (N,)        int    index into ``videos`` of each tubelet
    start    (N,)        int    first frame of the tubelet, from 1; it covers start .. start+K-1
    label    (N,)        int    0-based class index
    score    (N,)        float  tubelet score
    boxes    (N, K, 4)   float  x1, y1, x2, y2 pixels of the video's resolution, one box per frame

A video listed in ``videos`` may have no tubelets. Saved with ``np.savez_compressed``; read
without pickle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stad.errors import StadError
from stad.structures import FrameDetections, Tubelets
from stad.tubes.nms import _check_threshold, _frame_soft_nms_sorted

FORMAT = "stad-tubelets-v1"
_FIELDS = ("videos", "video", "start", "label", "score", "boxes")
# Videos are converted in batches of at most this many boxes (bounds memory, keeps speed).
_BOXES_PER_BATCH = 4_000_000


@dataclass
class TubeletsFile:
    """Contents of a tubelet file.

    Attributes:
        videos: video names in file order.
        tubelets: video -> its tubelets (every listed video, possibly with zero rows).
        nframes: video -> number of frames, for the videos whose count the file stores.
    """

    videos: list[str]
    tubelets: dict[str, Tubelets]
    nframes: dict[str, int]


def validate_tubelets(
    tubelets: Tubelets, *, where: str, num_classes: int | None = None, nframes: int | None = None
) -> None:
    """Check one video's tubelets; raise ``StadError`` naming ``where`` and the field at fault.

    Checked: shapes (``boxes`` ``(N, K, 4)``, ``start``/``label``/``score`` ``(N,)``), integer
    ``start``/``label``, finite values, ``x1 <= x2`` and ``y1 <= y2``, ``start >= 1``, labels ``>= 0``.

    Args:
        tubelets: the tubelets of one video.
        where: the video (and file) named in error messages.
        num_classes: if given, labels must lie in ``[0, num_classes)``.
        nframes: if given, every tubelet must lie inside frames ``1..nframes``.
    """
    boxes = np.asarray(tubelets.boxes)
    n = len(np.asarray(tubelets.score))
    if boxes.ndim != 3 or boxes.shape[2] != 4 or boxes.shape[0] != n:
        raise StadError(f"{where}: boxes must have shape [N={n}, K, 4], got {boxes.shape}")
    K = boxes.shape[1]
    if K < 1:
        raise StadError(f"{where}: boxes must have K >= 1 frames, got shape {boxes.shape}")
    for name in ("start", "label", "score"):
        arr = np.asarray(getattr(tubelets, name))
        if arr.shape != (n,):
            raise StadError(f"{where}: {name} must have shape [{n}], got {arr.shape}")
    for name in ("start", "label"):
        arr = np.asarray(getattr(tubelets, name))
        if n and not np.issubdtype(arr.dtype, np.integer):
            raise StadError(f"{where}: {name} must be integers, got dtype {arr.dtype}")
    for name in ("score", "boxes"):
        arr = np.asarray(getattr(tubelets, name))
        if n and not np.issubdtype(arr.dtype, np.number):
            raise StadError(f"{where}: {name} must be numbers, got dtype {arr.dtype}")
    score = np.asarray(tubelets.score, dtype=np.float64)
    if not np.isfinite(score).all():
        i = int(np.flatnonzero(~np.isfinite(score))[0])
        raise StadError(f"{where}: score of tubelet {i} is not finite: {score[i]}")
    if not np.isfinite(boxes).all():
        i = int(np.argwhere(~np.isfinite(boxes))[0][0])
        raise StadError(f"{where}: boxes of tubelet {i} are not finite: {boxes[i].tolist()}")
    if n == 0:
        return
    flipped = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])  # [N, K]
    if flipped.any():
        i, k = (int(v) for v in np.argwhere(flipped)[0])
        got = boxes[i, k].tolist()
        raise StadError(f"{where}: boxes of tubelet {i}, frame {k} need x1 <= x2 and y1 <= y2, got {got}")
    start = np.asarray(tubelets.start, dtype=np.int64)
    label = np.asarray(tubelets.label, dtype=np.int64)
    if (start < 1).any():
        i = int(np.flatnonzero(start < 1)[0])
        raise StadError(f"{where}: start of tubelet {i} is {start[i]}; frames are numbered from 1")
    if nframes is not None and (start + K - 1 > nframes).any():
        i = int(np.flatnonzero(start + K - 1 > nframes)[0])
        raise StadError(
            f"{where}: tubelet {i} covers frames {start[i]}..{start[i] + K - 1} beyond nframes={nframes} (K={K})"
        )
    if (label < 0).any() or (num_classes is not None and (label >= num_classes).any()):
        bad = (label < 0) | (label >= (num_classes if num_classes is not None else np.iinfo(np.int64).max))
        i = int(np.flatnonzero(bad)[0])
        limit = f" < num_classes={num_classes}" if num_classes is not None else ""
        raise StadError(f"{where}: label of tubelet {i} is {label[i]}; labels are 0-based, >= 0{limit}")


# ----------------------------------------------------------------------------------------------
# File I/O
# ----------------------------------------------------------------------------------------------


def save_tubelets(
    path: str | os.PathLike,
    tubelets_per_video: Mapping[str, Tubelets],
    *,
    videos: Sequence[str] | None = None,
    nframes: Mapping[str, int] | None = None,
) -> None:
    """Write tubelets of many videos to a ``.npz`` tubelet file (format in the module docstring).

    Args:
        path: output file (``np.savez_compressed`` adds ``.npz`` if missing).
        tubelets_per_video: video -> tubelets; all must share K.
        videos: the video list to store (default: the keys, in order); must contain every key.
        nframes: optional video -> number of frames, stored for the videos it has.
    """
    videos = list(videos) if videos is not None else list(tubelets_per_video)
    index = {v: i for i, v in enumerate(videos)}
    if len(index) != len(videos):
        raise StadError("videos: names must be unique")
    missing = [v for v in tubelets_per_video if v not in index]
    if missing:
        raise StadError(f"videos: {missing[0]!r} has tubelets but is not in the video list")
    Ks = {int(np.asarray(t.boxes).shape[1]) for t in tubelets_per_video.values() if np.asarray(t.boxes).ndim == 3}
    if len(Ks) > 1:
        raise StadError(f"boxes: all videos must share the tubelet length K, got {sorted(Ks)}")
    K = Ks.pop() if Ks else 1
    for v, t in tubelets_per_video.items():
        validate_tubelets(t, where=f"video {v!r}", nframes=None if nframes is None else nframes.get(v))
    items = [(index[v], t) for v, t in tubelets_per_video.items()]
    counts = [len(t) for _, t in items]
    arrays = {
        "format": np.array(FORMAT),
        "videos": np.array(videos, dtype=str) if videos else np.zeros(0, dtype="<U1"),
        "nframes": np.array([int(nframes.get(v, -1)) if nframes else -1 for v in videos], np.int64),
        "video": np.repeat(np.array([i for i, _ in items], np.int64), counts),
        "start": np.concatenate([np.asarray(t.start, np.int64) for _, t in items] or [np.zeros(0, np.int64)]),
        "label": np.concatenate([np.asarray(t.label, np.int64) for _, t in items] or [np.zeros(0, np.int64)]),
        "score": np.concatenate([np.asarray(t.score, np.float64) for _, t in items] or [np.zeros(0)]),
        "boxes": np.concatenate(
            [np.asarray(t.boxes, np.float64).reshape(-1, K, 4) for _, t in items] or [np.zeros((0, K, 4))]
        ),
    }
    np.savez_compressed(path, **arrays)


def load_tubelets(path: str | os.PathLike) -> TubeletsFile:
    """Read and validate a ``.npz`` tubelet file (format in the module docstring).

    Raises:
        FileNotFoundError: no such file.
        StadError: a missing or malformed field, named with the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tubelet file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise StadError(f"{path}: not a readable .npz tubelet file ({err})") from None
    with data:
        missing = [f for f in _FIELDS if f not in data.files]
        if missing:
            raise StadError(f"{path}: missing field(s) {', '.join(missing)} (has {', '.join(data.files)})")
        if "format" in data.files and str(data["format"]) != FORMAT:
            raise StadError(f"{path}: format is {str(data['format'])!r}, expected {FORMAT!r}")
        fields = {f: data[f] for f in data.files}
    videos = [str(v) for v in fields["videos"].reshape(-1)]
    if len(set(videos)) != len(videos):
        raise StadError(f"{path}: videos: names must be unique")
    for name in ("score", "boxes"):
        if not np.issubdtype(fields[name].dtype, np.number):
            raise StadError(f"{path}: {name} must be numbers, got dtype {fields[name].dtype}")
    if fields["score"].ndim != 1:
        raise StadError(f"{path}: score must have shape [N], got {fields['score'].shape}")
    n = len(fields["score"])
    video = fields["video"]
    if video.shape != (n,) or (n and not np.issubdtype(video.dtype, np.integer)):
        raise StadError(f"{path}: video must be an integer array of shape [{n}], got {video.dtype} {video.shape}")
    if n and ((video < 0).any() or (video >= len(videos)).any()):
        i = int(np.flatnonzero((video < 0) | (video >= len(videos)))[0])
        raise StadError(f"{path}: video of tubelet {i} is {video[i]}, not an index into the {len(videos)} videos")
    boxes = fields["boxes"]
    if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[2] != 4:
        raise StadError(f"{path}: boxes must have shape [N={n}, K, 4], got {boxes.shape}")
    nframes_arr = fields.get("nframes", np.full(len(videos), -1, np.int64))
    if nframes_arr.shape != (len(videos),):
        raise StadError(f"{path}: nframes must have shape [{len(videos)}], got {nframes_arr.shape}")
    nframes = {v: int(f) for v, f in zip(videos, nframes_arr) if f >= 0}
    for name in ("start", "label"):
        if fields[name].shape != (n,):
            raise StadError(f"{path}: {name} must have shape [{n}] like score, got {fields[name].shape}")
    order = np.argsort(video, kind="stable")
    bounds = np.searchsorted(video[order], np.arange(len(videos) + 1))
    tubelets: dict[str, Tubelets] = {}
    for i, v in enumerate(videos):
        rows = order[bounds[i] : bounds[i + 1]]
        t = Tubelets(
            start=fields["start"][rows],
            label=fields["label"][rows],
            score=fields["score"][rows].astype(np.float64),
            boxes=boxes[rows].astype(np.float64),
        )
        validate_tubelets(t, where=f"{path}: video {v!r}", nframes=nframes.get(v))
        tubelets[v] = t
    return TubeletsFile(videos=videos, tubelets=tubelets, nframes=nframes)


# ----------------------------------------------------------------------------------------------
# Tubelets -> frame detections
# ----------------------------------------------------------------------------------------------


def tubelets_to_frame_detections(
    tubelets_per_video: Mapping[str, Tubelets], videos: Sequence[str], *, nms_threshold: float = 0.6
) -> FrameDetections:
    """Per-frame detections from K-frame tubelets by the ACT/MOC rule.

    Every tubelet puts its box on each of its K frames with its score and class; then per
    (video, frame, class) the soft NMS at ``nms_threshold`` rescores the boxes
    (``batched_frame_soft_nms``; nothing is removed, so there are ``N * K`` detections).

    Args:
        tubelets_per_video: video -> tubelets (``boxes`` ``(N, K, 4)`` x1, y1, x2, y2 pixels).
        videos: the video list that ``FrameDetections.video`` indexes; must contain every key.
        nms_threshold: +1 IoU threshold of the soft NMS, default 0.6.

    Returns:
        ``FrameDetections`` ordered by video (in ``videos`` order), frame, label, then descending
        original score (ties: tubelet order). The reference orders a frame's rows by start frame,
        label, tubelet; only the evaluation order of tied scores can depend on this.
    """
    videos = list(videos)
    index = {v: i for i, v in enumerate(videos)}
    missing = [v for v in tubelets_per_video if v not in index]
    if missing:
        raise StadError(f"videos: {missing[0]!r} has tubelets but is not in the video list")
    nms_threshold = _check_threshold(nms_threshold, "nms_threshold")
    for v, t in tubelets_per_video.items():
        validate_tubelets(t, where=f"video {v!r}")
    items = sorted(((index[v], t) for v, t in tubelets_per_video.items() if len(t)), key=lambda it: it[0])
    parts: list[FrameDetections] = []
    batch: list[tuple[int, Tubelets]] = []
    size = 0
    for item in items:
        batch.append(item)
        size += item[1].boxes.shape[0] * item[1].boxes.shape[1]
        if size >= _BOXES_PER_BATCH:
            parts.append(_convert_batch(batch, videos, nms_threshold))
            batch, size = [], 0
    if batch:
        parts.append(_convert_batch(batch, videos, nms_threshold))
    if not parts:
        return FrameDetections.empty(videos)
    return FrameDetections(
        videos=videos,
        video=np.concatenate([p.video for p in parts]),
        frame=np.concatenate([p.frame for p in parts]),
        label=np.concatenate([p.label for p in parts]),
        score=np.concatenate([p.score for p in parts]),
        boxes=np.concatenate([p.boxes for p in parts]),
    )


def _convert_batch(batch: list[tuple[int, Tubelets]], videos: list[str], threshold: float) -> FrameDetections:
    """Frame detections of a few videos: expand tubelets to K frames, group, soft NMS."""
    video = np.concatenate([np.full(len(t), i, np.int64) for i, t in batch])  # [N]
    start = np.concatenate([np.asarray(t.start, np.int64) for _, t in batch])
    label = np.concatenate([np.asarray(t.label, np.int64) for _, t in batch])
    score = np.concatenate([np.asarray(t.score, np.float64) for _, t in batch])
    boxes = np.concatenate([np.asarray(t.boxes, np.float64) for _, t in batch])  # [N, K, 4]
    n, K = boxes.shape[:2]
    frame = (start[:, None] + np.arange(K)[None, :]).reshape(-1)  # [N*K], tubelet-major
    video_k, label_k = np.repeat(video, K), np.repeat(label, K)
    # One integer key per (video, frame, label) group, increasing in that order.
    n_labels = int(label.max()) + 1
    key = (video_k * (int(frame.max()) + 1) + frame) * n_labels + label_k
    order, _, new_score = _frame_soft_nms_sorted(boxes.reshape(n * K, 4), np.repeat(score, K), key, threshold)
    return FrameDetections(
        videos=videos,
        video=video_k[order],
        frame=frame[order],
        label=label_k[order],
        score=new_score,
        boxes=boxes.reshape(n * K, 4)[order],
    )
