"""AVA file formats: annotation and prediction CSVs, label maps, excluded timestamps, proposals.

Formats (AVA v2.x, https://research.google.com/ava/download.html; PROTOCOLS.md §B):

* annotation CSV, no header: ``video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]``;
* prediction CSV, no header: ``video_id,timestamp,x1,y1,x2,y2,action_id,score`` (a 7-column row has
  score 1.0, as in the official evaluator);
* boxes are ``x1, y1, x2, y2`` normalized to [0, 1] (not clipped here); action ids are the file's
  1-based ids; timestamps are whole seconds, ``"0902"`` and ``"902"`` are the same keyframe;
* label maps: pbtxt ``item { name: "..." id: N }`` (ActivityNet evaluation list) or
  ``label { name: "..." label_id: N label_type: ... }`` (the full 80-class list), one field per
  line or all on one line; MMAction2's ``label_map.txt`` with ``N: name`` lines;
* excluded timestamps: CSV ``video_id,timestamp``;
* person proposals: a pickle ``{"video_id,timestamp": (N, 5) [x1, y1, x2, y2, score]}`` normalized
  (MMAction2's layout, timestamp written with 4 digits).

Frames on disk follow ``stad.data.frames.ava_frame_path``: ``<root>/frames/<video_id>/img_%05d.jpg``
at 30 fps counted from the start of the video, so the keyframe at second ``t`` is frame
``t * fps + 1`` (``ava_keyframe_index``).

Inside stad a class is the 0-based position of its id in the label map (``LabelMap.index_of``).
"""

from __future__ import annotations

import csv
import io
import pickle
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stad.data.frames import ava_frame_path
from stad.data.safe_pickle import safe_load_pickle
from stad.errors import StadError
from stad.structures import KeyframeLabels, Problem
from stad.textio import read_text

AVA_FPS = 30


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


