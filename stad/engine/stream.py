"""Online action detection on a stream: decode, temporal cue, detect, link, draw and write frame by frame.

Flow per frame (the KORSAL pipeline; every stage timed by :class:`stad.engine.timing.ModuleTimer`)::

    source (video file via PyAV / frame folder / camera via OpenCV) ──decode──▶ (H0, W0, 3) uint8 RGB
        ──preprocess (resize + normalise)──▶ (1, 3, H, W) ──temporal cue with the frame `gap` earlier──▶
        ──network──▶ heads ──decoding (peaks, boxes in original pixels)──▶ ──OnlineLinker.update──▶ live tubes
        ──drawing/writing──▶ annotated MP4 (encoded as it goes) + tubes JSON (rewritten when tubes finish) + window

With ``realtime=True`` a reader thread decodes into a one-slot queue that always holds the *newest* frame: when the
detector is slower than the source, older frames are dropped instead of queued, so latency stays bounded (one frame
in the slot plus the one being processed). Video files and frame folders are then read at their nominal frame rate,
as a live source would deliver them; cameras deliver at their own rate. Frames are numbered 1, 2, ... in the order
they are *processed*: the tubes JSON's frame numbers are frames of the written MP4.

Ctrl-C (``KeyboardInterrupt``) ends the stream cleanly: the live tubes are finished, the tubes JSON and the MP4 are
completed with everything processed so far, the reader thread is stopped.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from stad.engine.timing import ModuleTimer
from stad.errors import StadError
from stad.tubes.link_online import LiveTube, OnlineLinker, TrackedTube

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


# ---------------------------------------------------------------------------------------------------
# Sources


@dataclass
class FrameSource:
    """An opened stream of RGB frames.

    Attributes:
        name: a name for the output files (video stem, folder name or ``camera<N>``).
        fps: nominal frame rate (25 for frame folders and cameras that do not say).
        frames: iterator of ``(H, W, 3)`` uint8 RGB frames.
        live: True for a camera (it paces itself); False for files and folders.
        close: releases the underlying file or device.
    """

    name: str
    fps: float
    frames: Iterator[np.ndarray]
    live: bool = False
    close: Callable[[], None] = field(default=lambda: None)


def open_source(source: str | Path | int) -> FrameSource:
    """Open a video file (PyAV), a folder of images (sorted by name) or a camera index (OpenCV).

    Raises:
        FileNotFoundError: a path that does not exist. StadError: an empty folder or a camera that cannot be opened.
    """
    text = str(source)
    if isinstance(source, int) or text.isdigit():
        return _open_camera(int(text))
    path = Path(text)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise StadError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        from stad.data.frames import read_rgb

        return FrameSource(name=path.name, fps=25.0, frames=(read_rgb(p) for p in paths))
    if path.is_file():
        import av

        from stad.data.video import video_rate

        try:
            fps = float(video_rate(path))
        except Exception as err:  # noqa: BLE001 - PyAV raises several types for unreadable files
            raise StadError(f"{path}: cannot read the video ({err})") from None
        container = av.open(str(path))
        frames = (frame.to_ndarray(format="rgb24") for frame in container.decode(video=0))
        return FrameSource(name=path.stem, fps=fps or 25.0, frames=frames, close=container.close)
    raise FileNotFoundError(f"video, frame folder or camera index not found: {source}")


def _open_camera(index: int) -> FrameSource:
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise StadError(f"camera {index} cannot be opened")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0

    def frames() -> Iterator[np.ndarray]:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    return FrameSource(name=f"camera{index}", fps=fps, frames=frames(), live=True, close=capture.release)


class LatestFrameReader:
    """Reads a source in a thread into a one-slot queue that keeps only the newest frame (bounded latency).

    Args:
        frames: the source's frames.
        timer: receives the decode time of every frame (stage ``"decode"``).
        pace_fps: when given, frames are released no faster than this rate (a file read as a live source).

    ``get()`` returns the newest frame not yet taken, or None at the end of the source; ``dropped`` counts the
    frames that were replaced before anyone took them.
    """

    _END = object()

    def __init__(self, frames: Iterator[np.ndarray], *, timer: ModuleTimer | None = None, pace_fps: float | None = None) -> None:
        self._frames = frames
        self._timer = timer
        self._pace = pace_fps
        self._slot: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.dropped = 0
        self.read = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="stad-frame-reader", daemon=True)
        self._thread.start()

    def _put_newest(self, item: object) -> None:
        with self._lock:  # replace the waiting frame, if any, by the newer one
            try:
                self._slot.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
            self._slot.put_nowait(item)

    def _run(self) -> None:
        start = time.perf_counter()
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                frame = next(self._frames, None)
                if frame is None:
                    break
                if self._timer is not None:
                    self._timer.add("decode", time.perf_counter() - t0)
                self.read += 1
                if self._pace:
                    delay = start + self.read / self._pace - time.perf_counter()
                    if delay > 0:
                        self._stop.wait(delay)
                self._put_newest(frame)
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer's thread by get()
            self.error = err
        finally:
            with self._lock:
                end_in_slot = False
                try:  # the end marker must not replace a waiting frame
                    self._slot.put_nowait(self._END)
                    end_in_slot = True
                except queue.Full:
                    pass
            if not end_in_slot:
                while not self._stop.is_set():
                    try:
                        self._slot.put(self._END, timeout=0.05)
                        break
                    except queue.Full:
                        continue

    def get(self) -> np.ndarray | None:
        """The newest unread frame (waits for one), or None when the source has ended."""
        while True:
            try:
                item = self._slot.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._slot.empty():
                    break
                continue
            if item is self._END:
                break
            return item  # type: ignore[return-value]
        if self.error is not None:
            raise self.error
        return None

    def stop(self) -> None:
        """Stop the thread (frames not yet read are abandoned)."""
        self._stop.set()
        self._thread.join(timeout=2.0)


# ---------------------------------------------------------------------------------------------------
# Outputs


class StreamVideoWriter:
    """An MP4 written frame by frame with PyAV (H.264 if available, else MPEG-4), closed cleanly by :meth:`close`.

    Frames are ``(H, W, 3)`` uint8 RGB of one size; odd sizes are padded by one black row/column.
    """

    def __init__(self, path: str | Path, *, fps: float) -> None:
        import av

        from stad.viz.video import available_encoder

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._codec = available_encoder()
        self._fps = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._container = av.open(str(self.path), mode="w")
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise StadError(f"{self.path}: frame {self.frames + 1} must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if self._stream is None:
            self._size = frame.shape[:2]
            self._stream = self._container.add_stream(self._codec, rate=self._fps)
            self._stream.width, self._stream.height = self._size[1] + self._size[1] % 2, self._size[0] + self._size[0] % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": "23", "preset": "veryfast"} if self._codec == "libx264" else {"qscale": "3"}
        elif frame.shape[:2] != self._size:
            raise StadError(f"{self.path}: frame {self.frames + 1} is {frame.shape[:2]}, the first frame was {self._size}")
        h, w = frame.shape[:2]
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (a file without frames is removed)."""
        if self._container is None:
            return
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        self._container = None
        if self.frames == 0:
            self.path.unlink(missing_ok=True)


def tubes_json(name: str, tubes: Sequence[TrackedTube], labels: Sequence[str]) -> dict[str, Any]:
    """The tubes JSON object ``{name: [tube, ...]}`` (``stad.eval.predictions`` format) with each tube's ``track_id``
    and ``class`` name added (readers of the format ignore extra keys)."""
    return {
        name: [
            {
                "track_id": int(t.track_id),
                "label": int(t.label),
                "class": labels[int(t.label)] if 0 <= int(t.label) < len(labels) else str(t.label),
                "score": float(t.score),
                "boxes": [[int(r[0]), *map(float, r[1:6])] for r in np.asarray(t.boxes, np.float64).tolist()],
            }
            for t in sorted(tubes, key=lambda t: t.track_id)
        ]
    }


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------
# Drawing


def draw_live_tubes(
    image: np.ndarray,
    live: Sequence[LiveTube],
    *,
    labels: Sequence[str],
    trails: dict[int, deque],
    scale: int = 1,
    min_score: float = 0.0,
) -> np.ndarray:
    """Draw the live tubes' current boxes (colour = track id, ``"<class> <score> #<id>"``) and centre trails.

    Extrapolated boxes (occlusion) are drawn thin with ``"?"`` after the id. ``image`` is ``(H0, W0, 3)`` uint8
    RGB; the result is a new ``(H0 * scale, W0 * scale, 3)`` array. ``trails`` (track id -> recent centres) is
    updated in place; tracks no longer live are forgotten.
    """
    from stad.viz.draw import draw_box, identity_color

    out = image.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else image.copy()
    alive = set()
    for tube in live:
        alive.add(tube.track_id)
        box = np.asarray(tube.box, np.float64) * scale
        centre = (int(round((box[0] + box[2]) / 2)), int(round((box[1] + box[3]) / 2)))
        trail = trails.setdefault(tube.track_id, deque(maxlen=16))
        trail.append(centre)
        if tube.score < min_score:
            continue
        color = identity_color(tube.track_id)
        name = labels[tube.label] if 0 <= tube.label < len(labels) else str(tube.label)
        text = f"{name} {tube.score:.2f} #{tube.track_id}{'?' if tube.extrapolated else ''}"
        draw_box(out, box, color=color, text=text, thickness=1 if tube.extrapolated else 2)
        if len(trail) > 1:
            cv2.polylines(out, [np.asarray(trail, np.int32)], False, color, 1, cv2.LINE_AA)
    for track_id in list(trails):
        if track_id not in alive:
            del trails[track_id]
    return out


