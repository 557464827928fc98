"""Person proposals at AVA keyframes from a stad frame detector, for keyframe methods that need person boxes.

FBIL / ACAR-Net (and mmaction2's AVA detectors) classify the actions of person boxes from an off-the-shelf detector
(the FAIR / LFB Faster R-CNN boxes). ``stad proposals`` makes the whole pipeline work without those files: a
key-point detector (:class:`stad.models.keypoint.KeypointDetector`) trained class-agnostically in stad
(``data.options.person_boxes: true``) is run on every keyframe (with the frame ``gap`` frames earlier for its
temporal cue), its boxes of all classes are merged by class-agnostic NMS, and the best are written as
``(video, second) -> (N, 5)`` ``x1, y1, x2, y2, score`` normalised to [0, 1] (the continuous box of stad's inclusive
pixel box: ``(x1 / W, y1 / H, (x2 + 1) / W, (y2 + 1) / H)``, as ``stad synth`` writes AVA boxes).

Flow::

    keyframes (a data set's frame layout: every second with frames; or a video / frame folder: its seconds)
        ──frame f and frame max(1, f - gap)──▶ detector ──▶ boxes of every class
        ──class-agnostic NMS, score >= min_score, top_k──▶ proposals ──▶ mmaction2 pickle or CSV
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stad.errors import StadError


@dataclass(frozen=True)
class ProposalConfig:
    """How proposals are made from a frame detector's boxes.

    Attributes:
        input_size: network input ``(H, W)`` (the detector's ``data.input_size``).
        min_score: keep boxes scoring at least this (default 0.1).
        top_k: at most this many boxes per keyframe (default 20).
        nms_iou: class-agnostic NMS threshold on continuous IoU (default 0.5).
        batch: keyframes per forward pass (default 8).
    """

    input_size: tuple[int, int]
    min_score: float = 0.1
    top_k: int = 20
    nms_iou: float = 0.5
    batch: int = 8


def _class_agnostic(boxes: np.ndarray, scores: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    """``(N, 4)`` pixel boxes of all classes -> the kept rows ``(M, 5)`` (box, score), best first."""
    from torchvision.ops import nms

    keep = scores >= cfg.min_score
    boxes, scores = boxes[keep], scores[keep]
    if len(boxes) == 0:
        return np.zeros((0, 5))
    kept = nms(torch.as_tensor(boxes, dtype=torch.float64), torch.as_tensor(scores, dtype=torch.float64), cfg.nms_iou)
    kept = kept.numpy()[: cfg.top_k]
    return np.column_stack([boxes[kept], scores[kept]])


def _normalise(rows: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    out = rows.copy()
    out[:, :4] = (rows[:, :4] + np.array([0.0, 0.0, 1.0, 1.0])) / np.array([w, h, w, h])
    return np.clip(out, 0.0, None)


@torch.inference_mode()
def detect_keyframe_persons(
    model: torch.nn.Module,
    frame_at: Callable[[int], np.ndarray],
    keyframes: Sequence[tuple[int, int]],
    *,
    device: torch.device | str,
    cfg: ProposalConfig,
) -> list[np.ndarray]:
    """Proposals of the keyframes of one video.

    Args:
        model: a frame detector with ``gap`` and ``detect_frames(image, previous, orig_sizes=...)``, in eval mode.
        frame_at: frame number (from 1) -> ``(H0, W0, 3)`` uint8 RGB frame of the video.
        keyframes: ``(second, frame number)`` of each keyframe.
        device: where the model runs.
        cfg: input size, thresholds.

    Returns:
        Per keyframe, ``(M, 5)`` float64 ``x1, y1, x2, y2, score`` normalised to [0, 1].
    """
    from stad.data.datasets import IMAGENET_MEAN, IMAGENET_STD
    from stad.engine.infer import preprocess_frames

    if not hasattr(model, "detect_frames"):
        raise StadError(f"a {type(model).__name__} cannot propose persons: stad proposals needs a frame detector (keypoint)")
    norm = _Preprocess(cfg.input_size, IMAGENET_MEAN, IMAGENET_STD)
    gap = int(model.gap)
    out: list[np.ndarray] = []
    for start in range(0, len(keyframes), cfg.batch):
        chunk = keyframes[start : start + cfg.batch]
        current = [frame_at(frame) for _, frame in chunk]
        earlier = [frame_at(max(1, frame - gap)) for _, frame in chunk]
        sizes = [tuple(int(v) for v in image.shape[:2]) for image in current]
        images = torch.cat([preprocess_frames(image[None], norm) for image in current]).to(device)  # [b, 3, H, W]
        previous = torch.cat([preprocess_frames(image[None], norm) for image in earlier]).to(device)
        for dets, size in zip(model.detect_frames(images, previous, orig_sizes=sizes), sizes):
            out.append(_normalise(_class_agnostic(np.asarray(dets.boxes), np.asarray(dets.scores), cfg), size))
    return out


@dataclass(frozen=True)
class _Preprocess:
    input_size: tuple[int, int]
    mean: Sequence[float]
    std: Sequence[float]


def dataset_proposals(
    model: torch.nn.Module,
    root: str | Path,
    *,
    device: torch.device | str,
    cfg: ProposalConfig,
    layout: str = "auto",
    first: int | None = None,
    last: int | None = None,
    progress: bool = True,
) -> dict[tuple[str, int], np.ndarray]:
    """Proposals of every keyframe (second with frames in ``[first, last]``) of every video of a keyframe data set.

    The videos are the folders under ``root/frames`` (ava and step layouts) or under ``root`` (acar layout).
    """
    from tqdm import tqdm

    from stad.data.frames import read_rgb
    from stad.data.keyframes import list_keyframes, resolve_layout

    root = Path(root)
    parent = root / "frames" if (root / "frames").is_dir() else root
    videos = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    if not videos:
        raise StadError(f"{root}: no video folders (expected {root / 'frames'}/<video>/ or {root}/<video>/)")
    frame_layout = resolve_layout(root, videos, layout)
    proposals: dict[tuple[str, int], np.ndarray] = {}
    for video in tqdm(videos, desc="proposals", unit="video", disable=not progress, leave=False):
        index = frame_layout.index(video)
        seconds = list_keyframes(frame_layout, video, first=first, last=last).tolist()
        keys = [(s, index.keyframe_frame(s)) for s in seconds]
        found = detect_keyframe_persons(model, lambda f: read_rgb(frame_layout.frame_path(video, f, index)), keys,
                                        device=device, cfg=cfg)
        proposals.update({(video, s): rows for (s, _), rows in zip(keys, found)})
    return proposals


def video_proposals(
    model: torch.nn.Module, source: str | Path, *, device: torch.device | str, cfg: ProposalConfig, fps: float | None = None
) -> dict[tuple[str, int], np.ndarray]:
    """Proposals at the first frame of every second of a video file or frame folder (``fps``: its frame rate,
    default the video's, 30 for a folder); the video id is the file or folder name."""
    from stad.data.keyframes import second_index
    from stad.engine.infer import read_source

    frames, source_fps = read_source(source)
    rate = float(fps or (30.0 if Path(source).is_dir() else source_fps))
    name = Path(source).stem if Path(source).is_file() else Path(source).name
    seconds, first_frames, _ = second_index(len(frames), rate)
    keys = list(zip(seconds.tolist(), first_frames.tolist()))
    found = detect_keyframe_persons(model, lambda f: frames[f - 1], keys, device=device, cfg=cfg)
    return {(name, s): rows for (s, _), rows in zip(keys, found)}


def write_proposal_file(path: str | Path, proposals: dict[tuple[str, int], np.ndarray]) -> Path:
    """``.csv``: ``video_id,timestamp,x1,y1,x2,y2,score`` rows; anything else: mmaction2's dense-proposal pickle
    (``{"video_id,%04d": (N, 5)}``)."""
    from stad.data.ava import write_proposals
    from stad.data.keyframes import write_proposals_csv

    path = Path(path)
    if path.suffix.lower() == ".csv":
        write_proposals_csv(path, proposals)
    else:
        write_proposals(path, proposals)
    return path