@dataclass
class LabelMap:
    """The evaluated classes of an AVA label map, in file order (``C`` classes).

    Attributes:
        ids: the file's action ids (1-based in AVA), one per class.
        names: class names, parallel to ``ids`` (names may repeat; ids may not).
        label_types: ``label_type`` of each class where the file gives one (full AVA list), else None.
    """

    ids: list[int]
    names: list[str]
    label_types: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, action_ids: np.ndarray) -> np.ndarray:
        """0-based class index of each file action id, ``-1`` for ids not in the map; ``(N,)`` int64."""
        action_ids = np.asarray(action_ids, dtype=np.int64)
        if not self.ids:
            return np.full(action_ids.shape, -1, np.int64)
        ids = np.asarray(self.ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        pos = np.clip(np.searchsorted(sorted_ids, action_ids), 0, len(ids) - 1)
        return np.where(sorted_ids[pos] == action_ids, order[pos], -1).astype(np.int64)

    def display_names(self) -> list[str]:
        """Names made unique: a name shared by several ids gets ``" [id N]"`` appended."""
        counts: dict[str, int] = defaultdict(int)
        for name in self.names:
            counts[name] += 1
        return [name if counts[name] == 1 else f"{name} [id {i}]" for name, i in zip(self.names, self.ids)]


@dataclass
class AVARows:
    """Rows of an AVA annotation or prediction CSV, column-wise (``N`` rows, file order).

    Attributes:
        video: ``(N,)`` str, video ids.
        timestamp: ``(N,)`` int64, keyframe second (``int("0902") == 902``).
        boxes: ``(N, 4)`` float64 ``x1, y1, x2, y2`` normalized to [0, 1] (as written in the file).
        action_id: ``(N,)`` int64, the file's action id (1-based in AVA, not yet mapped to classes).
        person_id: ``(N,)`` int64, annotation files' 8th column; -1 where absent (7 columns, predictions).
        score: ``(N,)`` float64, prediction files' 8th column; 1.0 where absent (annotations, 7 columns).
        line: ``(N,)`` int64, the 1-based line of each row in ``path``.
        path: the file read ("" for rows built in memory).
    """

    video: np.ndarray
    timestamp: np.ndarray
    boxes: np.ndarray
    action_id: np.ndarray
    person_id: np.ndarray
    score: np.ndarray
    line: np.ndarray
    path: str = ""

    def __len__(self) -> int:
        return len(self.timestamp)

    @classmethod
    def from_arrays(
        cls,
        *,
        video: np.ndarray | list[str],
        timestamp: np.ndarray | list[int],
        boxes: np.ndarray,
        action_id: np.ndarray | list[int],
        person_id: np.ndarray | list[int] | None = None,
        score: np.ndarray | list[float] | None = None,
        path: str = "",
    ) -> "AVARows":
        """Build rows in memory (line numbers 1..N); missing person ids are -1, missing scores 1.0."""
        video_arr = np.asarray(video, dtype=str)
        n = len(video_arr)
        boxes_arr = np.asarray(boxes, dtype=np.float64).reshape(n, 4)
        return cls(
            video=video_arr,
            timestamp=np.asarray(timestamp, dtype=np.int64).reshape(n),
            boxes=boxes_arr,
            action_id=np.asarray(action_id, dtype=np.int64).reshape(n),
            person_id=np.full(n, -1, np.int64) if person_id is None else np.asarray(person_id, np.int64).reshape(n),
            score=np.ones(n, np.float64) if score is None else np.asarray(score, np.float64).reshape(n),
            line=np.arange(1, n + 1, dtype=np.int64),
            path=path,
        )

    def select(self, mask: np.ndarray) -> "AVARows":
        """The rows where ``mask`` (bool ``(N,)`` or index array) holds."""
        return AVARows(
            video=self.video[mask],
            timestamp=self.timestamp[mask],
            boxes=self.boxes[mask],
            action_id=self.action_id[mask],
            person_id=self.person_id[mask],
            score=self.score[mask],
            line=self.line[mask],
            path=self.path,
        )


# --------------------------------------------------------------------------------------------------
# CSV reading and writing
# --------------------------------------------------------------------------------------------------


def read_ava_annotations(path: str | Path) -> AVARows:
    """Read an AVA annotation CSV (7 or 8 columns: ``...,action_id[,person_id]``, no header).

    Raises:
        StadError: a row with a wrong column count or a bad value, naming the file and line.
    """
    return _read_ava_csv(Path(path), last_column="person_id")


def read_ava_predictions(path: str | Path) -> AVARows:
    """Read an AVA prediction CSV (``...,action_id,score``; a 7-column row gets score 1.0).

    Raises:
        StadError: a row with a wrong column count or a bad value, naming the file and line.
    """
    return _read_ava_csv(Path(path), last_column="score")


def _read_ava_csv(path: Path, *, last_column: str) -> AVARows:
    if not path.is_file():
        raise FileNotFoundError(f"AVA CSV not found: {path}")
    data = path.read_bytes()
    try:
        rows = _read_ava_csv_fast(path, data, last_column=last_column)
    except (ValueError, UnicodeDecodeError):
        rows = None  # mixed 7/8-column files or a bad row: the exact reader below explains or handles it
    if rows is None:
        rows = _read_ava_csv_exact(path, data, last_column=last_column)
    _check_finite(rows, last_column=last_column)
    return rows


def _read_ava_csv_fast(path: Path, data: bytes, *, last_column: str) -> AVARows | None:
    """numpy's C parser for the common case: every line has the same number of columns (7 or 8)."""
    if b"\r\n" in data:
        data = data.replace(b"\r\n", b"\n")  # Windows line ends; line numbers are unchanged
    if b"\r" in data or b'"' in data:
        return None
    lines_with_text = [chunk for chunk in data.split(b"\n", 64) if chunk.strip()]
    if not lines_with_text:
        return _empty_rows(str(path))
    ncols = lines_with_text[0].count(b",") + 1
    if ncols not in (7, 8):
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(buf)]])
    nonempty = ends > starts
    starts, ends = starts[nonempty], ends[nonempty]
    commas = np.flatnonzero(buf == ord(","))
    if len(commas) != len(starts) * (ncols - 1):
        return None
    first_comma = commas[:: ncols - 1]  # every line has ncols - 1 commas, checked below by the parser
    if len(first_comma) != len(starts) or np.any(first_comma < starts) or np.any(first_comma > ends):
        return None
    id_len = int((first_comma - starts).max())
    if id_len == 0:
        return None
    last_dtype = np.int64 if last_column == "person_id" else np.float64
    fields = [("video", f"U{id_len}"), ("timestamp", np.int64)]
    fields += [(name, np.float64) for name in ("x1", "y1", "x2", "y2")] + [("action_id", np.int64)]
    if ncols == 8:
        fields.append(("last", last_dtype))
    table = np.loadtxt(io.BytesIO(data), delimiter=",", dtype=fields, comments=None, encoding="utf-8", ndmin=1)
    n = len(table)
    if n != len(starts):
        return None
    line = np.flatnonzero(nonempty).astype(np.int64) + 1  # 1-based line numbers of the non-empty lines
    person_id = np.full(n, -1, np.int64)
    score = np.ones(n, np.float64)
    if ncols == 8:
        if last_column == "person_id":
            person_id = table["last"].astype(np.int64)
        else:
            score = table["last"].astype(np.float64)
    boxes = np.stack([table["x1"], table["y1"], table["x2"], table["y2"]], axis=1)
    return AVARows(
        video=table["video"],
        timestamp=table["timestamp"].astype(np.int64),
        boxes=boxes,
        action_id=table["action_id"].astype(np.int64),
        person_id=person_id,
        score=score,
        line=line,
        path=str(path),
    )


