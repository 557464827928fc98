"""Converters from the public annotation files of UCF101-24, JHMDB-21 and MultiSports to ACT annotations.

Sources (facts checked in ``shared/realdata/SOURCES.md``):

* UCF101-24, corrected annotations of Singh et al. (github.com/gurkirt/corrected-UCF101-Annots):
  ``pyannot.pkl`` (0-based ``sf``, exclusive ``ef``, 0-based ``label``) and ``finalAnnots.mat``
  (1-based inclusive ``sf``/``ef``, 1-based ``class``); both hold boxes ``[x, y, w, h]`` as uint8 or
  uint16, so ``x + w`` must be computed after a cast (it wraps around in 1445 tubes otherwise).
* JHMDB-21 puppet masks (``<class>/<video>.mat`` with ``part_mask`` ``(H, W, T)`` uint8 0/1); a box
  per frame is the extent of the mask. Split 1's test videos can be read from YOWO's per-frame
  ground truth zip (``groundtruths_jhmdb/<class>_<video>_<frame:05d>.txt``, lines
  ``cls(1-based) x1 y1 x2 y2``).
* MultiSports' ACT pickle loads with :func:`stad.data.act.load_act` as is.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stad.boxes import xywh_to_xyxy
from stad.data.safe_pickle import RestrictedUnpickler
from stad.errors import StadError
from stad.structures import TubeAnnotations
from stad.textio import read_text

UCF24_RESOLUTION = (240, 320)  # (height, width) of every UCF101 video
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v")


@dataclass
class _Track:
    """One annotated tube of a source file: 0-based label, first frame (from 1), ``(L, 4)`` boxes ``x1, y1, x2, y2``."""

    label: int
    start: int
    boxes: np.ndarray


def read_video_list(path: str | Path) -> list[str]:
    """Video names of a split list file (e.g. ``testlist01.txt``), one per line, blank lines skipped.

    A trailing video suffix (``.avi`` ...) and a trailing class index column (UCF101's trainlist
    format ``Class/v_x.avi 1``) are removed, so names read ``Class/v_Class_gXX_cYY``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video list not found: {path}")
    names = []
    for line in read_text(path, what="a video list").splitlines():
        name = line.strip().split(" ")[0] if line.strip() else ""
        if not name:
            continue
        for suffix in VIDEO_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        names.append(name)
    return names


