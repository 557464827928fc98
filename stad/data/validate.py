"""Validation of a data set on disk: annotations, frame files and image sizes, with a summary table.

Accepted inputs (:func:`validate_dataset` decides by what it finds):

* an ACT root: a folder with one ``*-GT.pkl`` and frames in ``rgb-images/<video>/%05d.jpg`` (or
  ``Frames/<video>/%05d.png`` as JHMDB ships them); or a ``*.pkl`` file itself, whose frames are
  checked only when a frame folder lies beside it;
* a custom JSON data set (``stad.data.custom``), frames resolved relative to the JSON file;
* an AVA root (``annotations/`` and ``frames/``), handed to ``stad.data.ava.validate_ava``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from stad.data.act import check_act, load_act
from stad.errors import StadError
from stad.structures import Problem, TubeAnnotations

ACT_FRAME_FOLDERS = ("rgb-images", "Frames")
FRAME_SUFFIXES = (".jpg", ".png")


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` found.

    Attributes:
        path: the data set validated.
        format: ``"act"``, ``"custom"`` or ``"ava"``.
        problems: every problem found (empty when the data set is clean).
        videos: number of videos.
        frames: total number of frames (sum of ``nframes``).
        tubes: number of ground-truth tubes.
        boxes_per_label: label name -> number of ground-truth boxes.
        tubes_per_label: label name -> number of ground-truth tubes.
        split_sizes: per split (from 1), ``(train videos, test videos)``.
        frames_checked: whether frame files were looked at.
    """

    path: Path
    format: str
    problems: list[Problem] = field(default_factory=list)
    videos: int = 0
    frames: int = 0
    tubes: int = 0
    boxes_per_label: dict[str, int] = field(default_factory=dict)
    tubes_per_label: dict[str, int] = field(default_factory=dict)
    split_sizes: list[tuple[int, int]] = field(default_factory=list)
    frames_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def format_table(self) -> str:
        """A plain-text summary: counts, splits, then tubes and boxes per label."""
        if self.format == "ava":  # counts of AVA layouts are reported by stad.data.ava
            return f"data set   {self.path} (ava)\n\nproblems   {len(self.problems)}"
        lines = [
            f"data set   {self.path} ({self.format})",
            f"videos     {self.videos}",
            f"frames     {self.frames}",
            f"tubes      {self.tubes}",
            f"frames on disk checked: {'yes' if self.frames_checked else 'no'}",
        ]
        for s, (train, test) in enumerate(self.split_sizes, start=1):
            lines.append(f"split {s}    train {train} videos, test {test} videos")
        if self.boxes_per_label:
            width = max(len("label"), *(len(name) for name in self.boxes_per_label))
            lines.append("")
            lines.append(f"{'label':<{width}}  {'tubes':>7}  {'boxes':>9}")
            for name, boxes in self.boxes_per_label.items():
                lines.append(f"{name:<{width}}  {self.tubes_per_label.get(name, 0):>7}  {boxes:>9}")
        lines.append("")
        lines.append(f"problems   {len(self.problems)}")
        return "\n".join(lines)


def summarize(ann: TubeAnnotations, report: ValidationReport) -> None:
    """Fill the summary counts of ``report`` from ``ann``."""
    report.videos = len(ann.nframes)
    report.frames = int(sum(ann.nframes.values()))
    boxes: Counter[int] = Counter()
    tubes: Counter[int] = Counter()
    for per_video in ann.gttubes.values():
        for label, tubes_of_label in per_video.items():
            tubes[label] += len(tubes_of_label)
            boxes[label] += sum(len(t) for t in tubes_of_label)
    report.tubes = sum(tubes.values())
    names = {i: name for i, name in enumerate(ann.labels)}
    report.boxes_per_label = {names.get(i, f"<label {i}>"): boxes[i] for i in sorted(set(names) | set(boxes))}
    report.tubes_per_label = {names.get(i, f"<label {i}>"): tubes[i] for i in sorted(set(names) | set(tubes))}
    report.split_sizes = [(len(tr), len(te)) for tr, te in zip(ann.train_videos, ann.test_videos)]