def _read_ava_csv_exact(path: Path, data: bytes, *, last_column: str) -> AVARows:
    """Row-by-row reader (csv module): mixed 7/8-column files, and exact errors with line numbers."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise StadError(f"{path}: not UTF-8 text ({err})") from None
    videos: list[str] = []
    timestamps: list[int] = []
    boxes: list[list[float]] = []
    actions: list[int] = []
    last: list[float | int] = []
    lines: list[int] = []
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        line_no = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) not in (7, 8):
            raise StadError(f"{path} line {line_no}: expected 7 or 8 columns, got {len(row)}: {','.join(row)!r}")
        if not row[0]:
            raise StadError(f"{path} line {line_no}: empty video_id")
        videos.append(row[0])
        timestamps.append(_parse(int, row[1], path, line_no, "timestamp"))
        boxes.append([_parse(float, v, path, line_no, name) for v, name in zip(row[2:6], ("x1", "y1", "x2", "y2"))])
        actions.append(_parse(int, row[6], path, line_no, "action_id"))
        if len(row) == 8:
            parser = int if last_column == "person_id" else float
            last.append(_parse(parser, row[7], path, line_no, last_column))
        else:
            last.append(-1 if last_column == "person_id" else 1.0)
        lines.append(line_no)
    n = len(videos)
    if n == 0:
        return _empty_rows(str(path))
    last_arr = np.asarray(last)
    return AVARows(
        video=np.asarray(videos, dtype=str),
        timestamp=np.asarray(timestamps, dtype=np.int64),
        boxes=np.asarray(boxes, dtype=np.float64).reshape(n, 4),
        action_id=np.asarray(actions, dtype=np.int64),
        person_id=last_arr.astype(np.int64) if last_column == "person_id" else np.full(n, -1, np.int64),
        score=last_arr.astype(np.float64) if last_column == "score" else np.ones(n, np.float64),
        line=np.asarray(lines, dtype=np.int64),
        path=str(path),
    )


def _parse(parser: type, value: str, path: Path, line_no: int, field: str) -> int | float:
    try:
        return parser(value)
    except ValueError:
        kind = "an integer" if parser is int else "a number"
        raise StadError(f"{path} line {line_no}: {field} must be {kind}, got {value!r}") from None


def _check_finite(rows: AVARows, *, last_column: str) -> None:
    bad = ~np.isfinite(rows.boxes).all(axis=1)
    if last_column == "score":
        bad |= ~np.isfinite(rows.score)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StadError(
            f"{rows.path} line {int(rows.line[i])}: non-finite value "
            f"(box {rows.boxes[i].tolist()}, score {float(rows.score[i])})"
        )


def _empty_rows(path: str) -> AVARows:
    return AVARows(
        video=np.zeros(0, dtype="U1"),
        timestamp=np.zeros(0, np.int64),
        boxes=np.zeros((0, 4), np.float64),
        action_id=np.zeros(0, np.int64),
        person_id=np.zeros(0, np.int64),
        score=np.zeros(0, np.float64),
        line=np.zeros(0, np.int64),
        path=path,
    )


def write_ava_annotations(path: str | Path, rows: AVARows, *, box_decimals: int | None = None) -> None:
    """Write rows as an AVA annotation CSV (8 columns with person_id when every row has one, else 7).

    Timestamps are written with 4 digits (``0902``) like the official files; ``box_decimals=None``
    writes the shortest exact repr of each coordinate, ``3`` the official files' precision.
    """
    with_person = len(rows) > 0 and bool(np.all(rows.person_id >= 0))
    last = [str(p) for p in rows.person_id.tolist()] if with_person else None
    _write_rows(Path(path), rows, last, box_decimals)


def write_ava_predictions(
    path: str | Path, rows: AVARows, *, box_decimals: int | None = None, score_decimals: int | None = None
) -> None:
    """Write rows as an AVA prediction CSV ``...,action_id,score`` (``None`` decimals = exact repr)."""
    scores = rows.score.tolist()
    last = [repr(s) if score_decimals is None else f"{s:.{score_decimals}f}" for s in scores]
    _write_rows(Path(path), rows, last, box_decimals)


def _write_rows(path: Path, rows: AVARows, last: list[str] | None, box_decimals: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if box_decimals is None:
        coords = [[repr(v) for v in box] for box in rows.boxes.tolist()]
    else:
        coords = [[f"{v:.{box_decimals}f}" for v in box] for box in rows.boxes.tolist()]
    out = []
    for i, (video, ts, box, action) in enumerate(
        zip(rows.video.tolist(), rows.timestamp.tolist(), coords, rows.action_id.tolist())
    ):
        fields = [video, f"{ts:04d}", *box, str(action)]
        if last is not None:
            fields.append(last[i])
        out.append(",".join(fields))
    path.write_text("\n".join(out) + ("\n" if out else ""), encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Label maps and excluded timestamps
# --------------------------------------------------------------------------------------------------

_BLOCK = re.compile(r"(\w+)\s*\{([^{}]*)\}", re.S)
_FIELD = re.compile(r"(\w+)\s*:\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s\"']+)")


def read_labelmap(path: str | Path) -> LabelMap:
    """Read a label map: pbtxt (``item {name id}`` or ``label {name label_id label_type}``) or ``N: name`` text.

    Raises:
        StadError: no classes, a block without name or id, a duplicate id, or an unreadable line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label map not found: {path}")
    text = read_text(path, what="an AVA label map")
    labelmap = _parse_pbtxt(text, path) if "{" in text else _parse_id_name_txt(text, path)
    if not labelmap.ids:
        raise StadError(f"{path}: label map has no classes")
    seen: dict[int, int] = {}
    for position, class_id in enumerate(labelmap.ids):
        if class_id in seen:
            raise StadError(f"{path}: duplicate id {class_id} (classes {seen[class_id] + 1} and {position + 1})")
        seen[class_id] = position
    return labelmap


