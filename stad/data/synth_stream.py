"""The unbounded synthetic training stream: training videos rendered on the fly, never the same twice.

A model trained on the fixed training videos of a synthetic data set memorises them (the demo model: frame-mAP 47 on
its 48 training videos, 8 on the test videos). With the stream, every training item comes from a video rendered in
the DataLoader worker from the key ``(data set seed, STREAM_TAG, train seed, epoch, video)``: deterministic (a
resumed run renders the same videos), distinct per epoch and video, and never one of the data set's own videos
(those use the two-number key ``(seed, video index)``, see :func:`stad.data.synthetic.sample_scene`). The data set's
rendered test split stays fixed for evaluation; the stream uses its :class:`~stad.data.synthetic.SynthConfig`
(``synth.json``), so the videos follow the same distribution.

Cost: each video's scene is drawn once per worker and only the frames an item needs are rendered
(:func:`stad.data.synthetic.render_scene` with ``frames``); item ``i`` of an epoch is clip ``i % clips_per_video``
of video ``i // clips_per_video``, and the stream's loader keeps the data set's order (the videos are random
already), so consecutive items of one batch share the scene. ``benchmarks/bench_synth_stream.py`` measures the
rendering against the training step.

Which windows / frames: as on the fixed data (:func:`stad.data.datasets.window_kinds`), a clip is *positive* (every
action tube covers the whole window or none, one covers it) or *negative* (no tube touches it: idle actors and
background); ``negative_fraction`` is the probability of a negative clip (when the video has one).

Keyframe items (STEP, FBIL; :class:`KeyframeStreamDataset`): the AVA-style keyframes that
:func:`stad.data.synthetic.render_dataset` with ``layout="ava"`` would write for the stream video (seconds
:func:`~stad.data.synthetic.ava_keyframe_seconds`, labels of :func:`~stad.data.synthetic.keyframe_labels`, boxes
rounded as in the CSV), read as :class:`~stad.data.keyframes.KeyframeDataset` reads them from disk: the clip rule runs
on the :class:`~stad.data.keyframes.VideoFrameIndex` of the flat ``ava`` layout of the video. Item ``i`` is keyframe
``i % keyframes_per_video`` of video ``i // keyframes_per_video``; the keyframes of a video are drawn among its
foreground seconds (at least one actor box) whose clip the rule can build; a keyframe is *negative* when every
actor on it is idle (``stand``), and ``negative_fraction`` is the probability of a negative keyframe (when the
video has one). Per video, the keyframe frames of every annotated second are rendered once for the boxes (the
annotations and the neighbour boxes); per item, the clip's distinct frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stad.data.ava import LabelMap
from stad.data.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrameItems,
    TubeletItems,
    _positive,
    negative_count,
    window_kinds,
)
from stad.data.frames import jpeg_roundtrip
from stad.data.keyframes import (
    STEP_NORMALIZATION,
    ClipFrames,
    ClipNormalization,
    ClipRule,
    KeyframeItems,
    StepClipRule,
    VideoFrameIndex,
    flat_frame_index,
    neighbor_table,
)
from stad.data.synthetic import (
    Scene,
    SynthConfig,
    SynthVideo,
    ava_keyframe_seconds,
    ava_label_names,
    keyframe_labels,
    render_scene,
    sample_scene,
)
from stad.data.transforms import Transform
from stad.errors import StadError
from stad.structures import KeyframeLabels

__all__ = [
    "STREAM_TAG",
    "FrameStreamDataset",
    "KeyframeStreamDataset",
    "KeyframeStreamVideos",
    "StreamVideos",
    "TubeletStreamDataset",
    "ava_frame_index",
    "ava_labelmap",
]

# Second element of every stream key: keeps the stream's seed sequences apart from the data set's (seed, index).
STREAM_TAG = 0x5354524D  # "STRM"
_MAX_TRIES = 64  # redraws of a video without any usable window before giving up


@dataclass(frozen=True)
class StreamVideo:
    """One video of the stream: its scene and the starts (from 1) of its clips, in clip order."""

    scene: Scene
    starts: tuple[int, ...]


class StreamVideos:
    """The stream's videos: ``(epoch, video)`` -> a scene and the start frames of its ``clips_per_video`` clips.

    Args:
        config: the synthetic data set's configuration (its distribution; ``config.seed`` enters the key).
        seed: the training seed (``train.seed``).
        clips_per_video: clips drawn from each video (distinct starts while the video has enough).
        length: frames per clip (``K`` for tubelets; 1 for single frames).
        negative_fraction: probability that a clip is a negative one (no action tube touches it), in [0, 1).
    """

    def __init__(self, config: SynthConfig, *, seed: int, clips_per_video: int, length: int,
                 negative_fraction: float) -> None:
        self.config = config
        self.seed = int(seed)
        self.clips_per_video = _positive("clips_per_video", clips_per_video)
        self.length = _positive("length", length)
        if self.length > config.frames:
            raise StadError(f"clips of {self.length} frames do not fit the stream's {config.frames}-frame videos")
        negative_count(0, 0, negative_fraction)  # validates the fraction
        self.negative_fraction = float(negative_fraction)
        self._cached: tuple[tuple[int, int], StreamVideo] | None = None

    def key(self, epoch: int, video: int, attempt: int = 0) -> list[int]:
        """The seed sequence of ``video`` of ``epoch`` (``attempt`` > 0: a redraw, see :meth:`video`)."""
        return [self.config.seed, STREAM_TAG, self.seed, int(epoch), int(video), int(attempt)]

    @staticmethod
    def name(epoch: int, video: int) -> str:
        return f"stream_e{int(epoch):04d}_{int(video):07d}"

    def video(self, epoch: int, video: int) -> StreamVideo:
        """The scene and clip starts of ``video`` of ``epoch`` (the last one is cached: a worker renders a video's
        consecutive clips from one scene). A video whose every window is cut by an action boundary (rare) is drawn
        again with the next ``attempt``."""
        if self._cached is not None and self._cached[0] == (epoch, video):
            return self._cached[1]
        for attempt in range(_MAX_TRIES):
            key = self.key(epoch, video, attempt)
            scene = sample_scene(self.config, 0, key=key, name=self.name(epoch, video))
            out = self._plan(scene, np.random.default_rng([*key, 1]))
            if out is not None:
                self._cached = ((epoch, video), out)
                return out
        raise StadError(f"no usable {self.length}-frame clip in {_MAX_TRIES} draws of stream video {video} "
                        f"(epoch {epoch}); the clips are too long for the videos' actions")

    def _plan(self, scene: Scene, rng: np.random.Generator) -> StreamVideo | None:
        """The video of ``scene`` with its clips drawn by ``rng``; None when it has no usable clip."""
        starts = self._draw(*self._kinds(scene), rng)
        return StreamVideo(scene, tuple(starts)) if starts else None

    def _kinds(self, scene: Scene) -> tuple[list[int], list[int]]:
        """The positive and the negative clip starts of ``scene`` (:func:`stad.data.datasets.window_kinds`)."""
        spans = [(a.start, a.end) for a in scene.actors]
        positive, negative = [], []
        for start in range(1, scene.frames - self.length + 2):
            kind = window_kinds(spans, start, self.length)
            if kind == "positive":
                positive.append(start)
            elif kind == "negative":
                negative.append(start)
        return positive, negative

    def _draw(self, positive: list[int], negative: list[int], rng: np.random.Generator) -> list[int]:
        """``clips_per_video`` of the candidates: each negative with probability ``negative_fraction`` (when there
        is one), without repeats while a kind has candidates left; empty when there is no candidate."""
        if not positive and not negative:
            return []
        source = {"positive": positive, "negative": negative}
        pools = {kind: list(starts) for kind, starts in source.items()}
        starts = []
        for _ in range(self.clips_per_video):
            wants_negative = rng.random() < self.negative_fraction
            kind = "negative" if (wants_negative and negative) or not positive else "positive"
            if not pools[kind]:  # every start of this kind drawn already: draw again from all of them
                pools[kind] = list(source[kind])
            starts.append(int(pools[kind].pop(int(rng.integers(len(pools[kind]))))))
        return starts

    def render(self, epoch: int, video: int, clip: int) -> tuple[SynthVideo, int]:
        """Clip ``clip`` of ``video``: the rendered frames ``start .. start + length - 1`` and ``start``."""
        item = self.video(epoch, video)
        start = item.starts[clip]
        return self.render_frames(item.scene, np.arange(start, start + self.length)), start

    def render_frames(self, scene: Scene, frames: Sequence[int]) -> SynthVideo:
        """``frames`` (from 1, ascending) of ``scene``, with the data set's JPEG compression applied to the pixels
        (the test videos are read back from JPEG files of ``config.jpeg_quality``: the same pixels statistics)."""
        video = render_scene(scene, frames=frames)
        for i in range(len(video.frames)):
            video.frames[i] = jpeg_roundtrip(video.frames[i], self.config.jpeg_quality)
        return video


def _actors_on(video: SynthVideo, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes ``(N, F, 4)``, labels ``(N,)`` and visibility ``(N, F)`` of the actors whose action covers every one of
    ``frames`` (from 1), in the order of the data set's ground truth (label, then actor)."""
    acting = [a for a in video.actors if a.start <= frames.min() and frames.max() <= a.end]
    acting.sort(key=lambda a: a.label)  # stable: actors of one label keep their order, as in <name>-GT.pkl
    rows = frames - 1
    F = len(frames)
    return (
        np.asarray([a.boxes[rows] for a in acting], dtype=np.float64).reshape(-1, F, 4),
        np.asarray([a.label for a in acting], dtype=np.int64),
        np.asarray([a.visibility[rows] for a in acting], dtype=np.float64).reshape(-1, F),
    )


