"""Prediction files read by ``stad eval``: frame detections CSV and tubes JSON, validated.

Frame detections CSV (one detection per line, header required)::

    video,frame,label,score,x1,y1,x2,y2
    Basketball/v_Basketball_g01_c01,1,0,0.93,12.5,20.0,80.25,200.0

``frame`` counts from 1, ``label`` is the 0-based class index, boxes are ``x1, y1, x2, y2`` pixels of
the video's original resolution. Video names must not contain commas.

Tubes JSON (one object, video -> list of tubes)::

    {"Basketball/v_Basketball_g01_c01": [
        {"label": 0, "score": 0.8, "boxes": [[1, 12.5, 20.0, 80.2, 200.0, 0.7], [2, ...], ...]}]}

Each ``boxes`` row is ``[frame, x1, y1, x2, y2]`` or ``[frame, x1, y1, x2, y2, frame_score]`` on
consecutive frames (a 5-column row gets the tube score as its frame score).

Validation (against the ground truth when given): unknown video, label out of range, frame outside
the video, non-finite value, ``x2 < x1`` or ``y2 < y1`` -> :class:`StadError` naming the line (CSV,
1-based, the header is line 1) or the JSON path. Nothing is skipped silently.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from stad.errors import StadError
from stad.structures import FrameDetections, TubeAnnotations, Tube
from stad.textio import read_text

CSV_HEADER = "video,frame,label,score,x1,y1,x2,y2"
_NUMERIC = 7  # numeric columns after the video name


def write_frame_detections(dets: FrameDetections, path: str | Path) -> None:
    """Write ``dets`` as the frame detections CSV (floats with ``repr`` precision, exact round trip)."""
    path = Path(path)
    names = dets.videos
    with path.open("w", newline="") as f:
        f.write(CSV_HEADER + "\n")
        cols = [np.asarray(dets.score, np.float64)] + [np.asarray(dets.boxes[:, i], np.float64) for i in range(4)]
        lines = [
            f"{names[v]},{fr},{lab},{s!r},{a!r},{b!r},{c!r},{d!r}\n"
            for v, fr, lab, s, a, b, c, d in zip(
                np.asarray(dets.video).tolist(),
                np.asarray(dets.frame).tolist(),
                np.asarray(dets.label).tolist(),
                *(c.tolist() for c in cols),
            )
        ]
        f.writelines(lines)


def read_frame_detections(path: str | Path, gt: TubeAnnotations | None = None) -> FrameDetections:
    """Read a frame detections CSV.

    Parsing is done in bulk (``np.fromstring`` on the numeric part); a malformed line makes a slow
    line-by-line pass find and name it.

    Args:
        path: the CSV file.
        gt: when given, every row is checked against it (video known, frame in 1..T, label in range).

    Returns:
        :class:`FrameDetections` (``videos`` in order of first appearance in the file).

    Raises:
        FileNotFoundError: no such file.
        StadError: wrong header, malformed line or invalid value (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame detections file not found: {path}")
    text = read_text(path, what="a detections CSV")
    lines = text.splitlines()
    if not lines or lines[0].strip().replace(" ", "") != CSV_HEADER:
        got = lines[0][:80] if lines else "<empty file>"
        raise StadError(f"{path}:1: expected the header {CSV_HEADER!r}, got {got!r}")
    rows = lines[1:]
    while rows and not rows[-1].strip():
        rows.pop()
    n = len(rows)
    if n == 0:
        return FrameDetections.empty()
    index: dict[str, int] = {}
    video = np.empty(n, np.int64)
    rests = []
    for i, line in enumerate(rows):  # splitting off the name; the numbers are parsed in bulk below
        name, sep, rest = line.partition(",")
        if not sep:
            raise StadError(f"{path}:{i + 2}: expected 8 comma-separated fields, got {line[:80]!r}")
        video[i] = index.setdefault(name.strip(), len(index))
        rests.append(rest)
    commas = np.fromiter((r.count(",") for r in rests), np.int64, n)
    if (commas != _NUMERIC - 1).any():
        i = int(np.flatnonzero(commas != _NUMERIC - 1)[0])
        raise StadError(f"{path}:{i + 2}: expected 8 comma-separated fields, got {commas[i] + 2}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.fromstring(",".join(rests), dtype=np.float64, sep=",")
    except ValueError:
        values = None
    if values is None or values.size != n * _NUMERIC:
        _find_bad_line(path, rests)
    values = values.reshape(n, _NUMERIC)  # [N, 7] frame,label,score,x1,y1,x2,y2
    _check_numbers(path, values)
    dets = FrameDetections(
        videos=list(index),
        video=video,
        frame=values[:, 0].astype(np.int64),
        label=values[:, 1].astype(np.int64),
        score=values[:, 2].copy(),
        boxes=values[:, 3:7].copy(),
    )
    if gt is not None:
        check_frame_detections(dets, gt, source=str(path), line_offset=2)
    return dets


def _find_bad_line(path: Path, rests: list[str]) -> None:
    for i, rest in enumerate(rests):
        fields = rest.split(",")
        if len(fields) != _NUMERIC:
            raise StadError(f"{path}:{i + 2}: expected 8 comma-separated fields, got {len(fields) + 1}")
        for name, value in zip(CSV_HEADER.split(",")[1:], fields):
            try:
                float(value)
            except ValueError:
                raise StadError(f"{path}:{i + 2}: field {name!r} is not a number: {value.strip()!r}") from None
    raise StadError(f"{path}: could not parse the numbers (unexpected format)")  # pragma: no cover


def _check_numbers(path: Path, values: np.ndarray) -> None:
    names = CSV_HEADER.split(",")[1:]
    finite = np.isfinite(values)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise StadError(f"{path}:{i + 2}: field {names[j]!r} is not finite: {values[i, j]}")
    for j in (0, 1):
        bad = values[:, j] != np.rint(values[:, j])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise StadError(f"{path}:{i + 2}: field {names[j]!r} must be an integer, got {values[i, j]}")
    for a, b in ((3, 5), (4, 6)):
        bad = values[:, b] < values[:, a]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise StadError(f"{path}:{i + 2}: {names[b]} < {names[a]} ({values[i, b]} < {values[i, a]})")


def check_frame_detections(dets: FrameDetections, gt: TubeAnnotations, *, source: str = "detections", line_offset: int = 0) -> None:
    """Check detections against the ground truth: known video, frame in 1..T, label in range.

    Args:
        dets: the detections.
        gt: the ground truth.
        source: name used in messages.
        line_offset: added to the row index in messages (2 for a CSV with a header).

    Raises:
        StadError: naming the first bad row.
    """
    unknown = [v for v in dets.videos if v not in gt.nframes]
    if unknown:
        used = np.isin(dets.video, [dets.videos.index(v) for v in unknown])
        if used.any():
            i = int(np.flatnonzero(used)[0])
            raise StadError(f"{source}:{i + line_offset}: unknown video {dets.videos[dets.video[i]]!r} (not in the ground truth)")
    if len(dets) == 0:
        return
    nframes = np.array([gt.nframes.get(v, 0) for v in dets.videos], np.int64)[dets.video]
    bad = (dets.frame < 1) | (dets.frame > nframes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StadError(
            f"{source}:{i + line_offset}: frame {dets.frame[i]} outside 1..{nframes[i]} of video {dets.videos[dets.video[i]]!r}"
        )
    bad = (dets.label < 0) | (dets.label >= len(gt.labels))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StadError(f"{source}:{i + line_offset}: label {dets.label[i]} outside 0..{len(gt.labels) - 1}")


def write_tubes(tubes: dict[str, list[Tube]], path: str | Path) -> None:
    """Write tubes as the tubes JSON (``boxes`` rows ``[frame, x1, y1, x2, y2, frame_score]``)."""
    out = {
        video: [
            {
                "label": int(t.label),
                "score": float(t.score),
                "boxes": [[int(r[0]), *map(float, r[1:6])] for r in np.asarray(t.boxes, np.float64).tolist()],
            }
            for t in video_tubes
        ]
        for video, video_tubes in tubes.items()
    }
    Path(path).write_text(json.dumps(out))


def read_tubes(path: str | Path, gt: TubeAnnotations | None = None) -> dict[str, list[Tube]]:
    """Read a tubes JSON file (see the module docstring), validated.

    Args:
        path: the JSON file.
        gt: when given, videos must be known, labels in range and frames within 1..T.

    Returns:
        video -> list of :class:`Tube` (``boxes`` ``(L, 6)`` float64).

    Raises:
        FileNotFoundError: no such file.
        StadError: not JSON or a bad field; the message gives the JSON path, e.g. ``["v"][3].boxes[2]``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tubes file not found: {path}")
    try:
        raw = json.loads(read_text(path, what="a tubes JSON file"))
    except json.JSONDecodeError as err:
        raise StadError(f"{path}: not valid JSON: {err}") from err
    return tubes_from_json(raw, gt=gt, source=str(path))


def tubes_from_json(raw: Any, *, gt: TubeAnnotations | None = None, source: str = "tubes") -> dict[str, list[Tube]]:
    """Validate and convert the parsed tubes JSON object (see :func:`read_tubes`)."""
    if not isinstance(raw, dict):
        raise StadError(f"{source}: expected an object video -> list of tubes, got {type(raw).__name__}")
    out: dict[str, list[Tube]] = {}
    for video, items in raw.items():
        where_v = f"{source}: [{json.dumps(video)}]"
        if gt is not None and video not in gt.nframes:
            raise StadError(f"{where_v}: unknown video (not in the ground truth)")
        if not isinstance(items, list):
            raise StadError(f"{where_v}: expected a list of tubes, got {type(items).__name__}")
        tubes = []
        for i, item in enumerate(items):
            where = f"{where_v}[{i}]"
            if not isinstance(item, dict) or not {"label", "score", "boxes"} <= set(item):
                raise StadError(f"{where}: expected an object with 'label', 'score', 'boxes'")
            label, score = item["label"], item["score"]
            if isinstance(label, bool) or not isinstance(label, int):
                raise StadError(f"{where}.label: expected an integer, got {label!r}")
            if gt is not None and not 0 <= label < len(gt.labels):
                raise StadError(f"{where}.label: {label} outside 0..{len(gt.labels) - 1}")
            if label < 0:
                raise StadError(f"{where}.label: negative label {label}")
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise StadError(f"{where}.score: expected a finite number, got {score!r}")
            boxes = _tube_boxes(item["boxes"], float(score), where + ".boxes")
            if gt is not None:
                nf = int(gt.nframes[video])
                if boxes[0, 0] < 1 or boxes[-1, 0] > nf:
                    raise StadError(f"{where}.boxes: frames {int(boxes[0, 0])}..{int(boxes[-1, 0])} outside 1..{nf} of the video")
            tubes.append(Tube(label=label, score=float(score), boxes=boxes))
        out[video] = tubes
    return out


def _tube_boxes(rows: Any, score: float, where: str) -> np.ndarray:
    try:
        arr = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise StadError(f"{where}: expected a list of numeric rows of equal length: {err}") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] not in (5, 6):
        raise StadError(f"{where}: expected a non-empty list of [frame, x1, y1, x2, y2(, frame_score)] rows, got shape {arr.shape}")
    if arr.shape[1] == 5:
        arr = np.concatenate([arr, np.full((arr.shape[0], 1), score)], axis=1)
    finite = np.isfinite(arr)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise StadError(f"{where}[{i}][{j}]: not a finite number")
    frames = arr[:, 0]
    if (frames != np.rint(frames)).any():
        i = int(np.flatnonzero(frames != np.rint(frames))[0])
        raise StadError(f"{where}[{i}][0]: frame must be an integer, got {frames[i]}")
    if arr.shape[0] > 1 and (np.diff(frames) != 1).any():
        i = int(np.flatnonzero(np.diff(frames) != 1)[0]) + 1
        raise StadError(f"{where}[{i}][0]: frames must be consecutive, frame {frames[i]:g} follows {frames[i - 1]:g}")
    for a, b, name in ((1, 3, "x2 < x1"), (2, 4, "y2 < y1")):
        bad = arr[:, b] < arr[:, a]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise StadError(f"{where}[{i}]: {name} ({arr[i, b]} < {arr[i, a]})")
    return arr