def validate_dataset(path: str | Path, *, size_checks: int = 200) -> ValidationReport:
    """Validate a data set on disk (ACT root or pickle, custom JSON, or AVA root).

    Checks :func:`stad.data.act.check_act`'s rules, that every frame ``1..nframes`` of every video
    has a file and no extra numbered frame exists, and, on up to ``size_checks`` videos spread over
    the data set, that the first frame's image size equals the video's resolution (header read only).
    Unreadable annotations become a problem, not an exception.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        StadError: ``path`` is none of the accepted layouts.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data set not found: {path}")
    if path.is_file() and path.suffix == ".json":
        return _validate_custom(path, size_checks=size_checks)
    if path.is_file() and path.suffix == ".pkl":
        return _validate_act(path, path.parent, size_checks=size_checks, require_frames=False)
    if path.is_dir():
        pickles = sorted(path.glob("*-GT.pkl"))
        if len(pickles) == 1:
            return _validate_act(pickles[0], path, size_checks=size_checks, require_frames=True)
        if len(pickles) > 1:
            raise StadError(f"{path}: several *-GT.pkl files {[p.name for p in pickles]}; pass the one to validate")
        if (path / "annotations").is_dir() and (path / "frames").is_dir():
            return _validate_ava(path)
        raise StadError(f"{path}: no *-GT.pkl (ACT), and not an AVA root (annotations/ and frames/); pass a custom .json file directly")
    raise StadError(f"{path}: expected an ACT root folder or *-GT.pkl, a custom .json, or an AVA root folder")


def _validate_act(pickle_path: Path, root: Path, *, size_checks: int, require_frames: bool) -> ValidationReport:
    report = ValidationReport(path=pickle_path, format="act")
    try:
        ann = load_act(pickle_path)
    except StadError as err:
        report.problems.append(Problem(str(pickle_path), "file", str(err)))
        return report
    summarize(ann, report)
    report.problems.extend(check_act(ann))
    folder = next((root / name for name in ACT_FRAME_FOLDERS if (root / name).is_dir()), None)
    if folder is None:
        if not require_frames:  # a pickle given alone: frames are checked only when they are beside it
            return report
        report.problems.append(Problem(str(root), "frames", f"no frame folder; expected one of {list(ACT_FRAME_FOLDERS)}"))
        return report
    patterns = {video: f"{folder.name}/{video}/{{frame:05d}}" for video in ann.nframes}
    report.problems.extend(_check_frames(ann, root, patterns, size_checks=size_checks, any_suffix=True))
    report.frames_checked = True
    return report


def _validate_custom(json_path: Path, *, size_checks: int) -> ValidationReport:
    from stad.data.custom import load_custom

    report = ValidationReport(path=json_path, format="custom")
    try:
        dataset = load_custom(json_path)
    except StadError as err:
        report.problems.append(Problem(str(json_path), "file", str(err)))
        return report
    ann = dataset.annotations
    summarize(ann, report)
    report.problems.extend(check_act(ann))
    if dataset.frames:
        report.problems.extend(_check_frames(ann, json_path.parent, dataset.frames, size_checks=size_checks, any_suffix=False))
        report.frames_checked = True
    return report


def _validate_ava(root: Path) -> ValidationReport:
    try:
        from stad.data.ava import validate_ava  # written alongside; imported lazily
    except ImportError as err:
        raise StadError(f"{root}: looks like an AVA root, but AVA validation is not available ({err})") from err

    report = ValidationReport(path=root, format="ava")
    report.problems.extend(validate_ava(root))
    report.frames_checked = True
    return report


def _check_frames(ann: TubeAnnotations, root: Path, patterns: dict[str, str], *, size_checks: int, any_suffix: bool) -> list[Problem]:
    """Frame files ``1..nframes`` exist per video; no extra numbered frame; sampled image sizes.

    ``patterns``: video -> path pattern relative to ``root`` with a ``{frame}`` field; with
    ``any_suffix`` the pattern has no suffix and ``.jpg`` or ``.png`` (the first that exists) is used.
    """
    from PIL import Image

    problems: list[Problem] = []
    videos = [v for v in sorted(ann.nframes) if v in patterns]
    sampled = set(videos[:: max(1, -(-len(videos) // size_checks))]) if size_checks > 0 else set()
    for video in videos:
        pattern = patterns[video]
        nframes = ann.nframes[video]
        suffix = ""
        if any_suffix:
            suffix = next((s for s in FRAME_SUFFIXES if (root / (pattern.format(video=video, frame=1) + s)).is_file()), FRAME_SUFFIXES[0])
            first_dir = (root / pattern.format(video=video, frame=1)).parent
            if not first_dir.is_dir():
                problems.append(Problem(video, "frames", f"frame folder {first_dir} is missing"))
                continue

        def frame_file(frame: int) -> Path:
            return root / (pattern.format(video=video, frame=frame) + suffix)

        missing = [f for f in range(1, nframes + 1) if not frame_file(f).is_file()]
        for start, end in _ranges(missing):
            span = f"frame {start}" if start == end else f"frames {start}-{end}"
            problems.append(Problem(video, "frames", f"{span} missing (e.g. {frame_file(start)})", frame=start))
        if frame_file(nframes + 1).is_file():
            extra = nframes + 1
            while frame_file(extra + 1).is_file():
                extra += 1
            problems.append(Problem(video, "nframes", f"nframes is {nframes} but frame files go on to {extra} ({frame_file(extra)})", frame=nframes + 1))
        if video in sampled and 1 not in missing and video in ann.resolution:
            try:
                with Image.open(frame_file(1)) as image:
                    width, height = image.size
            except OSError as err:
                problems.append(Problem(video, "frames", f"cannot read image {frame_file(1)}: {err}", frame=1))
                continue
            if (height, width) != tuple(ann.resolution[video]):
                problems.append(Problem(video, "resolution", f"is (height, width) {tuple(ann.resolution[video])} but {frame_file(1)} is {(height, width)}", frame=1))
    return problems


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    """Sorted integers grouped into inclusive runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs
