"""The procedural synthetic benchmark: articulated actors whose actions are defined by motion (ARCHITECTURE.md §5).

Every video shows 1-3 stick-figure actors (body, head with a "nose" showing where it faces, two-segment arms and
legs; random colours, size and striped/checked/noisy texture) on a textured, slowly panning background with
per-frame noise. Each actor performs ONE action from ``CLASS_NAMES`` between a start and an end frame strictly
inside the video (``2 <= start``, ``end <= T - 1``); before and after, it stands idle (small breathing motion).
The idle phases are NOT annotated in the ACT layout (like the un-annotated frames of UCF101-24); actors never
enter or leave: they are present on every frame, and walkers turn around at the frame borders.

Classes are defined by motion, so one frame is ambiguous between pairs of classes:

* ``walk`` / ``run``: the same leg/arm swing pose distribution; they differ only in cadence and speed;
* ``jump`` / ``squat``: a crouch with bent knees is shared; jump lifts the whole body off the ground;
* ``flap`` / ``spin``: arms held out sideways are shared; spin narrows and mirrors the body (rotation);
* ``wave`` (one arm up, forearm oscillating), ``sway`` (torso leaning left/right).

Moving occluders (vertical/horizontal bars and blobs with their own texture) pass in front of actors; with
probability ``occlusion`` each actor gets one that crosses it during its action, plus ``distractors`` random
ones per video on average.

**Boxes** are the tight extent of the actor's whole (amodal) silhouette in the frame: ``x1, y1, x2, y2`` float
pixels with inclusive pixel extent (``x1`` = first column, ``x2`` = last column covered; ACT "+1" style). Parts
outside the frame are cut (the box is clipped to the frame), parts hidden by occluders are not.
**Visibility** of a box is the fraction of the actor's silhouette pixels in the frame that are visible in the
final image: pixels covered by an occluder or by another actor drawn in front of it count as hidden.

Layouts written by :func:`render_dataset` (frames numbered from 1):

* ACT: ``<root>/rgb-images/<video>/%05d.jpg``, ``<root>/<name>-GT.pkl`` (``labels``, ``gttubes``, ``nframes``,
  ``train_videos``, ``test_videos`` (one split), ``resolution`` ``(H, W)``, and ``visibility``, which the original
  ACT code ignores) and ``<root>/<name>-visibility.pkl`` (video -> label -> list of ``(L,)`` float32, parallel to
  ``gttubes``), and ``<root>/occluder-masks/<video>.npz``: the occluder pixels of every frame
  (``stad.data.occluder_masks``), for STADO's visible-region mask targets. ``<root>/<name>-persons.pkl`` is the
  same layout (visibility included) with one class ``person`` and every actor on every frame it is in,
  idle or acting, for training a person detector (``stad proposals``).
* AVA: ``<root>/frames/<video>/img_%05d.jpg`` (the same JPEGs, hard-linked when both layouts are written; the
  video is taken to be ``fps`` = 30 frames per second), ``<root>/annotations/<name>_{train,val}.csv`` rows
  ``video_id,timestamp,x1,y1,x2,y2,action_id,person_id`` with boxes normalized to [0, 1] as the continuous box
  ``(x1 / W, y1 / H, (x2 + 1) / W, (y2 + 1) / H)`` of the inclusive pixel box, ``<name>_action_list.pbtxt``
  (1-based ids: the pose classes, then ``stand`` for idle actors, then the interactions ``near``, ``approach``,
  ``face``), empty ``<name>_{train,val}_excluded_timestamps.csv``, and ``<name>_{train,val}_visibility.csv`` rows
  ``video_id,timestamp,person_id,visibility`` (the visible fraction of each keyframe actor, for per-band AVA mAP). Keyframes are at 1 Hz: timestamp ``s``
  (whole seconds, ``s >= 1``) is frame ``s * fps + 1``; the AVA layout therefore needs ``frames >= 2 * fps + 1``
  (two keyframes), e.g. ``--frames 91`` for three.
* ``<root>/synth.json``: the configuration, written last; its presence marks a complete data set. While a
  rendering runs, ``<root>/synth.partial.json`` holds its configuration and the videos written so far, so that an
  interrupted rendering is resumed (:func:`is_interrupted`) instead of mixed with other files.

Randomness: one ``numpy.random.Generator(PCG64)`` per video, seeded with ``(seed, video_index)``, so a video does
not depend on the other videos nor on their number, and the output is bit-identical for the same seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stad.data.frames import write_jpeg
from stad.data.occluder_masks import OCCLUDER_MASK_DIR, occluder_mask_path, write_occluder_masks
from stad.errors import StadError
from stad.structures import TubeAnnotations

# The action classes, in label order (0-based indices into this tuple).
CLASS_NAMES: tuple[str, ...] = ("walk", "run", "jump", "squat", "wave", "flap", "spin", "sway")
# AVA export only: the pose label of an actor outside its action, and the interaction labels.
IDLE_NAME = "stand"
# The class-agnostic ground truth (every actor on every frame, idle or not) for training a person detector.
PERSON_NAME = "person"
PERSONS_FILE = "{name}-persons.pkl"  # not "*-GT.pkl": ACT tools expect exactly one ground-truth pickle per folder
INTERACTION_NAMES: tuple[str, ...] = ("near", "approach", "face")
LAYOUTS = ("act", "ava", "both")
MARKER = "synth.json"  # written last: its presence marks a complete data set
PARTIAL_MARKER = "synth.partial.json"  # present while a rendering runs: its settings and the videos written so far
# Visibility bands for statistics: fully visible >= 0.95 > partly >= 0.5 > heavily occluded.
VISIBILITY_BANDS: tuple[tuple[str, float, float], ...] = (
    ("fully visible (>= 0.95)", 0.95, 1.01),
    ("partly occluded [0.5, 0.95)", 0.5, 0.95),
    ("heavily occluded (< 0.5)", 0.0, 0.5),
)

# Body proportions as fractions of the actor height h.
_THIGH, _SHIN, _TORSO, _NECK, _HEAD_R = 0.25, 0.25, 0.30, 0.03, 0.085
_UPPER_ARM, _FOREARM, _SHOULDER_W, _HIP_W = 0.17, 0.16, 0.09, 0.05
# Part ids in the per-actor label canvas, in drawing order (later parts are drawn over earlier ones).
_PART_LEG_L, _PART_LEG_R, _PART_TORSO, _PART_ARM_L, _PART_ARM_R, _PART_HEAD = 1, 2, 3, 4, 5, 6
_SHIFT = 4  # cv2 fixed-point drawing: coordinates are multiplied by 2**_SHIFT
_ONE = 1 << _SHIFT
_RAMP_S = 0.2  # seconds to blend from idle into an action and back


@dataclass(frozen=True)
class SynthConfig:
    """Configuration of a synthetic data set (all sizes in pixels unless stated).

    Args:
        videos: number of videos.
        frames: frames per video ``T``.
        height, width: frame size.
        fps: frame rate; motions are defined per second and the AVA layout assumes 30.
        classes: the action classes to use (a subset of ``CLASS_NAMES``, kept in that order).
        actors: min and max number of actors per video.
        actor_height: min and max actor height as a fraction of the frame height.
        action_length: min and max action length as a fraction of ``T`` (at least 8 frames, at most ``T - 2``).
        occlusion: probability that an actor gets an occluder crossing it during its action.
        distractors: mean number (Poisson) of extra occluders moving anywhere in a video.
        occluder_width: min and max occluder thickness as a fraction of the actor height.
        noise_std: standard deviation of the per-pixel Gaussian noise (0-255 scale).
        background_motion: max background pan speed in pixels per frame.
        test_every: video ``i`` is a test video when ``i % test_every == test_every - 1``.
        seed: base seed; video ``i`` uses ``numpy.random.Generator(PCG64(SeedSequence([seed, i])))``.
        jpeg_quality: JPEG quality of the written frames.
        name: file-name prefix (``<name>-GT.pkl``) and data set name.
        preset: the preset this configuration came from (informative).
    """

    videos: int = 64
    frames: int = 48
    height: int = 120
    width: int = 160
    fps: int = 30
    classes: tuple[str, ...] = CLASS_NAMES
    actors: tuple[int, int] = (1, 3)
    actor_height: tuple[float, float] = (0.35, 0.6)
    action_length: tuple[float, float] = (0.4, 0.8)
    occlusion: float = 0.35
    distractors: float = 0.3
    occluder_width: tuple[float, float] = (0.15, 0.4)
    noise_std: float = 4.0
    background_motion: float = 0.3
    test_every: int = 4
    seed: int = 0
    jpeg_quality: int = 90
    name: str = "Synth"
    preset: str = "custom"

    def __post_init__(self) -> None:
        if self.videos < 1:
            raise StadError(f"videos must be >= 1, got {self.videos}")
        if self.frames < 12:
            raise StadError(f"frames must be >= 12 (actions start and end inside the video), got {self.frames}")
        if self.height < 32 or self.width < 32:
            raise StadError(f"frame size must be at least 32x32, got {self.height}x{self.width}")
        unknown = [c for c in self.classes if c not in CLASS_NAMES]
        if unknown or not self.classes:
            raise StadError(f"classes must be a non-empty subset of {list(CLASS_NAMES)}, got {list(self.classes)}")
        if not 1 <= self.actors[0] <= self.actors[1]:
            raise StadError(f"actors must be (min, max) with 1 <= min <= max, got {self.actors}")
        if not 0.0 <= self.occlusion <= 1.0:
            raise StadError(f"occlusion must be in [0, 1], got {self.occlusion}")
        if self.distractors < 0 or self.noise_std < 0 or self.background_motion < 0:
            raise StadError("distractors, noise_std and background_motion must be >= 0")
        if not 0.05 <= self.actor_height[0] <= self.actor_height[1] <= 0.9:
            raise StadError(f"actor_height must satisfy 0.05 <= min <= max <= 0.9, got {self.actor_height}")
        if not 0.0 < self.action_length[0] <= self.action_length[1] <= 1.0:
            raise StadError(f"action_length must satisfy 0 < min <= max <= 1, got {self.action_length}")
        if self.test_every < 2:
            raise StadError(f"test_every must be >= 2, got {self.test_every}")
        if self.fps < 1:
            raise StadError(f"fps must be >= 1, got {self.fps}")
        # keep the canonical class order whatever order was given
        object.__setattr__(self, "classes", tuple(c for c in CLASS_NAMES if c in self.classes))

    @classmethod
    def preset(cls, name: str, **overrides: object) -> "SynthConfig":
        """A named preset (``tiny``, ``small``, ``occluded``, ``benchmark``), with field overrides.

        * ``tiny``: 8 videos x 32 frames at 96x128, for unit tests (about a second to render);
        * ``small``: 64 videos x 48 frames at 120x160, for the demo and learning tests (seconds);
        * ``occluded``: ``small`` with an occluder for every actor, more distractors and wider occluders;
        * ``benchmark``: 400 videos x 64 frames at 240x320 (UCF101-24's size), for the accuracy table.
        """
        presets: dict[str, dict[str, object]] = {
            "tiny": dict(videos=8, frames=32, height=96, width=128),
            "small": dict(videos=64, frames=48, height=120, width=160),
            "occluded": dict(videos=64, frames=48, height=120, width=160, occlusion=1.0, distractors=1.5,
                             occluder_width=(0.25, 0.6)),
            "benchmark": dict(videos=400, frames=64, height=240, width=320),
        }
        if name not in presets:
            raise StadError(f"unknown synthetic preset {name!r}; expected one of {sorted(presets)}")
        values = {**presets[name], "preset": name, **overrides}
        return cls(**values)  # type: ignore[arg-type]

    def video_name(self, video_index: int) -> str:
        return f"video_{video_index:05d}"

    def is_test(self, video_index: int) -> bool:
        return video_index % self.test_every == self.test_every - 1

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# ----------------------------------------------------------------------------------------------------------------
# Actors: motion parameters -> per-frame joint angles -> joint positions
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ActorSpec:
    """The random draw of one actor (everything needed to compute its motion).

    Attributes:
        label: 0-based index into ``SynthConfig.classes``.
        action: the class name.
        start, end: first and last frame of the action (from 1, inclusive).
        height: actor height ``h`` in pixels.
        x0: initial hip x; ground: y of the feet on the ground (pixels).
        facing: +1 (towards +x) or -1.
        frequency: cycle frequency in Hz; amplitude: the class's amplitude parameter; speed: heights per second.
        side: the waving arm for ``wave`` (-1 left, +1 right).
        phase: idle breathing phase.
        palette: ``(7, 3)`` uint8 RGB colour per part id (row 0 unused).
        texture: ``(S, S)`` uint8 gain in actor coordinates, 128 = 1.0.
        limb_width: limb thickness in pixels.
    """

    label: int
    action: str
    start: int
    end: int
    height: float
    x0: float
    ground: float
    facing: int
    frequency: float
    amplitude: float
    speed: float
    side: int
    phase: float
    palette: np.ndarray
    texture: np.ndarray
    limb_width: int


@dataclass
class Joints:
    """Per-frame 2D joints of one actor, pixels, ``T`` frames.

    Attributes:
        root: ``(T, 2)`` hip centre ``x, y``.
        points: ``(T, 15, 2)`` in the order of ``JOINT_NAMES`` (neck, head, nose, shoulder/elbow/hand/hip/knee/foot
            left and right)
        facing: ``(T,)`` +1/-1, the direction the actor faces (mirrored while spinning).
    """

    root: np.ndarray
    points: np.ndarray
    facing: np.ndarray


JOINT_NAMES: tuple[str, ...] = ("neck", "head", "nose", "shoulder_l", "shoulder_r", "elbow_l", "elbow_r",
                                "hand_l", "hand_r", "hip_l", "hip_r", "knee_l", "knee_r", "foot_l", "foot_r")
_J = {name: i for i, name in enumerate(JOINT_NAMES)}


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random ``(size, size)`` uint8 gain texture (128 = 1.0): stripes, checks or blotches."""
    kind = int(rng.integers(3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = float(rng.uniform(3.0, 8.0))
    contrast = float(rng.uniform(0.15, 0.35))
    if kind == 0:  # stripes at a random angle
        angle = float(rng.uniform(0, np.pi))
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    elif kind == 1:  # checks
        wave = np.sign(np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period))
    else:  # blotches: smooth noise
        small = rng.standard_normal((max(2, size // 6), max(2, size // 6))).astype(np.float32)
        wave = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        wave /= max(1e-6, float(np.abs(wave).max()))
    return np.clip(128.0 * (1.0 + contrast * wave), 0, 255).astype(np.uint8)


def _sample_actor(rng: np.random.Generator, cfg: SynthConfig, label: int) -> ActorSpec:
    T, H, W = cfg.frames, cfg.height, cfg.width
    action = cfg.classes[label]
    h = float(rng.uniform(*cfg.actor_height)) * H
    length = int(round(rng.uniform(*cfg.action_length) * T))
    length = int(np.clip(length, min(8, T - 2), T - 2))
    start = int(rng.integers(2, T - length + 1))  # 2 <= start, end = start + length - 1 <= T - 1
    end = start + length - 1
    ground = float(rng.uniform(min(H - 2.0, h + 0.05 * H), H - 2.0))
    margin = 0.25 * h
    x0 = float(rng.uniform(margin, max(margin + 1.0, W - margin)))
    # Class-specific motion parameters; walk and run share the amplitude range on purpose.
    frequency, amplitude, speed = {
        "walk": lambda: (rng.uniform(0.8, 1.3), rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.7)),
        "run": lambda: (rng.uniform(1.8, 2.6), rng.uniform(0.35, 0.6), rng.uniform(1.3, 2.2)),
        "jump": lambda: (rng.uniform(1.0, 1.6), rng.uniform(0.15, 0.3), 0.0),
        "squat": lambda: (rng.uniform(0.5, 0.9), rng.uniform(0.6, 1.0), 0.0),
        "wave": lambda: (rng.uniform(1.5, 2.5), rng.uniform(0.4, 0.7), 0.0),
        "flap": lambda: (rng.uniform(0.6, 1.2), rng.uniform(0.8, 1.0), 0.0),
        "spin": lambda: (rng.uniform(0.5, 1.0), rng.uniform(1.3, 1.6), 0.0),
        "sway": lambda: (rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.4), 0.0),
    }[action]()
    palette = np.zeros((7, 3), np.uint8)
    trousers, shirt = rng.integers(30, 226, size=(2, 3))
    skin = np.array([rng.uniform(120, 240), rng.uniform(80, 200), rng.uniform(60, 170)])
    palette[[_PART_LEG_L, _PART_LEG_R]] = trousers
    palette[[_PART_TORSO, _PART_ARM_L, _PART_ARM_R]] = shirt
    palette[_PART_HEAD] = skin.astype(np.uint8)
    return ActorSpec(
        label=label, action=action, start=start, end=end, height=h, x0=x0, ground=ground,
        facing=int(rng.choice([-1, 1])), frequency=float(frequency), amplitude=float(amplitude),
        speed=float(speed), side=int(rng.choice([-1, 1])), phase=float(rng.uniform(0, 2 * np.pi)),
        palette=palette, texture=_texture(rng, int(max(8, 2 * h))),
        limb_width=max(2, int(round(rng.uniform(0.05, 0.075) * h))),
    )


def actor_joints(spec: ActorSpec, *, frames: int, fps: int, width: int) -> Joints:
    """Compute the joints of ``spec`` on frames ``1..frames`` (idle outside ``start..end``).

    Angles are in the image plane, measured from straight down, positive towards +x. ``width`` bounds the walk:
    walkers turn around at the borders (``0.25 h`` from the edge). Returns :class:`Joints` in pixels.
    """
    T = frames
    h = spec.height
    t = np.arange(1, T + 1, dtype=np.float64)
    active = (t >= spec.start) & (t <= spec.end)
    tau = np.where(active, (t - spec.start) / fps, 0.0)  # seconds since the action started
    duration = (spec.end - spec.start) / fps
    env = np.where(active, np.clip(np.minimum(tau, duration - tau) / _RAMP_S, 0.0, 1.0), 0.0)
    breath = 0.03 * np.sin(2 * np.pi * 0.3 * t / fps + spec.phase)
    sides = np.array([-1.0, 1.0])[:, None]  # left, right  [2, 1]
    # Idle pose, per side: [2, T]
    thigh = sides * 0.06 * np.ones(T)
    shin = sides * 0.06 * np.ones(T)
    uarm = sides * (0.12 + breath)
    farm = sides * (0.08 + breath)
    lean = np.zeros(T)
    xscale = np.ones(T)
    lift = np.zeros(T)
    velocity = np.zeros(T)  # |vx| in px/frame
    phase = 2 * np.pi * spec.frequency * tau  # [T]
    A, f = spec.amplitude, spec.facing
    act = spec.action
    if act in ("walk", "run"):
        swing = A * np.sin(phase)
        bend_l, bend_r = 0.8 * A * np.maximum(0, -np.sin(phase)), 0.8 * A * np.maximum(0, np.sin(phase))
        pose_thigh = np.stack([f * swing, -f * swing])
        pose_shin = pose_thigh - f * np.stack([bend_l, bend_r])
        pose_uarm = np.stack([-f * 0.7 * swing, f * 0.7 * swing])
        pose_farm = pose_uarm + f * 0.5
        velocity = spec.speed * h / fps * env
    elif act in ("jump", "squat"):
        if act == "jump":
            air = np.abs(np.sin(np.pi * spec.frequency * tau))  # one hop per 1/f seconds
            depth = 0.7 * (1.0 - air) ** 2
            lift = A * h * air * env
        else:
            depth = A * (1.0 - np.cos(phase)) / 2
        pose_thigh = np.stack([f * 1.3 * depth + sides[0] * 0.06, f * 1.3 * depth + sides[1] * 0.06])
        pose_shin = np.stack([-f * 1.0 * depth, -f * 1.0 * depth]) + sides * 0.06
        pose_uarm = np.stack([f * 1.2 * depth - 0.12, f * 1.2 * depth + 0.12])
        pose_farm = pose_uarm + f * 0.3 * depth
        lean = f * 0.35 * depth * env
    elif act == "wave":
        up = sides * 0.12 * np.ones(T)
        up[(spec.side + 1) // 2] = spec.side * 2.4
        pose_uarm = up
        pose_farm = up.copy()
        pose_farm[(spec.side + 1) // 2] = spec.side * (2.9 + A * np.sin(phase))
        pose_thigh, pose_shin = thigh, shin
    elif act in ("flap", "spin"):
        if act == "flap":
            raise_ = 0.2 + (2.6 * A - 0.2) * (1 - np.cos(phase)) / 2  # arms from down to up (2.6 A rad)
        else:
            raise_ = A * np.ones(T)
            xscale = 1.0 + env * (np.cos(phase) - 1.0)
        pose_uarm = sides * raise_
        pose_farm = sides * (raise_ + 0.1)
        pose_thigh, pose_shin = thigh, shin
    elif act == "sway":
        lean = A * np.sin(phase) * env
        pose_uarm = uarm + 0.6 * lean
        pose_farm = farm + 0.6 * lean
        pose_thigh, pose_shin = thigh, shin
    else:  # pragma: no cover - classes are validated by SynthConfig
        raise AssertionError(act)
    thigh = thigh + env * (pose_thigh - thigh)
    shin = shin + env * (pose_shin - shin)
    uarm = uarm + env * (pose_uarm - uarm)
    farm = farm + env * (pose_farm - farm)

    # Horizontal motion with turns at the borders.
    margin = 0.25 * h
    lo, hi = margin, max(margin + 1.0, width - 1 - margin)
    x = np.empty(T)
    facing = np.empty(T)
    pos, direction = spec.x0, float(f)
    for i in range(T):
        pos += direction * velocity[i]
        if pos > hi or pos < lo:
            direction = -direction
            pos = float(np.clip(2 * (hi if pos > hi else lo) - pos, lo, hi))
        x[i], facing[i] = pos, direction
    if act in ("walk", "run"):  # the swing follows the current walking direction
        turn = facing * f
        thigh, shin, uarm, farm = thigh * turn, shin * turn, uarm * turn, farm * turn
    leg_extent = _THIGH * np.cos(thigh) + _SHIN * np.cos(shin)  # [2, T] in heights
    y = spec.ground - h * leg_extent.max(axis=0) - lift
    root = np.stack([x, y], axis=1)  # [T, 2]

    def offset(length: float, angle: np.ndarray) -> np.ndarray:  # [..., T] -> [..., T, 2]
        return h * length * np.stack([np.sin(angle), np.cos(angle)], axis=-1)

    up = np.stack([np.sin(lean), -np.cos(lean)], axis=-1)  # [T, 2]
    neck = root + h * _TORSO * up
    head = neck + h * (_NECK + _HEAD_R) * up
    spin_facing = facing * np.where(xscale < 0, -1.0, 1.0)
    nose = head + np.stack([facing * h * _HEAD_R * 0.9, np.zeros(T)], axis=1)
    ones = np.ones((2, T))
    shoulder = neck[None] + np.stack([sides * h * _SHOULDER_W * ones, 0.02 * h * ones], axis=-1)  # [2, T, 2]
    hip = root[None] + np.stack([sides * h * _HIP_W * ones, 0.0 * ones], axis=-1)  # [2, T, 2]
    elbow = shoulder + offset(_UPPER_ARM, uarm)
    hand = elbow + offset(_FOREARM, farm)
    knee = hip + offset(_THIGH, thigh)
    foot = knee + offset(_SHIN, shin)
    points = np.stack([neck, head, nose, shoulder[0], shoulder[1], elbow[0], elbow[1], hand[0], hand[1],
                       hip[0], hip[1], knee[0], knee[1], foot[0], foot[1]], axis=1)  # [T, 15, 2]
    points[..., 0] = root[:, None, 0] + xscale[:, None] * (points[..., 0] - root[:, None, 0])  # spin: narrow/mirror
    return Joints(root=root, points=points, facing=spin_facing)


# ----------------------------------------------------------------------------------------------------------------
# Scenes: everything random about one video, then a pure renderer
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Occluder:
    """A moving opaque occluder.

    Attributes:
        kind: ``"vbar"``, ``"hbar"`` (axis-aligned rectangles) or ``"blob"`` (ellipse).
        size: ``(width, height)`` in pixels (ellipse: full axes).
        centre: ``(T, 2)`` float ``x, y`` per frame.
        color: ``(3,)`` uint8 RGB.
        texture: ``(S, S)`` uint8 gain (128 = 1.0) moving with the occluder.
    """

    kind: str
    size: tuple[float, float]
    centre: np.ndarray
    color: np.ndarray
    texture: np.ndarray


@dataclass
class Scene:
    """One video before rendering: all its random draws.

    Attributes:
        name: video name; height, width, frames, fps: as in the config.
        actors: the actors, in drawing order (later ones are in front).
        joints: per actor, its :class:`Joints`.
        occluders: drawn in front of all actors, in order.
        background: ``(H + 2P, W + 2P, 3)`` uint8 texture; pan: ``(T, 2)`` int top-left offset ``x, y`` per frame.
        brightness: ``(T,)`` int additive brightness change.
        noise: ``(B, H, W, 3)`` int16 noise bank; noise_index: ``(T,)`` which bank entry each frame uses.
    """

    name: str
    height: int
    width: int
    frames: int
    fps: int
    actors: list[ActorSpec]
    joints: list[Joints]
    occluders: list[Occluder]
    background: np.ndarray
    pan: np.ndarray
    brightness: np.ndarray
    noise: np.ndarray
    noise_index: np.ndarray


@dataclass
class ActorTrack:
    """The rendered annotation of one actor on every frame of its video (``T`` frames).

    Attributes:
        label: 0-based class index; action: class name; start, end: action frames (from 1, inclusive).
        person_id: the actor's index in the video.
        boxes: ``(T, 4)`` float ``x1, y1, x2, y2`` inclusive pixel extent of the silhouette (NaN if none in frame).
        visibility: ``(T,)`` visible fraction of the silhouette (see the module docstring).
        root: ``(T, 2)`` hip centre; facing: ``(T,)`` +1/-1; height: actor height in pixels.
    """

    label: int
    action: str
    start: int
    end: int
    person_id: int
    boxes: np.ndarray
    visibility: np.ndarray
    root: np.ndarray
    facing: np.ndarray
    height: float

    def tube(self) -> np.ndarray:
        """The ground-truth tube ``(L, 5)`` float32 ``[frame, x1, y1, x2, y2]`` on frames ``start..end``."""
        frames = np.arange(self.start, self.end + 1)
        return np.concatenate([frames[:, None], self.boxes[frames - 1]], axis=1).astype(np.float32)

    def tube_visibility(self) -> np.ndarray:
        """``(L,)`` float32 visibility on frames ``start..end``, parallel to :meth:`tube`."""
        return self.visibility[self.start - 1:self.end].astype(np.float32)

    def person_tubes(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The actor as a person over the whole video, idle or not: ``(L, 5)`` float32 tubes on every run of
        consecutive frames where it has a box, and their ``(L,)`` visibility."""
        present = ~np.isnan(self.boxes[:, 0])
        edges = np.flatnonzero(np.diff(np.concatenate([[0], present.astype(np.int8), [0]])))
        tubes, vis = [], []
        for start, stop in zip(edges[::2], edges[1::2]):  # 0-based [start, stop)
            frames = np.arange(start + 1, stop + 1)
            tubes.append(np.concatenate([frames[:, None], self.boxes[start:stop]], axis=1).astype(np.float32))
            vis.append(self.visibility[start:stop].astype(np.float32))
        return tubes, vis


@dataclass
class SynthVideo:
    """A rendered video.

    Attributes:
        name: video name.
        frames: ``(T, H, W, 3)`` uint8 RGB.
        actors: one :class:`ActorTrack` per actor.
        masks: ``(A, T, H, W)`` bool amodal silhouettes (only with ``return_masks=True``), else None.
        occluder_masks: ``(T, H, W)`` bool, the pixels the occluders cover on each frame (in front of any actor).
        frame_numbers: ``(F,)`` the numbers (from 1) of the rendered frames (all ``T`` unless ``render_scene`` was
            given ``frames``); ``frames``, ``masks`` and ``occluder_masks`` hold those frames in that order.
    """

    name: str
    frames: np.ndarray
    actors: list[ActorTrack]
    masks: np.ndarray | None = None
    occluder_masks: np.ndarray | None = None
    frame_numbers: np.ndarray | None = None


def _video_rng(seed: int, video_index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(video_index)])))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background ``(height, width, 3)`` uint8: smooth colour fields, fine noise and clutter shapes."""
    base = rng.uniform(40, 215, size=(4, 4, 3)).astype(np.float32)
    img = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    mid = rng.standard_normal((max(2, height // 8), max(2, width // 8), 3)).astype(np.float32)
    img += 18.0 * cv2.resize(mid, (width, height), interpolation=cv2.INTER_LINEAR)
    img += 10.0 * rng.standard_normal((height, width, 3), dtype=np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    scale = min(height, width)
    for _ in range(int(rng.integers(8, 20))):  # clutter: rectangles, discs and limb-like lines
        color = tuple(int(c) for c in rng.integers(20, 236, size=3))
        kind = int(rng.integers(3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        s = int(rng.uniform(0.03, 0.15) * scale) + 1
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + s, y + int(rng.uniform(0.5, 2.0) * s)), color, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), s // 2 + 1, color, -1)
        else:
            angle = rng.uniform(0, np.pi)
            cv2.line(img, (x, y), (x + int(2 * s * np.cos(angle)), y + int(2 * s * np.sin(angle))), color,
                     max(1, s // 4))
    return img


def sample_scene(cfg: SynthConfig, video_index: int, *, key: Sequence[int] | None = None, name: str | None = None) -> Scene:
    """Draw everything random about video ``video_index`` with its own generator ``(cfg.seed, video_index)``.

    ``key`` replaces that seed sequence (the training stream, :mod:`stad.data.synth_stream`, uses longer keys, so its
    videos are never the data set's), ``name`` the video name (default ``cfg.video_name(video_index)``).
    """
    rng = _video_rng(cfg.seed, video_index) if key is None else \
        np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))
    T, H, W = cfg.frames, cfg.height, cfg.width
    n_actors = int(rng.integers(cfg.actors[0], cfg.actors[1] + 1))
    actors = [_sample_actor(rng, cfg, int(rng.integers(len(cfg.classes)))) for _ in range(n_actors)]
    joints = [actor_joints(a, frames=T, fps=cfg.fps, width=W) for a in actors]

    occluders: list[Occluder] = []
    t = np.arange(T, dtype=np.float64)
    for actor, joint in zip(actors, joints):
        draw = rng.random()
        if draw >= cfg.occlusion:
            continue
        tc = int(rng.integers(actor.start - 1, actor.end))  # 0-based frame of the crossing
        target = joint.root[tc] + np.array([0.0, -0.2 * actor.height])
        occluders.append(_sample_occluder(rng, cfg, actor.height, target, tc, t))
    for _ in range(int(rng.poisson(cfg.distractors))):
        target = np.array([rng.uniform(0, W), rng.uniform(0, H)])
        occluders.append(_sample_occluder(rng, cfg, rng.uniform(*cfg.actor_height) * H, target,
                                          int(rng.integers(T)), t))

    speed = rng.uniform(-cfg.background_motion, cfg.background_motion, size=2)
    pad = int(math.ceil(cfg.background_motion * T / 2)) + 1
    background = _background(rng, H + 2 * pad, W + 2 * pad)
    pan = np.rint(pad + speed[None, :] * (t[:, None] - (T - 1) / 2)).astype(np.int64)  # [T, 2]
    pan = np.clip(pan, 0, 2 * pad)
    brightness = np.rint(rng.uniform(0, 8) * np.sin(2 * np.pi * t / rng.uniform(20, 60) + rng.uniform(0, 6.3)))
    # a bank of 4 noise images: one Gaussian draw and its mirror images (cheaper than 4 draws)
    base = np.rint(rng.standard_normal((H, W, 3), dtype=np.float32) * cfg.noise_std).astype(np.int16)
    noise = np.ascontiguousarray(np.stack([base, base[::-1], base[:, ::-1], base[::-1, ::-1]]))  # [4, H, W, 3]
    noise_index = rng.integers(len(noise), size=T)
    return Scene(name=cfg.video_name(video_index) if name is None else name, height=H, width=W, frames=T, fps=cfg.fps, actors=actors,
                 joints=joints, occluders=occluders, background=background, pan=pan,
                 brightness=brightness.astype(np.int16), noise=noise, noise_index=noise_index)


def _sample_occluder(rng: np.random.Generator, cfg: SynthConfig, actor_height: float, target: np.ndarray,
                     tc: int, t: np.ndarray) -> Occluder:
    """An occluder whose centre is at ``target`` (x, y) on 0-based frame ``tc``, moving at constant velocity."""
    kind = ("vbar", "hbar", "blob")[int(rng.integers(3))]
    thick = float(rng.uniform(*cfg.occluder_width)) * actor_height + 2.0
    long = float(rng.uniform(0.8, 1.6)) * actor_height
    speed = float(rng.uniform(0.3, 0.9)) * cfg.width / cfg.fps  # px / frame
    if kind == "vbar":
        size, direction = (thick, long), np.array([rng.choice([-1.0, 1.0]), 0.0])
    elif kind == "hbar":
        size, direction = (long, thick), np.array([0.0, rng.choice([-1.0, 1.0])])
        speed *= cfg.height / cfg.width
    else:
        size = (thick * 1.5, thick * float(rng.uniform(1.0, 2.0)))
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
    centre = target[None, :] + (t[:, None] - tc) * speed * direction[None, :]  # [T, 2]
    return Occluder(kind=kind, size=size, centre=centre, color=rng.integers(20, 236, size=3).astype(np.uint8),
                    texture=_texture(rng, 32))


def _fx(v: float) -> int:
    return int(round(v * _ONE))


def _draw_actor(points_fx: np.ndarray, spec: ActorSpec, x0: int, y0: int, canvas: np.ndarray) -> None:
    """Draw the part ids of one actor into ``canvas`` (uint8 crop whose top-left pixel is ``(x0, y0)``).

    ``points_fx``: ``(15, 2)`` int joints of one frame (``JOINT_NAMES``) in fixed point (pixels * 2**_SHIFT).
    """
    p = (points_fx - np.array([x0 * _ONE, y0 * _ONE])).tolist()
    w = spec.limb_width
    line = cv2.LINE_8
    j = _J
    for part, a, b, c in ((_PART_LEG_L, j["hip_l"], j["knee_l"], j["foot_l"]),
                          (_PART_LEG_R, j["hip_r"], j["knee_r"], j["foot_r"])):
        cv2.line(canvas, p[a], p[b], part, w, line, _SHIFT)
        cv2.line(canvas, p[b], p[c], part, w, line, _SHIFT)
    torso = np.array([p[j["shoulder_l"]], p[j["shoulder_r"]], p[j["hip_r"]], p[j["hip_l"]]], np.int32)
    cv2.fillConvexPoly(canvas, torso, _PART_TORSO, line, _SHIFT)
    mid_hip = [(p[j["hip_l"]][0] + p[j["hip_r"]][0]) // 2, (p[j["hip_l"]][1] + p[j["hip_r"]][1]) // 2]
    cv2.line(canvas, p[j["neck"]], mid_hip, _PART_TORSO, w + 1, line, _SHIFT)
    for part, a, b, c in ((_PART_ARM_L, j["shoulder_l"], j["elbow_l"], j["hand_l"]),
                          (_PART_ARM_R, j["shoulder_r"], j["elbow_r"], j["hand_r"])):
        cv2.line(canvas, p[a], p[b], part, w, line, _SHIFT)
        cv2.line(canvas, p[b], p[c], part, w, line, _SHIFT)
    radius = _fx(_HEAD_R * spec.height)
    cv2.circle(canvas, p[j["head"]], radius, _PART_HEAD, -1, line, _SHIFT)
    cv2.circle(canvas, p[j["nose"]], max(_ONE, radius // 3), _PART_HEAD, -1, line, _SHIFT)


def _paint(frame: np.ndarray, owner: np.ndarray, x0: int, y0: int, canvas: np.ndarray, palette: np.ndarray,
           gain: "_Tiled", origin: tuple[int, int], owner_id: int) -> None:
    """Paint the non-zero pixels of ``canvas`` (a crop whose top-left pixel is ``(x0, y0)``); record their owner.

    Colour = ``palette[canvas]`` (``(C, 3)`` uint8) times the texture gain (128 = 1.0), whose texel ``(0, 0)``
    sits at pixel ``origin`` ``(x, y)`` so that the texture moves with the object.
    """
    h, w = canvas.shape
    colors = np.take(palette, canvas, axis=0)  # [h, w, 3]
    pix = cv2.multiply(colors, gain.window(y0 - origin[1], x0 - origin[0], h, w), scale=1 / 128.0)
    cv2.copyTo(pix, canvas, frame[y0:y0 + h, x0:x0 + w])  # in place on the view
    cv2.copyTo(_constant(owner_id, owner.shape)[:h, :w], canvas, owner[y0:y0 + h, x0:x0 + w])


class _Tiled:
    """A ``(S, S)`` uint8 texture repeated to cover windows of up to ``limit`` pixels, as 3 channels."""

    def __init__(self, texture: np.ndarray, limit: int) -> None:
        self.size = texture.shape[0]
        reps = -(-(self.size + limit) // self.size)
        self.tile = cv2.merge([np.tile(texture, (reps, reps))] * 3)  # [reps*S, reps*S, 3]

    def window(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """``(h, w, 3)`` texels whose top-left is texel ``(y mod S, x mod S)``."""
        y, x = y % self.size, x % self.size
        return self.tile[y:y + h, x:x + w]


def _crops(points: np.ndarray, pad: float, height: int, width: int) -> np.ndarray:
    """``(T, 4)`` int crop ``x0, y0, x1, y1`` (end-exclusive, inside the frame) around ``(T, J, 2)`` joints."""
    lo = np.floor(points.min(axis=1) - pad).astype(np.int64)  # [T, 2]
    hi = np.ceil(points.max(axis=1) + pad).astype(np.int64) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width, height])
    return np.concatenate([lo, hi], axis=1)


_CONSTANTS: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}


def _constant(value: int, shape: tuple[int, ...]) -> np.ndarray:
    """A cached read-only uint8 array of ``shape`` filled with ``value``."""
    key = (value, tuple(shape))
    if key not in _CONSTANTS:
        if len(_CONSTANTS) > 64:
            _CONSTANTS.clear()
        array = np.full(shape, value, np.uint8)
        array.flags.writeable = False
        _CONSTANTS[key] = array
    return _CONSTANTS[key]


_OCCLUDER_ID = 255


def render_scene(scene: Scene, *, return_masks: bool = False, frames: Sequence[int] | None = None) -> SynthVideo:
    """Render a :class:`Scene` (pure: the same scene gives the same pixels).

    Returns a :class:`SynthVideo` with ``(T, H, W, 3)`` uint8 RGB frames and per-actor boxes/visibility on every
    frame (inclusive pixel extent of the silhouette, see the module docstring).

    ``frames`` (numbers from 1, distinct, ascending) renders only those frames, each exactly as in the whole video:
    ``SynthVideo.frames`` / ``masks`` / ``occluder_masks`` then hold them in that order (``frame_numbers``), and the
    actors' boxes and visibility stay ``(T, ...)`` with NaN / 0 on the frames not rendered.
    """
    T, H, W = scene.frames, scene.height, scene.width
    A = len(scene.actors)
    if A >= _OCCLUDER_ID:
        raise StadError(f"at most {_OCCLUDER_ID - 1} actors per video, got {A}")
    numbers = np.arange(1, T + 1) if frames is None else np.asarray(frames, dtype=np.int64).reshape(-1)
    if len(numbers) == 0 or numbers.min() < 1 or numbers.max() > T or np.any(np.diff(numbers) <= 0):
        raise StadError(f"frames must be distinct ascending numbers in 1..{T}, got {numbers.tolist()}")
    F = len(numbers)
    frames_out = np.empty((F, H, W, 3), np.uint8)
    boxes = np.full((A, T, 4), np.nan)
    visibility = np.zeros((A, T))
    masks = np.zeros((A, F, H, W), bool) if return_masks else None
    occluded = np.zeros((F, H, W), bool)
    owner = np.empty((H, W), np.uint8)
    points_fx = [np.rint(j.points * _ONE).astype(np.int64) for j in scene.joints]  # [T, 15, 2] fixed point
    limit = max(H, W)
    gains = [_Tiled(spec.texture, limit) for spec in scene.actors]
    occluder_gains = [_Tiled(occ.texture, limit) for occ in scene.occluders]
    noise_pos = np.maximum(scene.noise, 0).astype(np.uint8)  # [B, H, W, 3]
    noise_neg = np.maximum(-scene.noise, 0).astype(np.uint8)
    crops_per_actor = [_crops(j.points, max(spec.limb_width, _HEAD_R * spec.height) + 2, H, W)
                       for spec, j in zip(scene.actors, scene.joints)]  # [T, 4] each
    for i, t in enumerate((numbers - 1).tolist()):
        ox, oy = scene.pan[t]
        frame = scene.background[oy:oy + H, ox:ox + W].copy()
        owner[:] = 0
        crops: list[tuple[int, int, int, int, np.ndarray]] = []
        for k, (spec, joints) in enumerate(zip(scene.actors, scene.joints)):
            x0, y0, x1, y1 = crops_per_actor[k][t].tolist()
            if x1 <= x0 or y1 <= y0:
                crops.append((x0, y0, x1, y1, np.zeros((0, 0), bool)))
                continue
            canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
            _draw_actor(points_fx[k][t], spec, x0, y0, canvas)
            mask = canvas > 0
            origin = (int(joints.root[t, 0]), int(joints.root[t, 1]))
            _paint(frame, owner, x0, y0, canvas, spec.palette, gains[k], origin, k + 1)
            crops.append((x0, y0, x1, y1, mask))
            cols = np.flatnonzero(mask.any(axis=0))
            if len(cols):
                rows = np.flatnonzero(mask.any(axis=1))
                boxes[k, t] = (x0 + cols[0], y0 + rows[0], x0 + cols[-1], y0 + rows[-1])
            if masks is not None:
                masks[k, i, y0:y1, x0:x1] = mask
        for occ, gain in zip(scene.occluders, occluder_gains):
            _draw_occluder(occ, gain, t, frame, owner)
        np.equal(owner, _OCCLUDER_ID, out=occluded[i])
        for k, (x0, y0, x1, y1, mask) in enumerate(crops):
            total = int(np.count_nonzero(mask))
            if total:
                visibility[k, t] = np.count_nonzero(owner[y0:y1, x0:x1] == k + 1) / total
        # noise and brightness with saturating uint8 arithmetic: (frame + max(n, 0)) - max(-n, 0) + b
        cv2.add(frame, noise_pos[scene.noise_index[t]], dst=frame)
        cv2.subtract(frame, noise_neg[scene.noise_index[t]], dst=frame)
        b = int(scene.brightness[t])
        if b >= 0:
            cv2.add(frame, _constant(b, frame.shape), dst=frames_out[i])
        else:
            cv2.subtract(frame, _constant(-b, frame.shape), dst=frames_out[i])
    actors = [
        ActorTrack(label=spec.label, action=spec.action, start=spec.start, end=spec.end, person_id=k,
                   boxes=boxes[k], visibility=visibility[k], root=joints.root, facing=joints.facing,
                   height=spec.height)
        for k, (spec, joints) in enumerate(zip(scene.actors, scene.joints))
    ]
    rendered = np.zeros(T, bool)
    rendered[numbers - 1] = True
    for track in actors:
        inside = track.boxes[track.start - 1:track.end][rendered[track.start - 1:track.end]]
        if np.isnan(inside).any():  # internal invariant: actors stay in the frame
            raise AssertionError(f"{scene.name}: actor {track.person_id} left the frame during its action")
    return SynthVideo(name=scene.name, frames=frames_out, actors=actors, masks=masks, occluder_masks=occluded,
                      frame_numbers=numbers)


def _draw_occluder(occ: Occluder, gain: _Tiled, t: int, frame: np.ndarray, owner: np.ndarray) -> None:
    H, W = owner.shape
    cx, cy = occ.centre[t]
    sw, sh = occ.size
    x0, y0 = max(0, int(math.floor(cx - sw / 2))), max(0, int(math.floor(cy - sh / 2)))
    x1, y1 = min(W, int(math.ceil(cx + sw / 2))), min(H, int(math.ceil(cy + sh / 2)))
    if x1 <= x0 or y1 <= y0:
        return
    if occ.kind == "blob":
        canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.ellipse(canvas, (_fx(cx - x0), _fx(cy - y0)), (_fx(sw / 2), _fx(sh / 2)), 0.0, 0.0, 360.0, 1, -1,
                    cv2.LINE_8, _SHIFT)
    else:
        canvas = np.ones((y1 - y0, x1 - x0), np.uint8)
    palette = np.stack([np.zeros(3, np.uint8), occ.color])
    _paint(frame, owner, x0, y0, canvas, palette, gain, (int(cx), int(cy)), _OCCLUDER_ID)


def render_video(cfg: SynthConfig, video_index: int, *, return_masks: bool = False) -> SynthVideo:
    """Render video ``video_index`` of ``cfg`` in memory (no files); see :class:`SynthVideo`."""
    return render_scene(sample_scene(cfg, video_index), return_masks=return_masks)


# ----------------------------------------------------------------------------------------------------------------
# Data sets on disk
# ----------------------------------------------------------------------------------------------------------------


def ava_label_names(cfg: SynthConfig) -> list[str]:
    """Names of the AVA-layout label map, in id order (id = position + 1)."""
    return [*cfg.classes, IDLE_NAME, *INTERACTION_NAMES]


def ava_keyframe_seconds(cfg: SynthConfig) -> list[int]:
    """Keyframe timestamps (whole seconds) of a video: ``s >= 1`` with frame ``s * fps + 1 <= T``."""
    return list(range(1, (cfg.frames - 1) // cfg.fps + 1))


def keyframe_labels(video: SynthVideo, frame: int, *, fps: int) -> list[set[str]]:
    """AVA multi-labels of each actor on ``frame`` (from 1): its action (or ``stand``) plus interactions.

    Interactions with any other actor ``o`` (distances between hip centres ``d``, ``h`` = larger height):
    ``near``: ``d < 1.0 h``; ``approach``: ``d`` shrinks by more than ``0.2 h`` from ``frame - fps/2`` to
    ``frame + fps/2`` (clamped to the video); ``face``: the actor faces towards ``o`` and ``d < 2.5 h``.
    """
    T = len(video.actors[0].root) if video.actors else len(video.frames)  # every frame, rendered or not
    i = frame - 1
    before, after = max(0, i - fps // 2), min(T - 1, i + fps // 2)
    out: list[set[str]] = []
    for a in video.actors:
        labels = {a.action if a.start <= frame <= a.end else IDLE_NAME}
        for o in video.actors:
            if o is a:
                continue
            h = max(a.height, o.height)
            d = float(np.linalg.norm(a.root[i] - o.root[i]))
            if d < 1.0 * h:
                labels.add("near")
            d0 = np.linalg.norm(a.root[before] - o.root[before])
            d1 = np.linalg.norm(a.root[after] - o.root[after])
            if d1 - d0 < -0.2 * h:
                labels.add("approach")
            if a.facing[i] * (o.root[i, 0] - a.root[i, 0]) > 0 and d < 2.5 * h:
                labels.add("face")
        out.append(labels)
    return out


def _check_layout(cfg: SynthConfig, layout: str) -> None:
    if layout not in LAYOUTS:
        raise StadError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if layout in ("ava", "both"):
        if cfg.fps != 30:
            raise StadError(f"the AVA layout is 30 fps; got fps={cfg.fps}")
        if len(ava_keyframe_seconds(cfg)) < 2:
            raise StadError(f"the AVA layout needs at least two 1 Hz keyframes, i.e. frames >= {2 * cfg.fps + 1} "
                            f"at {cfg.fps} fps; got frames={cfg.frames} (pass e.g. --frames {3 * cfg.fps + 1})")


def render_dataset(cfg: SynthConfig, out_dir: str | Path, *, layout: str = "act",
                   progress: bool = False) -> TubeAnnotations:
    """Render all videos of ``cfg`` and write them under ``out_dir`` in the ACT and/or AVA layout.

    Args:
        cfg: the configuration.
        out_dir: root folder (created); existing files of the same names are overwritten, except the videos that
            an interrupted rendering of the same ``cfg`` and ``layout`` finished (resumed). Callers decide
            whether a folder may be written (:func:`plan_dataset`, ``stad synth --overwrite``).
        layout: ``"act"``, ``"ava"`` or ``"both"`` (see the module docstring for the files).
        progress: show a tqdm progress bar.

    Returns:
        The ground truth as :class:`TubeAnnotations` (with ``visibility``), as written to ``<name>-GT.pkl``.
    """
    _check_layout(cfg, layout)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / MARKER
    if marker.exists():
        marker.unlink()  # incomplete until written again at the end
    partial = root / PARTIAL_MARKER
    done = _partial_done(partial, cfg, layout)  # videos of an interrupted rendering of the same settings
    _write_partial(partial, cfg, layout, done)
    labels = list(cfg.classes)
    ann = TubeAnnotations(labels=labels, gttubes={}, nframes={}, resolution={}, train_videos=[[]],
                          test_videos=[[]], visibility={}, name=f"synth-{cfg.preset}")
    persons = TubeAnnotations(labels=[PERSON_NAME], gttubes={}, nframes=ann.nframes, resolution=ann.resolution,
                              train_videos=ann.train_videos, test_videos=ann.test_videos, visibility={},
                              name=f"synth-{cfg.preset}-persons")
    ava_names = ava_label_names(cfg)
    ava_rows: dict[str, list[str]] = {"train": [], "val": []}
    ava_visibility: dict[str, list[str]] = {"train": [], "val": []}
    indices = range(cfg.videos)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"rendering {cfg.preset}", unit="video")
    for index in indices:
        video = render_video(cfg, index)
        name = video.name
        for t, frame in enumerate(video.frames if name not in done else [], start=1):
            act_path = root / "rgb-images" / name / f"{t:05d}.jpg"
            ava_path = root / "frames" / name / f"img_{t:05d}.jpg"
            if layout == "ava":
                write_jpeg(ava_path, frame, quality=cfg.jpeg_quality)
                continue
            write_jpeg(act_path, frame, quality=cfg.jpeg_quality)
            if layout == "both":
                _link_or_copy(act_path, ava_path)
        if layout in ("act", "both") and name not in done:
            write_occluder_masks(occluder_mask_path(root, name), video.occluder_masks)
        if name not in done:
            done.add(name)
            _write_partial(partial, cfg, layout, done)
        tubes: dict[int, list[np.ndarray]] = {}
        vis: dict[int, list[np.ndarray]] = {}
        for actor in video.actors:
            tubes.setdefault(actor.label, []).append(actor.tube())
            vis.setdefault(actor.label, []).append(actor.tube_visibility())
        ann.gttubes[name] = tubes
        ann.visibility[name] = vis  # type: ignore[index]
        person_runs = [actor.person_tubes() for actor in video.actors]
        persons.gttubes[name] = {0: [t for runs, _ in person_runs for t in runs]}
        persons.visibility[name] = {0: [v for _, runs in person_runs for v in runs]}  # type: ignore[index]
        ann.nframes[name] = cfg.frames
        ann.resolution[name] = (cfg.height, cfg.width)
        (ann.test_videos if cfg.is_test(index) else ann.train_videos)[0].append(name)
        if layout in ("ava", "both"):
            rows = ava_rows["val" if cfg.is_test(index) else "train"]
            vis_rows = ava_visibility["val" if cfg.is_test(index) else "train"]
            for second in ava_keyframe_seconds(cfg):
                frame_no = second * cfg.fps + 1
                for actor, names in zip(video.actors, keyframe_labels(video, frame_no, fps=cfg.fps)):
                    x1, y1, x2, y2 = actor.boxes[frame_no - 1]
                    if np.isnan(x1):
                        continue
                    # inclusive pixel extent -> continuous normalized box
                    norm = (x1 / cfg.width, y1 / cfg.height, (x2 + 1) / cfg.width, (y2 + 1) / cfg.height)
                    box = ",".join(f"{v:.4f}" for v in norm)
                    for label_name in sorted(names, key=ava_names.index):
                        rows.append(f"{name},{second:04d},{box},{ava_names.index(label_name) + 1},{actor.person_id}")
                    vis_rows.append(f"{name},{second:04d},{actor.person_id},{actor.visibility[frame_no - 1]:.4f}")
    if layout in ("act", "both"):
        _write_act(ann, root / f"{cfg.name}-GT.pkl", visibility=root / f"{cfg.name}-visibility.pkl")
        _write_act(persons, root / PERSONS_FILE.format(name=cfg.name))
    if layout in ("ava", "both"):
        _write_ava(ava_rows, ava_visibility, ava_names, root / "annotations", cfg.name)
    marker.write_text(json.dumps({"config": cfg.to_json(), "layout": layout}, indent=1, sort_keys=True) + "\n")
    partial.unlink()
    return ann


def _partial_settings(partial: Path) -> dict | None:
    """The settings and finished videos of an interrupted rendering (``synth.partial.json``), None if absent."""
    if not partial.is_file():
        return None
    try:
        saved = json.loads(partial.read_text())
    except json.JSONDecodeError:
        return None
    return saved if isinstance(saved, dict) else None


def _partial_done(partial: Path, cfg: SynthConfig, layout: str) -> set[str]:
    """Videos completely written by an interrupted rendering of the same ``cfg`` and ``layout`` (else none)."""
    saved = _partial_settings(partial)
    if saved is None or saved.get("config") != cfg.to_json() or saved.get("layout") != layout:
        return set()
    return {str(v) for v in saved.get("done", [])}


def _write_partial(partial: Path, cfg: SynthConfig, layout: str, done: set[str]) -> None:
    tmp = partial.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": cfg.to_json(), "layout": layout, "done": sorted(done)}, sort_keys=True) + "\n")
    os.replace(tmp, partial)  # atomic: a kill never leaves a half-written list


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # e.g. a file system without hard links
        shutil.copyfile(src, dst)


def _write_act(ann: TubeAnnotations, path: Path, *, visibility: Path | None = None) -> None:
    """Write ``ann`` as an ACT pickle at ``path`` (plus a ``visibility`` key) and, if given, its visibility alone
    (``<name>-visibility.pkl``)."""
    gt = {
        "labels": list(ann.labels),
        "gttubes": ann.gttubes,
        "nframes": ann.nframes,
        "train_videos": ann.train_videos,
        "test_videos": ann.test_videos,
        "resolution": ann.resolution,
        "visibility": ann.visibility,
    }
    with open(path, "wb") as fh:
        pickle.dump(gt, fh, protocol=2)
    if visibility is not None:
        with open(visibility, "wb") as fh:
            pickle.dump(ann.visibility, fh, protocol=2)


def _write_ava(rows: dict[str, list[str]], visibility: dict[str, list[str]], names: list[str], folder: Path,
               name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        (folder / f"{name}_{split}.csv").write_text("".join(r + "\n" for r in split_rows))
        (folder / f"{name}_{split}_visibility.csv").write_text("".join(r + "\n" for r in visibility[split]))
        (folder / f"{name}_{split}_excluded_timestamps.csv").write_text("")
    (folder / f"{name}_action_list.pbtxt").write_text(
        "".join(f'item {{\n  name: "{n}"\n  id: {i}\n}}\n' for i, n in enumerate(names, start=1)))


def is_complete(cfg: SynthConfig, out_dir: str | Path, *, layout: str = "act") -> bool:
    """Whether ``out_dir`` holds a complete rendering of ``cfg`` in ``layout`` (its ``synth.json`` matches)."""
    marker = Path(out_dir) / MARKER
    if not marker.is_file():
        return False
    try:
        saved = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    return saved == {"config": cfg.to_json(), "layout": layout}


def is_interrupted(cfg: SynthConfig, out_dir: str | Path, *, layout: str = "act") -> bool:
    """Whether ``out_dir`` holds an interrupted rendering of ``cfg`` in ``layout``, which :func:`render_dataset`
    resumes (the videos written completely are not written again; the result equals an uninterrupted run)."""
    root = Path(out_dir)
    saved = _partial_settings(root / PARTIAL_MARKER)
    return (not (root / MARKER).is_file() and saved is not None
            and saved.get("config") == cfg.to_json() and saved.get("layout") == layout)


# ----------------------------------------------------------------------------------------------------------------
# A data set named by a training config: use what is on disk, render only into an empty folder
# ----------------------------------------------------------------------------------------------------------------

# data.options keys that describe a synthetic data set (``stad synth``'s options): what to render into an empty
# folder, and what a data set already on disk must have when the config sets them. ``synth_occlusion`` is
# ``stad synth --occlusion`` (``occlusion`` is the occlusion *augmentation* rate of the training transform).
SYNTH_OPTIONS = ("preset", "seed", "videos", "frames", "size", "height", "width", "synth_occlusion", "classes")


def requested_settings(options: dict) -> dict[str, object]:
    """The :class:`SynthConfig` fields that ``options`` (a config's ``data.options``) sets explicitly.

    ``size`` is ``stad synth --size``: the height, with the width 4/3 of it; ``synth_occlusion`` is ``--occlusion``
    (the field ``occlusion``). ``preset`` is compared with the preset
    a data set was rendered from. Keys outside :data:`SYNTH_OPTIONS` are ignored (they are not about the data set).
    """
    out: dict[str, object] = {}
    for key in SYNTH_OPTIONS:
        if key not in options:
            continue
        value = options[key]
        if key == "size":
            out["height"], out["width"] = int(value), int(round(int(value) * 4 / 3))
        elif key == "classes":
            names = [c.strip() for c in value.split(",")] if isinstance(value, str) else list(value)
            out["classes"] = [c for c in CLASS_NAMES if c in names] + [c for c in names if c not in CLASS_NAMES]
        elif key == "synth_occlusion":
            out["occlusion"] = float(value)
        elif key == "preset":
            out[key] = str(value)
        else:
            out[key] = int(value)
    return out


def config_from_options(options: dict) -> SynthConfig:
    """The data set a config asks for: ``options["preset"]`` (default ``small``) with the other
    :data:`SYNTH_OPTIONS` as overrides (e.g. ``{"preset": "small", "videos": 240, "frames": 91}``)."""
    settings = requested_settings(options)
    preset = str(settings.pop("preset", "small"))
    if "classes" in settings:
        settings["classes"] = tuple(settings["classes"])  # type: ignore[arg-type]
    return SynthConfig.preset(preset, **settings)


def _read_marker(path: Path) -> dict:
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict) or "layout" not in saved:
            raise ValueError("expected {'config': {...}, 'layout': ...}")
    except (OSError, ValueError) as err:
        raise StadError(f"{path}: cannot read the synthetic data set's settings ({err})") from None
    return saved


def _layout_has(saved_layout: str, layout: str) -> bool:
    return saved_layout == layout or saved_layout == "both"


@dataclass(frozen=True)
class DatasetPlan:
    """What :func:`plan_dataset` found in a data set folder.

    Attributes:
        action: ``use`` (a complete data set, read as it is), ``render`` (empty or missing folder) or
            ``resume`` (an interrupted rendering of the same settings, finished by :func:`render_dataset`).
        config: the settings on disk (``use``) or to render.
        layout: the layout on disk or to render.
    """

    action: str
    config: SynthConfig | None
    layout: str


def plan_dataset(root: str | Path, options: dict, *, layout: str = "act") -> DatasetPlan:
    """Decide what to do with the synthetic data set folder ``root`` that a config names. Reads, never writes.

    * ``root/synth.json`` present: the data set is used as it is, whatever ``options`` would render; only the
      settings that ``options`` sets explicitly (:func:`requested_settings`) must match it, and it must hold
      ``layout`` (``both`` holds either).
    * ``root/synth.partial.json`` present: a rendering was interrupted; it is resumed when its settings are
      those of ``options`` and ``layout``.
    * ``root`` missing or empty: it is rendered from ``options`` (:func:`config_from_options`).

    Raises:
        StadError: a mismatch (naming the setting, the value asked for and the value on disk), a data set
            without ``layout``, an interrupted rendering of other settings, or a folder that holds other files.
    """
    root = Path(root)
    if (root / MARKER).is_file():
        saved = _read_marker(root / MARKER)
        on_disk = saved["config"]
        for key, value in requested_settings(options).items():
            have = on_disk.get(key)
            if have != value:
                raise StadError(
                    f"config asks for the synthetic data set setting {key}={value!r} (data.options) but {root} holds "
                    f"a data set with {key}={have!r} ({root / MARKER}); drop the key from data.options to use it as "
                    f"it is, point data.root at another folder, or re-render it with `stad synth ... --overwrite`"
                )
        if not _layout_has(saved["layout"], layout):
            raise StadError(
                f"{root} holds the synthetic data set in the {saved['layout']!r} layout, this model needs the "
                f"{layout!r} layout; render it with `stad synth --layout both --out {root} --overwrite` (same options)"
            )
        try:
            config = SynthConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in on_disk.items()})
        except (TypeError, StadError):
            config = None  # written by another stad version: used as it is, its settings only reported
        return DatasetPlan("use", config, saved["layout"])
    wanted = config_from_options(options)
    _check_layout(wanted, layout)
    if is_interrupted(wanted, root, layout=layout):
        return DatasetPlan("resume", wanted, layout)
    if (root / PARTIAL_MARKER).is_file():
        saved = _read_marker(root / PARTIAL_MARKER)
        theirs, ours = saved["config"], {**wanted.to_json(), "layout": layout}
        theirs = {**theirs, "layout": saved["layout"]}
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise StadError(
            f"{root} holds an interrupted rendering of other settings ("
            + ", ".join(f"{k}={theirs.get(k)!r}" for k in diff) + f" in {root / PARTIAL_MARKER}; the config asks for "
            + ", ".join(f"{k}={ours.get(k)!r}" for k in diff)
            + "); finish it with the same options or replace it with `stad synth ... --overwrite`"
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise StadError(
            f"{root} is not empty and holds no synthetic data set ({MARKER} missing); stad renders only into an "
            f"empty folder: point data.root at a new folder, or render into this one with `stad synth --out {root} --overwrite`"
        )
    return DatasetPlan("render", wanted, layout)


# ----------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class DatasetSummary:
    """Statistics of a ground truth (any :class:`TubeAnnotations`).

    Attributes:
        videos, frames: totals; train_videos, test_videos: sizes of split 1.
        tubes_per_label: label name -> number of tubes; mean_tube_length: frames per tube.
        visibility_bands: band name -> number of boxes (empty when the ground truth has no visibility).
    """

    videos: int
    frames: int
    train_videos: int
    test_videos: int
    tubes_per_label: dict[str, int]
    mean_tube_length: float
    visibility_bands: dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        lines = [f"videos: {self.videos} ({self.train_videos} train, {self.test_videos} test), frames: {self.frames}",
                 f"tubes: {sum(self.tubes_per_label.values())}, mean tube length: {self.mean_tube_length:.1f} frames",
                 "tubes per class:"]
        lines += [f"  {name:<10} {count:>6}" for name, count in self.tubes_per_label.items()]
        if self.visibility_bands:
            total = max(1, sum(self.visibility_bands.values()))
            lines.append("box visibility:")
            lines += [f"  {band:<30} {n:>7} ({100.0 * n / total:5.1f}%)" for band, n in self.visibility_bands.items()]
        return "\n".join(lines)


def summarize(ann: TubeAnnotations) -> DatasetSummary:
    """Count videos, frames, tubes per label, mean tube length and (if present) boxes per visibility band."""
    counts = {name: 0 for name in ann.labels}
    lengths: list[int] = []
    for tubes in ann.gttubes.values():
        for label, tubes_of_label in tubes.items():
            counts[ann.labels[label]] += len(tubes_of_label)
            lengths += [len(tube) for tube in tubes_of_label]
    bands: dict[str, int] = {}
    if ann.visibility:
        values = np.concatenate([v for per_video in ann.visibility.values() for per_label in per_video.values()
                                 for v in per_label] or [np.zeros(0)])
        bands = {name: int(np.count_nonzero((values >= lo) & (values < hi))) for name, lo, hi in VISIBILITY_BANDS}
    return DatasetSummary(
        videos=len(ann.nframes), frames=int(sum(ann.nframes.values())),
        train_videos=len(ann.train_videos[0]) if ann.train_videos else 0,
        test_videos=len(ann.test_videos[0]) if ann.test_videos else 0,
        tubes_per_label=counts, mean_tube_length=float(np.mean(lengths)) if lengths else 0.0,
        visibility_bands=bands,
    )


def load_annotations(root: str | Path, *, persons: bool = False) -> TubeAnnotations:
    """Read the ACT ground truth (with visibility) of a synthetic data set written by :func:`render_dataset`.

    With ``persons``, the class-agnostic ground truth ``<name>-persons.pkl`` instead: one class ``person``,
    every actor on every frame it is in (idle or acting), for training a person detector (``stad proposals``).
    ``stad.data.act.load_act`` reads the same ``<name>-GT.pkl`` for any ACT data set.
    """
    from stad.data.safe_pickle import safe_load_pickle

    root = Path(root)
    marker = root / MARKER
    if not marker.is_file():
        raise FileNotFoundError(f"not a complete synthetic data set (no {marker})")
    try:
        saved = json.loads(marker.read_text())
        name, preset = saved["config"]["name"], saved["config"]["preset"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise StadError(f"{marker}: cannot read the configuration ({err})") from err
    path = root / (PERSONS_FILE.format(name=name) if persons else f"{name}-GT.pkl")
    if not path.is_file():
        if persons and (root / f"{name}-GT.pkl").is_file():
            raise FileNotFoundError(f"person ground truth not found: {path} (rendered by an older stad; render the data "
                                    f"set again with `stad synth ... --overwrite`)")
        raise FileNotFoundError(f"ground truth not found: {path} (was the data set written with --layout ava?)")
    gt = safe_load_pickle(path, what="synthetic ground truth")
    return TubeAnnotations(labels=list(gt["labels"]), gttubes=gt["gttubes"], nframes=gt["nframes"],
                           resolution=gt["resolution"], train_videos=gt["train_videos"],
                           test_videos=gt["test_videos"], visibility=gt.get("visibility"),
                           name=f"synth-{preset}{'-persons' if persons else ''}")


def output_paths(cfg: SynthConfig, out_dir: str | Path) -> list[Path]:
    """The files and folders :func:`render_dataset` writes directly under ``out_dir`` (any layout)."""
    root = Path(out_dir)
    return [root / "rgb-images", root / "frames", root / "annotations", root / OCCLUDER_MASK_DIR, root / f"{cfg.name}-GT.pkl",
            root / f"{cfg.name}-visibility.pkl", root / PERSONS_FILE.format(name=cfg.name), root / MARKER,
            root / PARTIAL_MARKER]
