"""Reference pieces shared by the tube tests, written straight from the rules (loops, no vectorization)."""

from __future__ import annotations


def iou_plus_one(a, b) -> float:
    """+1 IoU of two boxes ``x1, y1, x2, y2``, same operation order as stad.boxes."""
    iw = max(min(a[2], b[2]) + 1.0 - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) + 1.0 - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0) + (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0) - inter
    return inter / union if union > 0 else 0.0