class _StreamIndex:
    """Item ``i`` of an epoch is clip ``i % clips_per_video`` of stream video ``i // clips_per_video``."""

    stream: StreamVideos
    videos_per_epoch: int

    def __len__(self) -> int:
        return self.videos_per_epoch * self.stream.clips_per_video

    def _locate(self, key: Any) -> tuple[int, int, int, int]:
        """``(epoch, index, video, clip)`` of an item key (an ``(epoch, index)`` pair or an index)."""
        epoch, index = self._key(key)  # type: ignore[attr-defined]
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside the stream's {len(self)} items per epoch")
        video, clip = divmod(index, self.stream.clips_per_video)
        return epoch, index, video, clip


class TubeletStreamDataset(_StreamIndex, TubeletItems):
    """K-frame training clips of the stream (the items of :class:`stad.data.datasets.TubeletClipDataset`; RGB only).

    Args:
        config: the synthetic data set's configuration.
        videos_per_epoch: videos rendered per epoch; ``len = videos_per_epoch * clips_per_video``.
        clips_per_video: K-frame clips drawn from each video (default 4).
        K, input_size, transform, mean, std, seed, mask_stride: as ``TubeletClipDataset`` (``seed``: the training
            seed; it seeds the stream and the augmentation).
        negative_fraction: probability of a clip that no action tube touches (default 0.25).
    """

    def __init__(
        self,
        config: SynthConfig,
        *,
        videos_per_epoch: int,
        clips_per_video: int = 4,
        K: int = 7,  # noqa: N803 - the paper's name
        input_size: Sequence[int] = (288, 288),
        transform: Transform | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
        mask_stride: int | None = None,
        negative_fraction: float = 0.25,
    ) -> None:
        super().__init__(input_size=input_size, transform=transform, seed=seed)
        self.K = _positive("K", K)
        self.mean, self.std = tuple(mean), tuple(std)
        self.mask_stride = None if mask_stride is None else _positive("mask_stride", mask_stride)
        self.videos_per_epoch = _positive("videos_per_epoch", videos_per_epoch)
        self.stream = StreamVideos(config, seed=seed, clips_per_video=clips_per_video, length=self.K,
                                   negative_fraction=negative_fraction)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        epoch, index, video_index, clip = self._locate(key)
        video, start = self.stream.render(epoch, video_index, clip)
        frames = np.asarray(video.frame_numbers, dtype=np.int64)
        boxes, labels, visibility = _actors_on(video, frames)
        occluders = video.occluder_masks if self.mask_stride is not None else None
        return self.make_item(video.name, start, frames, video.frames, boxes, labels, visibility, occluders,
                              epoch=epoch, index=index)