def load_ucf24_pyannot(path: str | Path, *, test_list: list[str] | None = None) -> TubeAnnotations:
    """UCF101-24 ground truth from the corrected ``pyannot.pkl`` (or ``pyannot_with_class_names.pkl``).

    Box convention (the one of ACT's ``UCF101v2-GT.pkl``): ``x1 = x``, ``y1 = y``, ``x2 = x + w``,
    ``y2 = y + h`` in pixels of the 320x240 frames, computed in float64 (the file's uint8 would wrap).
    Tube frames: the file's 0-based ``sf`` and exclusive ``ef`` become frames ``sf + 1 .. ef`` (from 1).

    Args:
        path: the pickle.
        test_list: split-1 test videos (``Class/v_...``, e.g. from :func:`read_video_list` on
            ``testlist01.txt``); all other videos form the train split. ``None``: no split is set.

    Returns:
        ACT annotations: 24 labels (the class folder names, in label-index order), resolution (240, 320).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"UCF101-24 annotation pickle not found: {path}")
    try:
        with path.open("rb") as f:
            raw = RestrictedUnpickler(f, source=str(path), what="UCF101-24 annotations").load()  # latin1
    except StadError:  # a global outside stad.data.safe_pickle's allow-list, named
        raise
    except Exception as err:
        raise StadError(f"{path}: cannot read as a pickle: {type(err).__name__}: {err}") from err
    db = raw.get("db", raw) if isinstance(raw, dict) else None  # pyannot_with_class_names.pkl wraps it in "db"
    if not isinstance(db, dict):
        raise StadError(f"{path}: expected a dict video -> {{numf, label, annotations}}, got {type(raw).__name__}")
    videos: dict[str, tuple[int, list[_Track]]] = {}
    for video, entry in db.items():
        where = f"{path}: {video}"
        try:
            numf = int(entry["numf"])
            tracks = []
            for i, tube in enumerate(entry["annotations"]):
                sf, ef = int(tube["sf"]), int(tube["ef"])
                boxes = xywh_to_xyxy(tube["boxes"])  # cast to float64 before x + w (uint8 trap)
                if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != ef - sf:
                    raise StadError(f"{where}: annotations[{i}]: {boxes.shape} boxes for sf={sf}, ef={ef} (expected ef - sf rows)")
                tracks.append(_Track(label=int(tube["label"]), start=sf + 1, boxes=boxes))
        except (KeyError, TypeError) as err:
            raise StadError(f"{where}: missing or malformed field: {err!r}") from err
        videos[str(video)] = (numf, tracks)
    return _ucf24_annotations(videos, test_list=test_list, source=str(path))


def load_ucf24_mat(path: str | Path, *, test_list: list[str] | None = None) -> TubeAnnotations:
    """UCF101-24 ground truth from the corrected ``finalAnnots.mat`` (same content as ``pyannot.pkl``).

    The file's 1-based inclusive ``sf``/``ef`` are the tube's frames ``sf .. ef``; ``class`` is 1-based.
    Boxes follow :func:`load_ucf24_pyannot` (``x2 = x + w``, ``y2 = y + h``, float64).
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"UCF101-24 annotation .mat not found: {path}")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as err:
        raise StadError(f"{path}: cannot read as a MATLAB file: {type(err).__name__}: {err}") from err
    if "annot" not in mat:
        raise StadError(f"{path}: no 'annot' variable; found {sorted(k for k in mat if not k.startswith('__'))}")
    videos: dict[str, tuple[int, list[_Track]]] = {}
    for i, entry in enumerate(np.atleast_1d(mat["annot"])):
        try:
            video = str(entry.name)
            tracks = []
            for j, tube in enumerate(np.atleast_1d(entry.tubes)):
                sf, ef = int(tube.sf), int(tube.ef)
                boxes = xywh_to_xyxy(np.asarray(tube.boxes).reshape(-1, 4))
                if len(boxes) != ef - sf + 1:
                    raise StadError(f"{path}: annot[{i}] ({video}) tubes[{j}]: {len(boxes)} boxes for sf={sf}, ef={ef} (expected ef - sf + 1)")
                tracks.append(_Track(label=int(getattr(tube, "class")) - 1, start=sf, boxes=boxes))
            videos[video] = (int(entry.num_imgs), tracks)
        except AttributeError as err:
            raise StadError(f"{path}: annot[{i}]: missing field: {err}") from err
    return _ucf24_annotations(videos, test_list=test_list, source=str(path))


def _ucf24_annotations(videos: dict[str, tuple[int, list[_Track]]], *, test_list: list[str] | None, source: str) -> TubeAnnotations:
    """Common part of the UCF101-24 readers: labels from class folders, gttubes, split 1."""
    label_names: dict[int, str] = {}
    for video, (_, tracks) in videos.items():
        folder = video.split("/")[0]
        for track in tracks:
            known = label_names.setdefault(track.label, folder)
            if known != folder:
                raise StadError(f"{source}: {video}: label {track.label} is class {known!r} elsewhere, but this video is in folder {folder!r}")
    if sorted(label_names) != list(range(len(label_names))):
        raise StadError(f"{source}: label indices are not 0..C-1: {sorted(label_names)}")
    gttubes: dict[str, dict[int, list[np.ndarray]]] = {}
    for video, (_, tracks) in sorted(videos.items()):
        per_video: dict[int, list[np.ndarray]] = {}
        for track in tracks:
            frames = np.arange(track.start, track.start + len(track.boxes), dtype=np.float64)[:, None]  # [L, 1]
            per_video.setdefault(track.label, []).append(np.hstack([frames, track.boxes]))  # [L, 5]
        gttubes[video] = per_video
    ann = TubeAnnotations(
        labels=[label_names[i] for i in range(len(label_names))],
        gttubes=gttubes,
        nframes={video: numf for video, (numf, _) in sorted(videos.items())},
        resolution={video: UCF24_RESOLUTION for video in sorted(videos)},
        name="UCF101v2-GT",
    )
    if test_list is not None:
        set_test_split(ann, test_list, source=source)
    return ann


def set_test_split(ann: TubeAnnotations, test_list: list[str], *, source: str = "annotations") -> None:
    """Set split 1 of ``ann`` in place: test = ``test_list``, train = every other video (both sorted).

    Raises:
        StadError: a test video is not in ``ann`` (``source`` names the annotations in the message).
    """
    unknown = [v for v in test_list if v not in ann.nframes]
    if unknown:
        raise StadError(f"{source}: {len(unknown)} test-list video(s) not in the annotations, first {unknown[0]!r}")
    test = sorted(set(test_list))
    ann.test_videos = [test]
    ann.train_videos = [sorted(set(ann.nframes) - set(test))]


def mask_extent(mask: np.ndarray) -> np.ndarray:
    """Per-frame box of a ``(H, W, T)`` mask: ``(T, 4)`` float ``[xmin, ymin, xmax, ymax]``.

    Coordinates are 0-based pixel indices of the first and last mask pixel (inclusive), which is
    the ACT "+1" convention: area ``(x2 - x1 + 1) * (y2 - y1 + 1)`` counts the pixels of the extent.
    A frame without mask pixels gives a row of NaN.
    """
    mask = np.asarray(mask) != 0
    if mask.ndim != 3:
        raise StadError(f"expected an (H, W, T) mask, got shape {mask.shape}")
    cols = mask.any(axis=0)  # [W, T]
    rows = mask.any(axis=1)  # [H, T]
    out = np.stack(
        [
            cols.argmax(axis=0),  # first column with a mask pixel
            rows.argmax(axis=0),
            cols.shape[0] - 1 - cols[::-1].argmax(axis=0),  # last column with a mask pixel
            rows.shape[0] - 1 - rows[::-1].argmax(axis=0),
        ],
        axis=1,
    ).astype(np.float64)  # [T, 4]
    out[~cols.any(axis=0)] = np.nan
    return out