def display_available() -> bool:
    """True when a window can be shown (a display, and an OpenCV build with GUI support)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    info = cv2.getBuildInformation()
    gui = next((line for line in info.splitlines() if line.strip().startswith("GUI:")), "")
    return "NONE" not in gui.upper()


# ---------------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class StreamConfig:
    """Settings of :func:`run_stream`.

    Attributes:
        input_size: network input ``(height, width)``.
        realtime: drop frames rather than fall behind (reader thread, one-slot queue; files read at their fps).
        show: show the annotated stream in a window (ignored with a warning when there is no display).
        max_frames: stop after this many processed frames (None: the whole source).
        min_draw_score: live tubes scoring below this are linked and written but not drawn.
        scale: integer upscaling of the drawn frames (None: so that the longer side reaches about 480 pixels).
        write_video: write the annotated MP4.
        link: :class:`OnlineLinker` keyword arguments (max_gap, iou_threshold, ...).
        mean, std: input normalisation.
    """

    input_size: tuple[int, int] = (288, 288)
    realtime: bool = False
    show: bool = False
    max_frames: int | None = None
    min_draw_score: float = 0.1
    scale: int | None = None
    write_video: bool = True
    link: dict[str, Any] = field(default_factory=dict)
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)


@dataclass
class StreamResult:
    """What :func:`run_stream` did.

    Attributes:
        frames: frames processed (detected, linked, written).
        dropped: frames the realtime reader dropped.
        tubes: the finished tubes (track ids kept).
        video: the annotated MP4 (None when not written or no frame was processed).
        tubes_json: the tubes JSON.
        timer: per-stage times.
        wall: seconds from the first frame request to the end.
        interrupted: True when Ctrl-C ended the stream.
    """

    frames: int
    dropped: int
    tubes: list[TrackedTube]
    video: Path | None
    tubes_json: Path
    timer: ModuleTimer
    wall: float
    interrupted: bool = False


def run_stream(
    model: torch.nn.Module,
    source: FrameSource,
    out_dir: str | Path,
    *,
    labels: Sequence[str],
    device: torch.device | str = "cpu",
    cfg: StreamConfig | None = None,
    timer: ModuleTimer | None = None,
) -> StreamResult:
    """Run a frame detector (:class:`stad.models.keypoint.KeypointDetector`) online over ``source``.

    Writes ``out_dir/<name>_tubes.mp4`` (annotated, encoded frame by frame) and ``out_dir/<name>_tubes.json``
    (all tubes finished so far, rewritten atomically whenever tubes finish; complete at the end). Closes the source.

    Returns:
        :class:`StreamResult`; on Ctrl-C the outputs are completed and ``interrupted`` is True.
    """
    cfg = cfg or StreamConfig()
    device = torch.device(device)
    timer = timer or ModuleTimer(device=device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{source.name}_tubes.json"
    writer = StreamVideoWriter(out / f"{source.name}_tubes.mp4", fps=source.fps) if cfg.write_video else None
    show = cfg.show and display_available()
    if cfg.show and not show:
        warnings.warn("--show: no display available (or OpenCV without GUI); not showing a window", stacklevel=2)
    model.eval()
    gap = int(model.gap)
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    history: deque[torch.Tensor] = deque(maxlen=gap)  # the last `gap` preprocessed frames, (1, 3, H, W) each
    linker: OnlineLinker | None = None
    finished: list[TrackedTube] = []
    trails: dict[int, deque] = {}
    reader = LatestFrameReader(source.frames, timer=timer, pace_fps=None if source.live else source.fps) if cfg.realtime else None
    frames = 0
    interrupted = quit_requested = False
    start = time.perf_counter()

    def next_frame() -> np.ndarray | None:
        if reader is not None:
            return reader.get()
        with timer.time("decode"):
            return next(source.frames, None)

    try:
        with torch.inference_mode():
            while cfg.max_frames is None or frames < cfg.max_frames:
                rgb = next_frame()
                if rgb is None:
                    break
                t = frames + 1  # this frame's number (frames = those completely processed)
                H0, W0 = rgb.shape[:2]  # noqa: N806
                if linker is None:
                    linker = OnlineLinker(len(labels), image_size=(H0, W0), **cfg.link)
                with timer.time("preprocess"):
                    h, w = cfg.input_size
                    resized = rgb if (H0, W0) == (h, w) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
                    image = torch.from_numpy(resized).to(device).permute(2, 0, 1)[None].float().div_(255).sub_(mean).div_(std)
                previous = history[0] if history else image  # frame max(1, t - gap)
                history.append(image)
                with timer.time("temporal cue"):
                    cue = model.cue(image, previous)
                with timer.time("network"):
                    outputs = model.head_outputs(torch.cat((image, cue), dim=1) if cue.shape[1] else image)
                with timer.time("decoding"):
                    dets = model.decode(outputs, orig_sizes=[(H0, W0)])[0]
                with timer.time("linking"):
                    live = linker.update(t, dets.boxes, dets.scores, dets.labels)
                    done = linker.pop_finished()
                with timer.time("drawing/writing"):
                    if writer is not None or show:
                        scale = cfg.scale or max(1, int(round(480 / max(H0, W0))))
                        drawn = draw_live_tubes(rgb, live, labels=labels, trails=trails, scale=scale, min_score=cfg.min_draw_score)
                        if writer is not None:
                            writer.write(drawn)
                        if show:
                            cv2.imshow(f"stad stream: {source.name}", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                            quit_requested = cv2.waitKey(1) & 0xFF in (ord("q"), 27)
                    if done:
                        finished.extend(done)
                        write_json_atomic(json_path, tubes_json(source.name, finished, labels))
                frames = t
                if quit_requested:
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if reader is not None:
            reader.stop()
        source.close()
        if linker is not None:
            finished.extend(linker.finish())
        write_json_atomic(json_path, tubes_json(source.name, finished, labels))
        if writer is not None:
            writer.close()
        if show:
            cv2.destroyAllWindows()
    video = writer.path if writer is not None and writer.frames else None
    return StreamResult(
        frames=frames, dropped=reader.dropped if reader is not None else 0, tubes=sorted(finished, key=lambda t: t.track_id),
        video=video, tubes_json=json_path, timer=timer, wall=time.perf_counter() - start, interrupted=interrupted,
    )