def _parse_pbtxt(text: str, path: Path) -> LabelMap:
    ids: list[int] = []
    names: list[str] = []
    types: list[str | None] = []
    leftover = _BLOCK.sub("", re.sub(r"#[^\n]*", "", text)).strip()
    if leftover:
        raise StadError(f"{path}: text outside of 'item {{...}}' blocks: {leftover[:60]!r}")
    for block in _BLOCK.finditer(text):
        line_no = text.count("\n", 0, block.start()) + 1
        fields = {key: value for key, value in _FIELD.findall(block.group(2))}
        raw_id = fields.get("id", fields.get("label_id"))
        name = fields.get("name", fields.get("display_name"))
        if raw_id is None or name is None:
            raise StadError(f"{path} line {line_no}: '{block.group(1)}' block needs a name and an id (or label_id)")
        try:
            class_id = int(raw_id)
        except ValueError:
            raise StadError(f"{path} line {line_no}: id must be an integer, got {raw_id!r}") from None
        ids.append(class_id)
        names.append(name[1:-1] if name[:1] in "\"'" else name)
        label_type = fields.get("label_type")
        types.append(None if label_type is None else label_type.strip("\"'"))
    return LabelMap(ids=ids, names=names, label_types=types)


def _parse_id_name_txt(text: str, path: Path) -> LabelMap:
    ids: list[int] = []
    names: list[str] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        head, sep, name = line.partition(":")
        try:
            class_id = int(head)
        except ValueError:
            class_id = None
        if not sep or class_id is None or not name.strip():
            raise StadError(f"{path} line {line_no}: expected 'id: name', got {line!r}")
        ids.append(class_id)
        names.append(name.strip())
    return LabelMap(ids=ids, names=names, label_types=[None] * len(ids))