def load_jhmdb_masks(mask_dir: str | Path, *, test_list: list[str] | None = None) -> TubeAnnotations:
    """JHMDB-21 ground truth (the ``JHMDB-GT.pkl`` layout) from the puppet masks ``<class>/<video>.mat``.

    One tube per video over all its frames; box per frame = mask extent as 0-based inclusive pixel
    indices ``[xmin, ymin, xmax, ymax]`` (see :func:`mask_extent`). YOWO's per-frame ground truth is
    ``(x1 + 1, y1 + 1, min(x2 + 2, W), min(y2 + 2, H))`` of these boxes. Labels: the class folders,
    sorted alphabetically. Videos are named ``<class>/<video>``, resolution ``(H, W)`` of the mask.

    Args:
        mask_dir: folder with one sub-folder per class.
        test_list: split-1 test videos (``<class>/<video>``); the others form the train split.
            ``None``: no split is set.
    """
    import scipy.io

    mask_dir = Path(mask_dir)
    if not mask_dir.is_dir():
        raise FileNotFoundError(f"JHMDB puppet mask folder not found: {mask_dir}")
    labels = sorted(p.name for p in mask_dir.iterdir() if p.is_dir())
    if not labels:
        raise StadError(f"{mask_dir}: no class sub-folders")
    ann = TubeAnnotations(labels=labels, gttubes={}, nframes={}, resolution={}, name="JHMDB-GT")
    for label, name in enumerate(labels):
        files = sorted((mask_dir / name).glob("*.mat"))
        if not files:
            raise StadError(f"{mask_dir / name}: no .mat mask files")
        for file in files:
            try:
                mask = scipy.io.loadmat(str(file), variable_names=["part_mask"]).get("part_mask")
            except Exception as err:
                raise StadError(f"{file}: cannot read as a MATLAB file: {type(err).__name__}: {err}") from err
            if mask is None or mask.ndim != 3:
                raise StadError(f"{file}: expected a 'part_mask' (H, W, T) array, got {None if mask is None else mask.shape}")
            boxes = mask_extent(mask)  # [T, 4]
            empty = np.flatnonzero(np.isnan(boxes[:, 0]))
            if len(empty):
                raise StadError(f"{file}: part_mask frame {empty[0] + 1} has no mask pixel ({len(empty)} empty frame(s))")
            video = f"{name}/{file.stem}"
            frames = np.arange(1, len(boxes) + 1, dtype=np.float64)[:, None]  # [T, 1]
            ann.gttubes[video] = {label: [np.hstack([frames, boxes])]}
            ann.nframes[video] = int(mask.shape[2])
            ann.resolution[video] = (int(mask.shape[0]), int(mask.shape[1]))
    if test_list is not None:
        set_test_split(ann, test_list, source=str(mask_dir))
    return ann


def read_yowo_jhmdb_gt(path: str | Path, labels: list[str]) -> dict[str, np.ndarray]:
    """YOWO's JHMDB-21 per-frame ground truth (``groundtruths_jhmdb.zip`` or its extracted folder).

    File names are ``<class>_<video>_<frame:05d>.txt`` with one line ``cls x1 y1 x2 y2`` (class
    1-based, integer pixels). Class names contain underscores, so the class is the longest of
    ``labels`` that prefixes the name.

    Returns:
        ``<class>/<video>`` -> ``(N, 6)`` int64 array rows ``[frame, label (0-based), x1, y1, x2, y2]``
        sorted by frame (YOWO's numbers as written).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"YOWO ground-truth zip/folder not found: {path}")
    if path.is_dir():
        entries = ((p.name, p.read_text()) for p in sorted(path.rglob("*.txt")))
    else:
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as err:
            raise StadError(f"{path}: not a zip file: {err}") from err
        entries = ((Path(n).name, archive.read(n).decode("utf-8")) for n in archive.namelist() if n.endswith(".txt"))
    by_length = sorted(labels, key=len, reverse=True)
    rows: dict[str, list[list[int]]] = {}
    for name, text in entries:
        stem = name[: -len(".txt")]
        cls = next((c for c in by_length if stem.startswith(c + "_")), None)
        video, _, frame = stem[len(cls) + 1 :].rpartition("_") if cls else ("", "", "")
        if cls is None or not video or not frame.isdigit():
            raise StadError(f"{path}: {name}: expected '<class>_<video>_<frame>.txt' with a class of {labels}")
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                values = [int(float(v)) for v in fields]
            except ValueError as err:
                raise StadError(f"{path}: {name} line {line_no}: not numbers: {line!r}") from err
            if len(values) != 5:
                raise StadError(f"{path}: {name} line {line_no}: expected 'cls x1 y1 x2 y2', got {line!r}")
            rows.setdefault(f"{cls}/{video}", []).append([int(frame), values[0] - 1, *values[1:]])
    return {video: np.array(sorted(r), dtype=np.int64) for video, r in sorted(rows.items())}


def jhmdb_test_list(path: str | Path, labels: list[str]) -> list[str]:
    """Split-1 test videos of JHMDB-21: from YOWO's ground-truth zip (or folder), or a text list."""
    path = Path(path)
    if path.suffix == ".zip" or path.is_dir():
        return sorted(read_yowo_jhmdb_gt(path, labels))
    return read_video_list(path)
