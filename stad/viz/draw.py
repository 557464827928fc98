"""Draw boxes, labels and action tubes on RGB frames with OpenCV; colours by identity.

Frames are ``(H, W, 3)`` uint8 **RGB** arrays; boxes are ``x1, y1, x2, y2`` float pixels of that frame (inclusive
pixel extent is drawn as the rectangle through pixels ``x1..x2``). Functions that take a single image draw in place
and return it; functions over videos return new arrays.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def identity_color(identity: int) -> tuple[int, int, int]:
    """A bright RGB colour for an integer identity (golden-ratio hue steps: neighbours differ clearly)."""
    hue = (identity * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_box(image: np.ndarray, box: np.ndarray, *, color: tuple[int, int, int], text: str | None = None,
             thickness: int = 1, font_scale: float = 0.4) -> np.ndarray:
    """Draw one box ``x1, y1, x2, y2`` (float pixels) and an optional label on ``image`` (in place).

    The label sits on a filled strip of the box colour above the box (inside it when there is no room above).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    x1, y1, x2, y2 = (int(round(float(v))) for v in np.asarray(box, dtype=np.float64)[:4])
    cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness, cv2.LINE_8)
    if text:
        (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, 1)
        top = y1 - th - base - 1 if y1 - th - base - 1 >= 0 else y1 + 1
        cv2.rectangle(image, (x1, top), (x1 + tw + 2, top + th + base + 1), color, -1)
        ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        cv2.putText(image, text, (x1 + 1, top + th), _FONT, font_scale, ink, 1, cv2.LINE_AA)
    return image


def draw_boxes(image: np.ndarray, boxes: np.ndarray, *, identities: np.ndarray | None = None,
               texts: list[str] | None = None, thickness: int = 1, font_scale: float = 0.4) -> np.ndarray:
    """Draw ``(N, 4)`` boxes on ``image`` (in place), coloured by ``identities`` ``(N,)`` (default: row index)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if identities is not None and len(identities) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(identities)} identities")
    if texts is not None and len(texts) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(texts)} texts")
    for i, box in enumerate(boxes):
        ident = int(identities[i]) if identities is not None else i
        draw_box(image, box, color=identity_color(ident), text=texts[i] if texts else None, thickness=thickness,
                 font_scale=font_scale)
    return image


@dataclass
class TubeOverlay:
    """A tube to draw on a video.

    Attributes:
        identity: colour identity (e.g. actor or track id).
        boxes: ``(L, 5)`` float ``[frame, x1, y1, x2, y2]`` (frames from 1) in the video's pixels.
        text: label drawn on every box (e.g. the class name).
        frame_texts: optional per-box suffix, ``L`` strings (e.g. the visibility ``"v=0.73"``).
    """

    identity: int
    boxes: np.ndarray
    text: str = ""
    frame_texts: list[str] | None = field(default=None)


def draw_tubes(frames: np.ndarray, tubes: list[TubeOverlay], *, scale: int = 1, trail: int = 8,
               thickness: int = 1, font_scale: float = 0.4) -> np.ndarray:
    """Draw tubes on a video: each frame gets its boxes and labels plus a trail of the box centres.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        tubes: the tubes (frames from 1; boxes in the input's pixels).
        scale: integer upscaling (nearest) before drawing, so that text stays legible on small videos.
        trail: how many previous box centres to connect.
        thickness, font_scale: drawing sizes (after upscaling).

    Returns:
        ``(T, H * scale, W * scale, 3)`` uint8 RGB, a new array.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    out = frames.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else frames.copy()
    T = len(frames)
    for tube in tubes:
        boxes = np.asarray(tube.boxes, dtype=np.float64).reshape(-1, 5)
        if tube.frame_texts is not None and len(tube.frame_texts) != len(boxes):
            raise ValueError(f"tube {tube.identity}: {len(boxes)} boxes but {len(tube.frame_texts)} frame texts")
        color = identity_color(tube.identity)
        # inclusive pixel extent [x1, x2] -> the rectangle around the scaled pixels
        scaled = np.concatenate([boxes[:, 1:3] * scale, (boxes[:, 3:5] + 1) * scale - 1], axis=1)
        centres = ((scaled[:, 0:2] + scaled[:, 2:4]) / 2).round().astype(np.int32)
        for i, frame_no in enumerate(boxes[:, 0].astype(int)):
            if not 1 <= frame_no <= T:
                raise ValueError(f"tube {tube.identity}: frame {frame_no} outside the video's 1..{T}")
            image = out[frame_no - 1]
            text = " ".join(s for s in (tube.text, tube.frame_texts[i] if tube.frame_texts else "") if s)
            draw_box(image, scaled[i], color=color, text=text or None, thickness=thickness, font_scale=font_scale)
            lo = max(0, i - trail)
            if i > lo:
                cv2.polylines(image, [centres[lo:i + 1]], False, color, 1, cv2.LINE_AA)
    return out


def tile_videos(videos: list[np.ndarray], *, columns: int, gap: int = 2) -> np.ndarray:
    """Tile ``(T_i, H, W, 3)`` videos of one size into a grid ``(max T_i, rows*H + gaps, columns*W + gaps, 3)``.

    Shorter videos hold black frames after their end.
    """
    if not videos:
        raise ValueError("no videos to tile")
    shapes = {v.shape[1:] for v in videos}
    if len(shapes) != 1:
        raise ValueError(f"videos to tile must share one frame size, got {sorted(shapes)}")
    H, W, _ = videos[0].shape[1:]
    columns = max(1, min(columns, len(videos)))
    rows = -(-len(videos) // columns)
    T = max(len(v) for v in videos)
    out = np.zeros((T, rows * H + (rows - 1) * gap, columns * W + (columns - 1) * gap, 3), np.uint8)
    for i, video in enumerate(videos):
        r, c = divmod(i, columns)
        out[:len(video), r * (H + gap):r * (H + gap) + H, c * (W + gap):c * (W + gap) + W] = video
    return out


def overlay_heatmaps(frames: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45,
                     colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Blend per-frame heat maps (e.g. STADO's predicted attention masks) over a video.

    Each ``(h, w)`` map is resized (bilinear) to the frame, coloured with an OpenCV colour map (0 blue ... 1 red for
    JET) and blended as ``(1 - alpha) * frame + alpha * colour``. The maps must cover the frame the way the network
    input does (a plain resize of the frame, as at test time).

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        heat: ``(T, h, w)`` float in [0, 1] (values outside are clipped); NaN marks a frame without a map (left as is).
        alpha: weight of the colour (default 0.45).
        colormap: ``cv2.COLORMAP_*`` (default JET).

    Returns:
        ``(T, H, W, 3)`` uint8 RGB, a new array.
    """
    frames = np.asarray(frames)
    heat = np.asarray(heat, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if heat.ndim != 3 or len(heat) != len(frames):
        raise ValueError(f"expected ({len(frames)}, h, w) heat maps for {len(frames)} frames, got {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    H, W = frames.shape[1:3]
    out = frames.copy()
    for t, (frame, mask) in enumerate(zip(frames, heat)):
        if np.isnan(mask).all():
            continue
        resized = cv2.resize(np.nan_to_num(mask, nan=0.0), (W, H), interpolation=cv2.INTER_LINEAR)  # [H, W]
        levels = np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)
        colour = cv2.cvtColor(cv2.applyColorMap(levels, colormap), cv2.COLOR_BGR2RGB)  # [H, W, 3]
        out[t] = cv2.addWeighted(frame, 1.0 - alpha, colour, alpha, 0.0)
    return out