class FrameStreamDataset(_StreamIndex, FrameItems):
    """Single training frames (with the frame ``gap`` before) of the stream: the items of
    :class:`stad.data.datasets.FrameDataset`.

    Args:
        config: the synthetic data set's configuration.
        videos_per_epoch: videos rendered per epoch; ``len = videos_per_epoch * frames_per_video``.
        frames_per_video: frames drawn from each video (default 8).
        input_size, gap, transform, mean, std, seed: as ``FrameDataset``.
        negative_fraction: probability of a frame without an acting actor (default 0.25).
    """

    def __init__(
        self,
        config: SynthConfig,
        *,
        videos_per_epoch: int,
        frames_per_video: int = 8,
        input_size: Sequence[int] = (288, 288),
        gap: int = 1,
        transform: Transform | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
        negative_fraction: float = 0.25,
    ) -> None:
        super().__init__(input_size=input_size, transform=transform, seed=seed)
        self.gap = _positive("gap", gap)
        self.mean, self.std = tuple(mean), tuple(std)
        self.videos_per_epoch = _positive("videos_per_epoch", videos_per_epoch)
        self.stream = StreamVideos(config, seed=seed, clips_per_video=frames_per_video, length=1,
                                   negative_fraction=negative_fraction)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        epoch, index, video_index, clip = self._locate(key)
        item = self.stream.video(epoch, video_index)
        frame = item.starts[clip]
        previous_frame = max(1, frame - self.gap)
        video = self.stream.render_frames(item.scene, sorted({previous_frame, frame}))
        current, previous = video.frames[-1], video.frames[0]
        boxes, labels, visibility = _actors_on(video, np.array([frame]))
        return self.make_item(video.name, frame, previous_frame, current, previous, boxes.reshape(-1, 4), labels,
                              visibility.reshape(-1), epoch=epoch, index=index)


# ---------------------------------------------------------------------------------------------------------------
# Keyframe items (STEP, FBIL)
# ---------------------------------------------------------------------------------------------------------------


def ava_labelmap(config: SynthConfig) -> LabelMap:
    """The label map that :func:`stad.data.synthetic.render_dataset` writes for ``config`` (id = position + 1)."""
    names = ava_label_names(config)
    return LabelMap(ids=list(range(1, len(names) + 1)), names=list(names), label_types=[None] * len(names))


def ava_frame_index(video: str, frames: int, fps: int) -> VideoFrameIndex:
    """The :class:`~stad.data.keyframes.VideoFrameIndex` that the flat ``ava`` layout
    (:func:`stad.data.keyframes.ava_layout`, ``timestamp_start`` 0) builds for ``img_00001.jpg .. img_<frames>.jpg``."""
    return flat_frame_index(video, frames, fps=int(fps))


@dataclass(frozen=True)
class KeyframeStreamVideo(StreamVideo):
    """One video of the keyframe stream: ``starts`` holds the keyframe seconds of its items (item order),
    ``keyframes`` every annotated second's :class:`~stad.structures.KeyframeLabels` (as read from the CSV that
    ``render_dataset`` would write), ``neighbors`` their :func:`~stad.data.keyframes.neighbor_table`."""

    keyframes: dict[int, KeyframeLabels]
    neighbors: dict[tuple[str, int], dict[int, np.ndarray]]


