"""Numpy box operations shared by ``stad.tubes`` and ``stad.eval``.

All boxes are ``(..., 4)`` arrays ``x1, y1, x2, y2``. Two area conventions exist and are never mixed
silently (PROTOCOLS.md):

* ``plus_one=True``: the ACT convention for pixel boxes, area ``(x2 - x1 + 1) * (y2 - y1 + 1)``;
* ``plus_one=False``: the continuous convention (AVA, torchvision), area ``(x2 - x1) * (y2 - y1)``.
"""

from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray, *, plus_one: bool) -> np.ndarray:
    """Area of ``(..., 4)`` boxes ``x1, y1, x2, y2``; returns ``(...)``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    one = 1.0 if plus_one else 0.0
    return (boxes[..., 2] - boxes[..., 0] + one) * (boxes[..., 3] - boxes[..., 1] + one)


def box_iou(a: np.ndarray, b: np.ndarray, *, plus_one: bool) -> np.ndarray:
    """Pairwise IoU of ``a`` ``(N, 4)`` and ``b`` ``(M, 4)`` boxes ``x1, y1, x2, y2``; returns ``(N, M)``.

    Empty inputs give an empty ``(N, M)`` array.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if plus_one else 0.0
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) + one - np.maximum(a[:, None, 0], b[None, :, 0])  # [N, M]
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) + one - np.maximum(a[:, None, 1], b[None, :, 1])  # [N, M]
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = box_area(a, plus_one=plus_one)[:, None] + box_area(b, plus_one=plus_one)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def box_iou_paired(a: np.ndarray, b: np.ndarray, *, plus_one: bool) -> np.ndarray:
    """Element-wise IoU of broadcastable ``(..., 4)`` boxes ``a`` and ``b``; returns ``(...)``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    one = 1.0 if plus_one else 0.0
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) + one - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) + one - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = box_area(a, plus_one=plus_one) + box_area(b, plus_one=plus_one) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` ``[x, y, w, h]`` to ``x1, y1, x2, y2`` (``x2 = x + w``), computed in float64.

    Cast first: real annotation files store boxes as uint8/uint16, where ``x + w`` wraps around.
    """
    boxes = np.asarray(boxes).astype(np.float64)
    out = boxes.copy()
    out[..., 2] = boxes[..., 0] + boxes[..., 2]
    out[..., 3] = boxes[..., 1] + boxes[..., 3]
    return out

