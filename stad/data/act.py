"""ACT ground-truth pickles (UCF101v2-GT.pkl, JHMDB-GT.pkl, MultiSports GT): read, check, write.

The layout is the one of the ACT release (Kalogeiton et al., "Action Tubelet Detector for
Spatio-Temporal Action Localization", ICCV 2017), also read by MOC-Detector and MMAction2's
MultiSports evaluation. A pickled dict with keys:

* ``labels``: list of class names; a tube's label is an index into it (0-based);
* ``gttubes``: video -> label index -> list of ``(L, 5)`` arrays ``[frame, x1, y1, x2, y2]``
  (frames from 1, consecutive; pixel boxes of the original resolution, ACT "+1" convention);
* ``nframes``: video -> number of frames;
* ``train_videos`` / ``test_videos``: one list of videos per split (MultiSports' GT has no
  ``train_videos``: read as one empty train list per test split);
* ``resolution``: video -> ``(height, width)``;
* optional ``visibility`` (written by stad's synthetic benchmark): video -> label -> list of ``(L,)``
  visible fractions parallel to ``gttubes``.

Old pickles were written by Python 2, so they are read with ``encoding="latin1"``, through
:class:`stad.data.safe_pickle.RestrictedUnpickler` (containers, numbers, strings, numpy arrays: a file
never runs code).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from stad.data.safe_pickle import RestrictedUnpickler
from stad.errors import StadError
from stad.structures import Problem, TubeAnnotations

REQUIRED_KEYS = ("labels", "gttubes", "nframes", "test_videos", "resolution")


def load_act(path: str | Path) -> TubeAnnotations:
    """Read an ACT ground-truth pickle.

    Only the layout is checked here (keys, types, ``(L, 5)`` tube arrays); the content rules
    (boxes inside the frame, consecutive frames, disjoint splits ...) are in :func:`check_act`.

    Args:
        path: the ``*-GT.pkl`` file.

    Returns:
        The annotations; tubes as float64 ``(L, 5)`` arrays ``[frame, x1, y1, x2, y2]``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        StadError: not a pickle, a global outside the allow-list of :mod:`stad.data.safe_pickle` (the
            message names it), or a key/field has the wrong structure (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ACT ground-truth pickle not found: {path}")
    try:
        with path.open("rb") as f:
            raw = RestrictedUnpickler(f, source=str(path), what="ACT ground truth").load()  # latin1
    except StadError:  # a refused global, named
        raise
    except Exception as err:  # pickle raises many types (UnpicklingError, EOFError, ValueError ...)
        raise StadError(f"{path}: cannot read as a pickle: {type(err).__name__}: {err}") from err
    return act_from_dict(raw, source=str(path))


def act_from_dict(raw: Any, *, source: str = "<dict>") -> TubeAnnotations:
    """Build :class:`TubeAnnotations` from an already unpickled ACT dict (see :func:`load_act`)."""
    if not isinstance(raw, dict):
        raise StadError(f"{source}: expected a dict with keys {list(REQUIRED_KEYS)}, got {type(raw).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise StadError(f"{source}: missing key(s) {missing}; found {sorted(map(str, raw))}")

    labels = _as_list(raw["labels"], f"{source}: labels")
    labels = [str(name) for name in labels]
    nframes = {str(v): _as_int(n, f"{source}: nframes[{v!r}]") for v, n in _as_dict(raw["nframes"], f"{source}: nframes").items()}
    resolution = {}
    for video, hw in _as_dict(raw["resolution"], f"{source}: resolution").items():
        hw = _as_list(hw, f"{source}: resolution[{video!r}]")
        if len(hw) != 2:
            raise StadError(f"{source}: resolution[{video!r}]: expected (height, width), got {hw!r}")
        resolution[str(video)] = (_as_int(hw[0], f"{source}: resolution[{video!r}][0]"), _as_int(hw[1], f"{source}: resolution[{video!r}][1]"))
    test_videos = _splits(raw["test_videos"], f"{source}: test_videos")
    if "train_videos" in raw:
        train_videos = _splits(raw["train_videos"], f"{source}: train_videos")
    else:  # MultiSports' GT pickle holds only the test split
        train_videos = [[] for _ in test_videos]
    gttubes = _tube_dict(raw["gttubes"], f"{source}: gttubes", columns=5)
    visibility = None
    if raw.get("visibility") is not None:
        visibility = _tube_dict(raw["visibility"], f"{source}: visibility", columns=None)
    return TubeAnnotations(
        labels=labels,
        gttubes=gttubes,
        nframes=nframes,
        resolution=resolution,
        train_videos=train_videos,
        test_videos=test_videos,
        visibility=visibility,
        name=Path(source).stem if source != "<dict>" else "",
    )


def act_to_dict(ann: TubeAnnotations) -> dict[str, Any]:
    """The plain ACT dict of ``ann`` (numpy arrays, lists, dicts, tuples), as :func:`save_act` pickles it.

    Tubes are float32 ``(L, 5)`` arrays (as in the ACT release); ``visibility`` is written only when set.
    """
    out: dict[str, Any] = {
        "labels": list(ann.labels),
        "gttubes": {
            video: {int(label): [np.asarray(t, dtype=np.float32).reshape(-1, 5) for t in tubes] for label, tubes in per_video.items()}
            for video, per_video in ann.gttubes.items()
        },
        "nframes": {video: int(n) for video, n in ann.nframes.items()},
        "train_videos": [list(videos) for videos in ann.train_videos],
        "test_videos": [list(videos) for videos in ann.test_videos],
        "resolution": {video: (int(hw[0]), int(hw[1])) for video, hw in ann.resolution.items()},
    }
    if ann.visibility is not None:
        out["visibility"] = {
            video: {int(label): [np.asarray(v, dtype=np.float32).reshape(-1) for v in vis] for label, vis in per_video.items()}
            for video, per_video in ann.visibility.items()
        }
    return out


def save_act(ann: TubeAnnotations, path: str | Path) -> None:
    """Write ``ann`` as an ACT pickle (protocol 2, plain numpy/list/dict) readable by the ACT/MOC code."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(act_to_dict(ann), f, protocol=2)


def check_act(ann: TubeAnnotations) -> list[Problem]:
    """Structure-level checks of ACT annotations; returns every problem found (empty when clean).

    Rules: every video has ``nframes`` >= 1 and a ``resolution`` ``(H, W)`` with positive sides;
    tube labels index ``labels``; tubes are ``(L, 5)`` finite arrays with L >= 1 on consecutive
    frames inside ``1..nframes``; boxes are non-degenerate (``x2 >= x1``, ``y2 >= y1``) and inside the
    frame (``0 <= x1``, ``x2 <= W``, ``0 <= y1``, ``y2 <= H``; ``W``/``H`` themselves are allowed as the
    real UCF101-24 boxes reach ``x + w = 320``); ``visibility`` (if any) parallels ``gttubes`` with
    values in [0, 1]; train and test of each split are disjoint; every split video is known; every
    video is in some split; train and test hold the same number of splits.
    """
    problems: list[Problem] = []
    videos = set(ann.nframes)
    for video in sorted(videos):
        if ann.nframes[video] < 1:
            problems.append(Problem(video, "nframes", f"must be >= 1, got {ann.nframes[video]}"))
        hw = ann.resolution.get(video)
        if hw is None:
            problems.append(Problem(video, "resolution", "missing (expected (height, width))"))
        elif hw[0] < 1 or hw[1] < 1:
            problems.append(Problem(video, "resolution", f"sides must be >= 1, got (height, width) = {tuple(hw)}"))
    for video in sorted(set(ann.resolution) - videos):
        problems.append(Problem(video, "resolution", "video has a resolution but no nframes entry"))

    for video in sorted(ann.gttubes):
        if video not in videos:
            problems.append(Problem(video, "gttubes", "video has tubes but no nframes entry"))
            continue
        nframes = ann.nframes[video]
        height, width = ann.resolution.get(video, (None, None))
        for label, tubes in sorted(ann.gttubes[video].items()):
            if not 0 <= label < len(ann.labels):
                problems.append(Problem(video, "label", f"label index {label} is not in 0..{len(ann.labels) - 1}"))
            for i, tube in enumerate(tubes):
                where = f"{video} label {label} tube {i}"
                problems.extend(_check_tube(np.asarray(tube), where, nframes=nframes, height=height, width=width))
                if ann.visibility is not None:
                    vis_tubes = ann.visibility.get(video, {}).get(label, [])
                    if i >= len(vis_tubes):
                        problems.append(Problem(where, "visibility", "missing for this tube"))
                        continue
                    vis = np.asarray(vis_tubes[i], dtype=np.float64).reshape(-1)
                    if len(vis) != len(tube):
                        problems.append(Problem(where, "visibility", f"has {len(vis)} values for {len(tube)} boxes"))
                    elif not np.all((vis >= 0) & (vis <= 1)):
                        problems.append(Problem(where, "visibility", f"values must be in [0, 1], got min {vis.min()} max {vis.max()}"))

    if len(ann.train_videos) != len(ann.test_videos):
        problems.append(Problem("splits", "train_videos", f"{len(ann.train_videos)} train splits but {len(ann.test_videos)} test splits"))
    if not ann.train_videos and not ann.test_videos:
        problems.append(Problem("splits", "test_videos", "no split defined"))
    in_split: set[str] = set()
    for subset, lists in (("train_videos", ann.train_videos), ("test_videos", ann.test_videos)):
        for s, split in enumerate(lists, start=1):
            seen: set[str] = set()
            for video in split:
                if video in seen:
                    problems.append(Problem(video, subset, f"listed twice in split {s}"))
                seen.add(video)
                if video not in videos:
                    problems.append(Problem(video, subset, f"split {s} lists an unknown video"))
            in_split |= seen
    for s, (train, test) in enumerate(zip(ann.train_videos, ann.test_videos), start=1):
        for video in sorted(set(train) & set(test)):
            problems.append(Problem(video, "test_videos", f"in both train and test of split {s}"))
    if ann.train_videos or ann.test_videos:
        for video in sorted(videos - in_split):
            problems.append(Problem(video, "train_videos", "video is in no split"))
    return problems


def _check_tube(tube: np.ndarray, where: str, *, nframes: int, height: int | None, width: int | None) -> list[Problem]:
    """Problems of one ``(L, 5)`` tube ``[frame, x1, y1, x2, y2]``."""
    if tube.ndim != 2 or tube.shape[1] != 5 or len(tube) == 0:
        return [Problem(where, "boxes", f"expected an (L, 5) array with L >= 1, got shape {tube.shape}")]
    if not np.all(np.isfinite(tube)):
        row = int(np.argwhere(~np.isfinite(tube))[0, 0])
        return [Problem(where, "boxes", f"non-finite value in row {row}: {tube[row].tolist()}")]
    problems = []
    frames = tube[:, 0]
    if np.any(frames != np.round(frames)):
        problems.append(Problem(where, "frame", f"frame numbers must be integers, got {frames[frames != np.round(frames)][0]}"))
    gaps = np.flatnonzero(np.diff(frames) != 1)
    if len(gaps):
        g = int(gaps[0])
        problems.append(Problem(where, "frame", f"frames not consecutive: {frames[g]:g} then {frames[g + 1]:g} ({len(gaps)} break(s))", frame=int(frames[g + 1])))
    outside = (frames < 1) | (frames > nframes)
    if np.any(outside):
        problems.append(Problem(where, "frame", f"{int(outside.sum())} frame(s) outside 1..{nframes}, first {frames[outside][0]:g}", frame=int(frames[outside][0])))
    x1, y1, x2, y2 = tube[:, 1], tube[:, 2], tube[:, 3], tube[:, 4]
    for name, bad, text in (
        ("x2", x2 < x1, "x2 < x1"),
        ("y2", y2 < y1, "y2 < y1"),
        ("x1", x1 < 0, "x1 < 0"),
        ("y1", y1 < 0, "y1 < 0"),
        ("x2", x2 > width if width is not None else np.zeros_like(x2, bool), f"x2 > width {width}"),
        ("y2", y2 > height if height is not None else np.zeros_like(y2, bool), f"y2 > height {height}"),
    ):
        if np.any(bad):
            row = int(np.flatnonzero(bad)[0])
            problems.append(
                Problem(where, name, f"{text} in {int(bad.sum())} box(es), first [x1, y1, x2, y2] = {tube[row, 1:].tolist()}", frame=int(frames[row]))
            )
    return problems


def _as_dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise StadError(f"{where}: expected a dict, got {type(value).__name__}")
    return value


def _as_list(value: Any, where: str) -> list:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if not isinstance(value, (list, tuple)):
        raise StadError(f"{where}: expected a list, got {type(value).__name__}")
    return list(value)


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)) or int(value) != value:
        raise StadError(f"{where}: expected an integer, got {value!r}")
    return int(value)


def _splits(value: Any, where: str) -> list[list[str]]:
    lists = _as_list(value, where)
    return [[str(v) for v in _as_list(split, f"{where}[{s}]")] for s, split in enumerate(lists)]


def _tube_dict(value: Any, where: str, *, columns: int | None) -> dict[str, dict[int, list[np.ndarray]]]:
    """video -> label -> list of float64 arrays (``(L, columns)``, or ``(L,)`` when columns is None)."""
    out: dict[str, dict[int, list[np.ndarray]]] = {}
    for video, per_video in _as_dict(value, where).items():
        out[str(video)] = {}
        for label, tubes in _as_dict(per_video, f"{where}[{video!r}]").items():
            label_idx = _as_int(label, f"{where}[{video!r}] label key")
            arrays = []
            for i, tube in enumerate(_as_list(tubes, f"{where}[{video!r}][{label!r}]")):
                try:
                    arr = np.asarray(tube, dtype=np.float64)
                except (TypeError, ValueError) as err:
                    raise StadError(f"{where}[{video!r}][{label!r}][{i}]: not a numeric array: {err}") from err
                if columns is None:
                    arr = arr.reshape(-1)
                elif arr.ndim != 2 or arr.shape[1] != columns:
                    raise StadError(f"{where}[{video!r}][{label!r}][{i}]: expected shape (L, {columns}), got {arr.shape}")
                arrays.append(arr)
            out[str(video)][label_idx] = arrays
    return out