class KeyframeStreamVideos(StreamVideos):
    """The keyframe stream's videos: ``(epoch, video)`` -> a scene, its annotated keyframes and the seconds of its
    ``keyframes_per_video`` items.

    Args:
        config: the synthetic data set's configuration (30 fps, at least one keyframe second).
        seed: the training seed.
        keyframes_per_video: keyframes drawn from each video (distinct seconds while the video has enough).
        negative_fraction: probability that a keyframe is one where every actor is idle, in [0, 1).
        labelmap: the classes of the labels (default :func:`ava_labelmap`); every id must name the synthetic label
            of that id, and ids missing from it add no label (the actor stays, as in ``read_keyframes``).
        clip_rule: the clip rule; only the seconds whose clip it builds are drawn (default ``StepClipRule()``).
    """

    def __init__(self, config: SynthConfig, *, seed: int, keyframes_per_video: int, negative_fraction: float,
                 labelmap: LabelMap | None = None, clip_rule: ClipRule | None = None) -> None:
        super().__init__(config, seed=seed, clips_per_video=keyframes_per_video, length=1,
                         negative_fraction=negative_fraction)
        if config.fps != 30:
            raise StadError(f"the synthetic AVA layout is 30 fps; the stream's config has fps={config.fps}")
        names = ava_label_names(config)
        self.labelmap = ava_labelmap(config) if labelmap is None else labelmap
        for action_id, name in zip(self.labelmap.ids, self.labelmap.names):
            if not 1 <= action_id <= len(names) or names[action_id - 1] != name:
                have = names[action_id - 1] if 1 <= action_id <= len(names) else "no label"
                raise StadError(f"label map id {action_id} is {name!r}, the synthetic AVA layout's id {action_id} is "
                                f"{have!r} (labels {names}); is it the label map of this data set?")
        self.class_ids = self.labelmap.index_of(np.arange(1, len(names) + 1))  # [len(names)] class of each id, -1
        self.clip_rule = StepClipRule() if clip_rule is None else clip_rule
        self.annotated = tuple(ava_keyframe_seconds(config))
        template = ava_frame_index("template", config.frames, config.fps)
        self.seconds = tuple(s for s in self.annotated if _builds_clip(self.clip_rule, template, s))
        if not self.seconds:
            raise StadError(f"{self.clip_rule!r} builds no clip for the keyframe seconds {list(self.annotated)} of "
                            f"{config.frames}-frame videos at {config.fps} fps")

    def _plan(self, scene: Scene, rng: np.random.Generator) -> KeyframeStreamVideo | None:
        fps = self.config.fps
        video = render_scene(scene, frames=[s * fps + 1 for s in self.annotated])  # boxes only: no JPEG
        keyframes = {s: self._keyframe(video, s) for s in self.annotated}
        positive, negative = [], []
        for second in self.seconds:
            frame = second * fps + 1
            acting = [a.start <= frame <= a.end for a in video.actors if not np.isnan(a.boxes[frame - 1, 0])]
            if acting:  # a foreground keyframe
                (positive if any(acting) else negative).append(second)
        seconds = self._draw(positive, negative, rng)
        if not seconds:
            return None
        return KeyframeStreamVideo(scene, tuple(seconds), keyframes, neighbor_table(list(keyframes.values())))

    def _keyframe(self, video: SynthVideo, second: int) -> KeyframeLabels:
        """The actors of ``second`` as ``render_dataset`` writes them (boxes rounded to 4 decimals) and
        ``read_keyframes`` reads them back (person-id order, multi-hot over the label map)."""
        names = ava_label_names(self.config)
        frame = second * self.config.fps + 1
        boxes, labels, person_ids = [], [], []
        for actor, actor_names in zip(video.actors, keyframe_labels(video, frame, fps=self.config.fps)):
            x1, y1, x2, y2 = actor.boxes[frame - 1]
            if np.isnan(x1):
                continue
            W, H = self.config.width, self.config.height
            norm = (x1 / W, y1 / H, (x2 + 1) / W, (y2 + 1) / H)  # inclusive pixel extent -> continuous, normalised
            boxes.append([float(f"{v:.4f}") for v in norm])  # the CSV's text, read back
            classes = self.class_ids[[names.index(n) for n in actor_names]]
            multi_hot = np.zeros(len(self.labelmap), bool)
            multi_hot[classes[classes >= 0]] = True
            labels.append(multi_hot)
            person_ids.append(actor.person_id)
        order = np.argsort(person_ids, kind="stable")  # read_keyframes' order
        return KeyframeLabels(
            video=video.name,
            timestamp=int(second),
            boxes=np.asarray(boxes, np.float64).reshape(-1, 4)[order],
            labels=np.asarray(labels, bool).reshape(-1, len(self.labelmap))[order],
            person_ids=np.asarray(person_ids, np.int64)[order],
        )