def write_labelmap(path: str | Path, labelmap: LabelMap) -> None:
    """Write a pbtxt label map in the ActivityNet dialect ``item { name: "..." id: N }``."""
    blocks = [f'item {{\n  name: "{name}"\n  id: {i}\n}}\n' for name, i in zip(labelmap.names, labelmap.ids)]
    Path(path).write_text("".join(blocks), encoding="utf-8")


def read_excluded_timestamps(path: str | Path) -> set[tuple[str, int]]:
    """Read an excluded-timestamps CSV ``video_id,timestamp`` into a set of ``(video_id, second)`` keys.

    Raises:
        StadError: a row that is not exactly two columns or whose timestamp is not an integer.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"excluded timestamps file not found: {path}")
    excluded: set[tuple[str, int]] = set()
    reader = csv.reader(io.StringIO(read_text(path, what="an AVA CSV")))
    for row in reader:
        if not row:
            continue
        if len(row) != 2 or not row[0]:
            raise StadError(f"{path} line {reader.line_num}: expected 'video_id,timestamp', got {','.join(row)!r}")
        excluded.add((row[0], int(_parse(int, row[1], path, reader.line_num, "timestamp"))))
    return excluded


def read_actor_visibility(path: str | Path) -> dict[tuple[str, int, int], float]:
    """Read a per-actor visibility CSV ``video_id,timestamp,person_id,visibility`` (``stad synth --layout ava``
    writes ``<name>_{train,val}_visibility.csv``) into ``(video_id, second, person_id) -> visible fraction``.

    Raises:
        StadError: a row that is not 4 columns, a number that does not parse or a visibility outside [0, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"visibility file not found: {path}")
    out: dict[tuple[str, int, int], float] = {}
    reader = csv.reader(io.StringIO(read_text(path, what="an AVA CSV")))
    for row in reader:
        if not row:
            continue
        if len(row) != 4 or not row[0]:
            raise StadError(f"{path} line {reader.line_num}: expected 'video_id,timestamp,person_id,visibility', got {','.join(row)!r}")
        value = float(_parse(float, row[3], path, reader.line_num, "visibility"))
        if not 0.0 <= value <= 1.0:
            raise StadError(f"{path} line {reader.line_num}: visibility must be in [0, 1], got {row[3]!r}")
        key = (row[0], int(_parse(int, row[1], path, reader.line_num, "timestamp")), int(_parse(int, row[2], path, reader.line_num, "person_id")))
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------------
# Person proposals
# --------------------------------------------------------------------------------------------------


def read_proposals(path: str | Path) -> dict[tuple[str, int], np.ndarray]:
    """Read a person-proposal pickle ``{"video_id,timestamp": (N, 5) [x1, y1, x2, y2, score]}``.

    Returns:
        ``(video_id, second)`` -> ``(N, 5)`` float64 ``x1, y1, x2, y2, score`` normalized; ``(N, 4)``
        arrays (no score) get score 1.0.

    The file is read with ``stad.data.safe_pickle.safe_load_pickle``: only containers, numbers,
    strings and numpy arrays are unpickled (Python 2 pickles included), any other global is refused.

    Raises:
        StadError: not a dict, a key that is not ``"video_id,timestamp"``, an array of another shape,
            a refused global (``"refused global ..."``) or a file that does not unpickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"proposal file not found: {path}")
    raw = safe_load_pickle(path, what="proposals")  # allow-list unpickler: no code runs from the file
    if not isinstance(raw, dict):
        raise StadError(f"{path}: expected a dict 'video_id,timestamp' -> (N, 5) array, got {type(raw).__name__}")
    proposals: dict[tuple[str, int], np.ndarray] = {}
    for key, value in raw.items():
        video, sep, ts = str(key).rpartition(",")
        try:
            second = int(ts)
        except ValueError:
            second = None
        if not sep or not video or second is None:
            raise StadError(f"{path}: key {key!r} is not 'video_id,timestamp'")
        boxes = np.asarray(value, dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 5)
        if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
            raise StadError(f"{path}: proposals of {key!r} must be (N, 5) [x1, y1, x2, y2, score], got {boxes.shape}")
        if boxes.shape[1] == 4:
            boxes = np.concatenate([boxes, np.ones((len(boxes), 1))], axis=1)
        proposals[(video, second)] = boxes
    return proposals


def write_proposals(path: str | Path, proposals: dict[tuple[str, int], np.ndarray]) -> None:
    """Write proposals ``(video_id, second) -> (N, 5)`` as MMAction2's pickle (keys ``"video_id,%04d"``)."""
    out = {}
    for (video, second), boxes in proposals.items():
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise StadError(f"proposals of ({video!r}, {second}) must be (N, 5), got {boxes.shape}")
        out[f"{video},{int(second):04d}"] = boxes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(out, f, protocol=4)


# --------------------------------------------------------------------------------------------------
# Keyframes with actors
# --------------------------------------------------------------------------------------------------


def read_keyframes(
    annotations: str | Path | AVARows,
    labelmap: LabelMap,
    *,
    excluded: set[tuple[str, int]] | None = None,
) -> list[KeyframeLabels]:
    """Group annotation rows into keyframes with actors and multi-hot labels over the label map.

    An actor is one person id of a keyframe when the file has person ids, otherwise one distinct box.
    Rows whose action is not in the label map add no label (the actor is kept: it is still a person).

    Args:
        annotations: an annotation CSV path or rows already read.
        labelmap: the classes; ``labels[:, c]`` is class ``c`` = ``labelmap.ids[c]``.
        excluded: ``(video_id, second)`` keyframes to leave out.

    Returns:
        Keyframes sorted by (video, timestamp), each with ``boxes`` ``(N, 4)`` normalized
        ``x1, y1, x2, y2``, ``labels`` ``(N, C)`` bool and ``person_ids`` ``(N,)`` (-1 without ids).

    Raises:
        StadError: one person id with two different boxes in a keyframe (file and lines named).
    """
    rows = annotations if isinstance(annotations, AVARows) else read_ava_annotations(annotations)
    if excluded and len(rows):
        ex_video = np.asarray([v for v, _ in excluded], dtype=str)
        ex_ts = np.asarray([t for _, t in excluded], dtype=np.int64)
        videos, codes = np.unique(np.concatenate([rows.video.astype(str), ex_video]), return_inverse=True)
        span = int(max(rows.timestamp.max(), ex_ts.max()) - min(rows.timestamp.min(), ex_ts.min()) + 1)
        base = int(min(rows.timestamp.min(), ex_ts.min()))
        keys = codes * span + (np.concatenate([rows.timestamp, ex_ts]) - base)
        rows = rows.select(~np.isin(keys[: len(rows)], keys[len(rows) :]))
    if len(rows) == 0:
        return []
    videos, video_code = np.unique(rows.video, return_inverse=True)
    # One actor per (keyframe, person id), or per (keyframe, box) for rows without a person id.
    has_pid = rows.person_id >= 0
    actor_table = np.column_stack(
        [
            video_code.astype(np.float64),
            rows.timestamp.astype(np.float64),
            np.where(has_pid, rows.person_id, -1).astype(np.float64),
            np.where(has_pid[:, None], 0.0, rows.boxes),
        ]
    )  # [N, 7] sorted by np.unique into (video, timestamp, person, box) order
    actors, first_row, actor_of_row = np.unique(actor_table, axis=0, return_index=True, return_inverse=True)
    actor_of_row = actor_of_row.reshape(-1)
    differs = np.any(rows.boxes != rows.boxes[first_row[actor_of_row]], axis=1)
    if differs.any():
        r = int(np.flatnonzero(differs)[0])
        f = int(first_row[actor_of_row[r]])
        raise StadError(
            f"{rows.path} lines {int(rows.line[f])} and {int(rows.line[r])}: person {int(rows.person_id[r])} of "
            f"{rows.video[r]},{int(rows.timestamp[r])} has two boxes {rows.boxes[f].tolist()} and "
            f"{rows.boxes[r].tolist()}"
        )
    classes = labelmap.index_of(rows.action_id)
    labels = np.zeros((len(actors), len(labelmap)), bool)  # [A, C]
    known = classes >= 0
    labels[actor_of_row[known], classes[known]] = True
    keyframe_of_actor = actors[:, 0] * (rows.timestamp.max() - rows.timestamp.min() + 1) + actors[:, 1]
    starts = np.flatnonzero(np.concatenate([[True], keyframe_of_actor[1:] != keyframe_of_actor[:-1]]))
    ends = np.concatenate([starts[1:], [len(actors)]])
    boxes = rows.boxes[first_row]  # [A, 4]
    person_ids = rows.person_id[first_row]
    return [
        KeyframeLabels(
            video=str(videos[int(actors[s, 0])]),
            timestamp=int(actors[s, 1]),
            boxes=boxes[s:e],
            labels=labels[s:e],
            person_ids=person_ids[s:e],
        )
        for s, e in zip(starts.tolist(), ends.tolist())
    ]


# --------------------------------------------------------------------------------------------------
# Validation of an AVA layout on disk
# --------------------------------------------------------------------------------------------------


def ava_keyframe_index(timestamp: int, *, fps: int = AVA_FPS) -> int:
    """Frame number (from 1) of the keyframe at ``timestamp`` seconds: ``timestamp * fps + 1``."""
    return int(timestamp) * fps + 1


def validate_ava(root: str | Path, *, fps: int = AVA_FPS, max_per_kind: int = 20) -> list[Problem]:
    """Check an AVA layout on disk and return every problem found (empty list = clean).

    Layout: ``root/annotations/`` holds the label map (``*.pbtxt``, ``*.pbtxt.txt`` or
    ``*label_map*.txt``), annotation CSVs and excluded-timestamps CSVs (name containing
    ``excluded``; ``*_visibility.csv``, stad synth's per-actor visibility, is skipped);
    ``root/frames/<video_id>/img_%05d.jpg`` at ``fps``.

    Checks: files parse; boxes inside [0, 1] and non-degenerate (x1 < x2, y1 < y2); action ids in the
    label map; the keyframe's frame (``ava_keyframe_index``) exists. At most ``max_per_kind``
    problems of one kind per file are listed, then one line counts the rest.
    """
    root = Path(root)
    ann_dir = root / "annotations"
    if not ann_dir.is_dir():
        return [Problem(location=str(root), field="annotations", message=f"missing folder {ann_dir}")]
    problems: list[Problem] = []
    map_files = sorted(
        p
        for p in ann_dir.iterdir()
        if p.is_file() and (p.name.endswith((".pbtxt", ".pbtxt.txt")) or ("label_map" in p.name and p.suffix == ".txt"))
    )
    labelmap: LabelMap | None = None
    if not map_files:
        problems.append(Problem(location=str(ann_dir), field="labelmap", message="no label map (*.pbtxt) found"))
    for map_file in map_files:
        try:
            candidate = read_labelmap(map_file)
        except (StadError, UnicodeDecodeError) as err:
            problems.append(Problem(location=str(map_file), field="labelmap", message=str(err)))
            continue
        if labelmap is None or len(candidate) > len(labelmap):
            labelmap = candidate  # the largest map decides which ids are known
    for csv_file in sorted(ann_dir.glob("*.csv")):
        if csv_file.name.endswith("_visibility.csv"):  # stad synth's per-actor visibility, not annotations
            continue
        if "excluded" in csv_file.name:
            try:
                read_excluded_timestamps(csv_file)
            except StadError as err:
                problems.append(Problem(location=str(csv_file), field="row", message=str(err)))
            continue
        try:
            rows = read_ava_annotations(csv_file)
        except StadError as err:
            problems.append(Problem(location=str(csv_file), field="row", message=str(err)))
            continue
        problems += _validate_rows(rows, labelmap, root, fps=fps, max_per_kind=max_per_kind)
    return problems


