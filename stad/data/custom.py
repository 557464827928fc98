"""stad's simple JSON format for users' own spatio-temporal action data (docs/custom_format.md).

One file per data set::

    {"name": "my-set",
     "labels": ["wave", "jump"],
     "frames": "frames/{video}/{frame:05d}.jpg",            # optional default pattern
     "videos": {"v1": {"nframes": 40, "height": 240, "width": 320,
                       "frames": "v1_frames/{frame:05d}.jpg",  # optional, overrides the default
                       "tubes": [{"label": "wave",             # a name of "labels" or its 0-based index
                                  "boxes": [[1, 10, 20, 50, 90], ...],   # [frame, x1, y1, x2, y2]
                                  "visibility": [1.0, ...]}]}},         # optional, one per box
     "splits": [{"train": ["v1"], "test": ["v2"]}]}

Frames are numbered from 1; boxes are ``x1, y1, x2, y2`` float pixels (ACT "+1" convention).
Frame patterns are relative to the JSON file's folder and use Python ``str.format`` fields
``{video}`` and ``{frame}``. Every error names the file and the JSON path of the bad field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stad.errors import StadError
from stad.structures import TubeAnnotations
from stad.textio import read_text


@dataclass
class CustomDataset:
    """A data set in the custom JSON format.

    Attributes:
        annotations: the tubes, frame counts, resolutions and splits (labels 0-based).
        frames: video -> frame path pattern with ``{frame}`` (and optionally ``{video}``), relative
            to ``root``; videos without frames on disk are absent.
        root: the folder that frame patterns are relative to (the JSON file's folder), if known.
    """

    annotations: TubeAnnotations
    frames: dict[str, str] = field(default_factory=dict)
    root: Path | None = None

    def frame_path(self, video: str, frame: int) -> Path | None:
        """Path of ``frame`` (from 1) of ``video``, or None when the video has no frame pattern."""
        pattern = self.frames.get(video)
        if pattern is None:
            return None
        return (self.root or Path(".")) / pattern.format(video=video, frame=frame)


def load_custom(path: str | Path) -> CustomDataset:
    """Read a custom JSON data set; raises :class:`StadError` naming the file and JSON path of any bad field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"custom data set file not found: {path}")
    try:
        obj = json.loads(read_text(path, what="a stad custom-format JSON file"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StadError(f"{path}: not valid JSON: {err}") from err
    dataset = custom_from_json(obj, source=str(path))
    dataset.root = path.parent
    if not dataset.annotations.name:
        dataset.annotations.name = path.stem
    return dataset


def custom_from_json(obj: Any, *, source: str = "<json>") -> CustomDataset:
    """Parse the JSON object of a custom data set (see the module docstring)."""
    root = _Reader(source)
    top = root.dict(obj, "$", required=("labels", "videos"), optional=("name", "frames", "splits"))
    labels = [root.str(name, f"$.labels[{i}]") for i, name in enumerate(root.list(top["labels"], "$.labels"))]
    if len(set(labels)) != len(labels):
        dup = next(n for n in labels if labels.count(n) > 1)
        raise StadError(f"{source}: $.labels: label {dup!r} is listed twice")
    default_pattern = root.pattern(top["frames"], "$.frames") if "frames" in top else None

    ann = TubeAnnotations(labels=labels, gttubes={}, nframes={}, resolution={}, name=root.str(top.get("name", ""), "$.name"))
    frames: dict[str, str] = {}
    visibility: dict[str, dict[int, list[np.ndarray]]] = {}
    any_visibility = False
    for video, entry in root.dict(top["videos"], "$.videos").items():
        vpath = f"$.videos[{json.dumps(video)}]"
        entry = root.dict(entry, vpath, required=("nframes", "height", "width"), optional=("frames", "tubes"))
        ann.nframes[video] = root.int(entry["nframes"], f"{vpath}.nframes", minimum=1)
        ann.resolution[video] = (root.int(entry["height"], f"{vpath}.height", minimum=1), root.int(entry["width"], f"{vpath}.width", minimum=1))
        pattern = root.pattern(entry["frames"], f"{vpath}.frames") if "frames" in entry else default_pattern
        if pattern is not None:
            frames[video] = pattern
        per_video: dict[int, list[np.ndarray]] = {}
        vis_per_video: dict[int, list[np.ndarray]] = {}
        for i, tube in enumerate(root.list(entry.get("tubes", []), f"{vpath}.tubes")):
            tpath = f"{vpath}.tubes[{i}]"
            tube = root.dict(tube, tpath, required=("label", "boxes"), optional=("visibility",))
            label = root.label(tube["label"], f"{tpath}.label", labels)
            boxes = root.number_rows(tube["boxes"], f"{tpath}.boxes", columns=5)
            if "visibility" in tube:
                vis = root.number_rows(tube["visibility"], f"{tpath}.visibility", columns=None)
                if len(vis) != len(boxes):
                    raise StadError(f"{source}: {tpath}.visibility: {len(vis)} values for {len(boxes)} boxes")
                any_visibility = True
            else:
                vis = np.ones(len(boxes))
            per_video.setdefault(label, []).append(boxes)
            vis_per_video.setdefault(label, []).append(vis)
        ann.gttubes[video] = per_video
        visibility[video] = vis_per_video
    ann.visibility = visibility if any_visibility else None

    for s, split in enumerate(root.list(top.get("splits", []), "$.splits")):
        spath = f"$.splits[{s}]"
        split = root.dict(split, spath, required=("train", "test"))
        for subset, lists in (("train", ann.train_videos), ("test", ann.test_videos)):
            names = [root.str(v, f"{spath}.{subset}[{j}]") for j, v in enumerate(root.list(split[subset], f"{spath}.{subset}"))]
            unknown = [v for v in names if v not in ann.nframes]
            if unknown:
                raise StadError(f"{source}: {spath}.{subset}: unknown video {unknown[0]!r} (not in $.videos)")
            lists.append(names)
    return CustomDataset(annotations=ann, frames=frames)


def custom_to_json(dataset: CustomDataset) -> dict[str, Any]:
    """The JSON object of ``dataset`` (labels written by name; visibility only when set)."""
    ann = dataset.annotations
    videos: dict[str, Any] = {}
    for video in sorted(ann.nframes):
        height, width = ann.resolution[video]
        entry: dict[str, Any] = {"nframes": int(ann.nframes[video]), "height": int(height), "width": int(width)}
        if video in dataset.frames:
            entry["frames"] = dataset.frames[video]
        tubes = []
        for label, tubes_of_label in sorted(ann.gttubes.get(video, {}).items()):
            for i, boxes in enumerate(tubes_of_label):
                tube: dict[str, Any] = {"label": ann.labels[label], "boxes": [[_num(v) for v in row] for row in np.asarray(boxes).tolist()]}
                if ann.visibility is not None:
                    try:
                        vis = ann.visibility[video][label][i]
                    except (KeyError, IndexError) as err:
                        raise StadError(f"visibility is set but missing for {video} label {label} tube {i}") from err
                    tube["visibility"] = [float(v) for v in np.asarray(vis).reshape(-1)]
                tubes.append(tube)
        entry["tubes"] = tubes
        videos[video] = entry
    return {
        "name": ann.name,
        "labels": list(ann.labels),
        "videos": videos,
        "splits": [{"train": list(train), "test": list(test)} for train, test in zip(ann.train_videos, ann.test_videos)],
    }


def save_custom(dataset: CustomDataset, path: str | Path) -> None:
    """Write ``dataset`` as custom JSON (see :func:`custom_to_json`), creating the folder."""
    ann = dataset.annotations
    if len(ann.train_videos) != len(ann.test_videos):
        raise StadError(f"cannot write {path}: {len(ann.train_videos)} train splits but {len(ann.test_videos)} test splits")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(custom_to_json(dataset), indent=1) + "\n", encoding="utf-8")


def from_tube_annotations(ann: TubeAnnotations, *, frames: str | None = None) -> CustomDataset:
    """Wrap ACT annotations as a custom data set; ``frames``: one pattern for every video (e.g.
    ``"rgb-images/{video}/{frame:05d}.jpg"``), or None for no frame paths."""
    patterns = {video: frames for video in ann.nframes} if frames is not None else {}
    return CustomDataset(annotations=ann, frames=patterns)


def _num(value: float) -> int | float:
    """Integers stay integers in the JSON (frame numbers, integer pixels)."""
    return int(value) if float(value).is_integer() else float(value)


class _Reader:
    """Type checks with errors naming the source file and the JSON path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> StadError:
        return StadError(f"{self.source}: {where}: {message}")

    def dict(self, value: Any, where: str, *, required: tuple[str, ...] = (), optional: tuple[str, ...] | None = None) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {_kind(value)}")
        missing = [k for k in required if k not in value]
        if missing:
            raise self.fail(where, f"missing field(s) {missing}")
        if optional is not None:
            unknown = sorted(set(value) - set(required) - set(optional))
            if unknown:
                raise self.fail(where, f"unknown field(s) {unknown}; allowed: {sorted(required + optional)}")
        return value

    def list(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        return value

    def str(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {_kind(value)}")
        return value

    def int(self, value: Any, where: str, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise self.fail(where, f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.fail(where, f"must be >= {minimum}, got {value!r}")
        return int(value)

    def pattern(self, value: Any, where: str) -> str:
        pattern = self.str(value, where)
        try:
            pattern.format(video="v", frame=1)
        except (KeyError, IndexError, ValueError) as err:
            raise self.fail(where, f"bad frame pattern {pattern!r} (fields: {{video}}, {{frame}}): {err!r}") from err
        if "{frame" not in pattern:
            raise self.fail(where, f"frame pattern {pattern!r} has no {{frame}} field")
        return pattern

    def label(self, value: Any, where: str, labels: list[str]) -> int:
        if isinstance(value, str):
            if value not in labels:
                raise self.fail(where, f"unknown label {value!r}; labels are {labels}")
            return labels.index(value)
        index = self.int(value, where, minimum=0)
        if index >= len(labels):
            raise self.fail(where, f"label index {index} is not in 0..{len(labels) - 1}")
        return index

    def number_rows(self, value: Any, where: str, *, columns: int | None) -> np.ndarray:
        """A list of numbers (columns None) or of ``columns``-number rows, as float64."""
        rows = self.list(value, where)
        if not rows:
            raise self.fail(where, "is empty")
        for r, row in enumerate(rows):
            items = [row] if columns is None else self.list(row, f"{where}[{r}]")
            if columns is not None and len(items) != columns:
                raise self.fail(f"{where}[{r}]", f"expected {columns} numbers [frame, x1, y1, x2, y2], got {len(items)}")
            for c, item in enumerate(items):
                if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                    at = f"{where}[{r}]" if columns is None else f"{where}[{r}][{c}]"
                    raise self.fail(at, f"expected a finite number, got {item!r}")
        return np.asarray(rows, dtype=np.float64)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), repr(value))