def _builds_clip(rule: ClipRule, index: VideoFrameIndex, second: int) -> bool:
    try:
        rule(index, second)
    except StadError:
        return False
    return True


class KeyframeStreamDataset(_StreamIndex, KeyframeItems):
    """Keyframe training clips of the stream: the items of :class:`stad.data.keyframes.KeyframeDataset` with
    ``foreground_only=True`` and no proposals, for the AVA layout of the stream videos (module docstring).

    Only the items are shared with ``KeyframeDataset`` (:class:`~stad.data.keyframes.KeyframeItems`): there are no
    files, hence no ``keyframes``, ``layout`` or ``read_clip``.

    Args:
        config: the synthetic data set's configuration.
        videos_per_epoch: videos rendered per epoch; ``len = videos_per_epoch * keyframes_per_video``.
        keyframes_per_video: keyframes drawn from each video (default 2).
        labelmap: the classes (default :func:`ava_labelmap`; pass the data set's label map so that the classes
            agree with its annotations).
        clip_rule, input_size, transform, normalization, seed, neighbor_offsets: as ``KeyframeDataset`` (``seed``:
            the training seed; it seeds the stream and the augmentation).
        negative_fraction: probability of a keyframe whose actors are all idle (default 0.25).
    """

    def __init__(
        self,
        config: SynthConfig,
        *,
        videos_per_epoch: int,
        keyframes_per_video: int = 2,
        labelmap: LabelMap | None = None,
        # items
        clip_rule: ClipRule | None = None,
        input_size: Sequence[int] = (400, 400),
        transform: Transform | None = None,
        normalization: ClipNormalization = STEP_NORMALIZATION,
        seed: int = 0,
        neighbor_offsets: Sequence[int] = (-1, 1),
        negative_fraction: float = 0.25,
    ) -> None:
        super().__init__(input_size=input_size, transform=transform, seed=seed)
        self.videos_per_epoch = _positive("videos_per_epoch", videos_per_epoch)
        self.stream = KeyframeStreamVideos(config, seed=seed, keyframes_per_video=keyframes_per_video,
                                           negative_fraction=negative_fraction, labelmap=labelmap, clip_rule=clip_rule)
        self.clip_rule = self.stream.clip_rule
        self.num_classes = len(self.stream.labelmap)
        self.normalization = normalization
        self.neighbor_offsets = tuple(int(o) for o in neighbor_offsets)
        self.proposal_min_score = 0.0

    @property
    def labelmap(self) -> LabelMap:
        return self.stream.labelmap

    def keyframe(self, key: Any) -> tuple[KeyframeStreamVideo, KeyframeLabels]:
        """The stream video and the keyframe of item ``key`` (an ``(epoch, index)`` pair or an index)."""
        epoch, _, video_index, slot = self._locate(key)
        video = self.stream.video(epoch, video_index)
        assert isinstance(video, KeyframeStreamVideo)
        return video, video.keyframes[video.starts[slot]]

    def clip_frames(self, keyframe: KeyframeLabels) -> ClipFrames:
        """The frames of ``keyframe``'s clip by the clip rule, on the ``ava`` layout's index of its video."""
        config = self.stream.config
        return self.clip_rule(ava_frame_index(keyframe.video, config.frames, config.fps), int(keyframe.timestamp))

    def __getitem__(self, key: Any) -> dict[str, Any]:
        epoch, index = self._key(key)
        video, keyframe = self.keyframe((epoch, index))
        clip_frames = self.clip_frames(keyframe)
        distinct = np.unique(clip_frames.frames)  # [F] ascending
        rendered = self.stream.render_frames(video.scene, distinct)
        clip = rendered.frames[np.searchsorted(distinct, clip_frames.frames)]  # [T, H0, W0, 3]
        return self.make_item(keyframe, clip_frames, clip, video.neighbors, None, epoch=epoch, index=index)