def _validate_rows(
    rows: AVARows, labelmap: LabelMap | None, root: Path, *, fps: int, max_per_kind: int
) -> list[Problem]:
    problems: list[Problem] = []

    def report(field: str, bad: np.ndarray, describe) -> None:
        indices = np.flatnonzero(bad)
        for i in indices[:max_per_kind]:
            problems.append(Problem(location=f"{rows.path} line {int(rows.line[i])}", field=field, message=describe(i)))
        if len(indices) > max_per_kind:
            problems.append(
                Problem(location=rows.path, field=field, message=f"... and {len(indices) - max_per_kind} more rows")
            )

    outside = ((rows.boxes < 0) | (rows.boxes > 1)).any(axis=1)
    report("boxes", outside, lambda i: f"box {rows.boxes[i].tolist()} outside [0, 1]")
    degenerate = ~((rows.boxes[:, 0] < rows.boxes[:, 2]) & (rows.boxes[:, 1] < rows.boxes[:, 3]))
    report("boxes", degenerate, lambda i: f"degenerate box {rows.boxes[i].tolist()} (needs x1 < x2 and y1 < y2)")
    if labelmap is not None:
        unknown = labelmap.index_of(rows.action_id) < 0
        report("action_id", unknown, lambda i: f"action id {int(rows.action_id[i])} not in the label map")
    negative = rows.timestamp < 0
    report("timestamp", negative, lambda i: f"negative timestamp {int(rows.timestamp[i])}")
    missing_videos: list[str] = []
    missing_frames: list[tuple[int, str, int]] = []
    keyframes = sorted(set(zip(rows.video.tolist(), rows.timestamp.tolist())))
    first_line: dict[tuple[str, int], int] = {}
    for key, line in zip(zip(rows.video.tolist(), rows.timestamp.tolist()), rows.line.tolist()):
        first_line.setdefault(key, line)
    checked_videos: dict[str, bool] = {}
    for video, ts in keyframes:
        if video not in checked_videos:
            checked_videos[video] = (root / "frames" / video).is_dir()
            if not checked_videos[video]:
                missing_videos.append(video)
        if not checked_videos[video] or ts < 0:
            continue
        frame = ava_keyframe_index(ts, fps=fps)
        if not ava_frame_path(root, video, frame).is_file():
            missing_frames.append((first_line[(video, ts)], video, frame))
    for video in missing_videos:
        folder = root / "frames" / video
        problems.append(Problem(location=rows.path, field="frames", message=f"no frame folder {folder}"))
    for line, video, frame in missing_frames[:max_per_kind]:
        problems.append(
            Problem(
                location=f"{rows.path} line {line}",
                field="frames",
                message=f"keyframe frame missing: {ava_frame_path(root, video, frame)}",
                frame=frame,
            )
        )
    if len(missing_frames) > max_per_kind:
        problems.append(
            Problem(location=rows.path, field="frames", message=f"... and {len(missing_frames) - max_per_kind} more")
        )
    return problems


__all__ = [
    "AVA_FPS",
    "AVARows",
    "LabelMap",
    "ava_keyframe_index",
    "read_ava_annotations",
    "read_actor_visibility",
    "read_ava_predictions",
    "read_excluded_timestamps",
    "read_keyframes",
    "read_labelmap",
    "read_proposals",
    "validate_ava",
    "write_ava_annotations",
    "write_ava_predictions",
    "write_labelmap",
    "write_proposals",
]
