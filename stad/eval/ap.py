"""Precision/recall curves and average precision, in the exact variants of the published protocols.

* :func:`act_ap` -- the ACT release (Kalogeiton et al., ICCV 2017; copied by MOC-Detector's
  ``ACT_utils.pr_to_ap``): the raw curve starts at (recall 0, precision 1), one point per ranked
  detection, precision and recall stored in float32, AP = trapezoidal area
  ``sum (r_i - r_{i-1}) * (p_i + p_{i-1}) * 0.5`` summed in float32. No envelope.
* :func:`voc_ap` -- PASCAL VOC 2010+ "all points": sentinels (0, 0) and (1, 0), precision made
  non-increasing from the right, area summed where recall changes (MultiSports, YOWO, AVA).
* :func:`voc07_ap` -- PASCAL VOC 2007 11-point interpolated AP.

Naming: ``N`` ranked detections; ``tp`` is a bool ``(N,)`` array in rank order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PRCurve:
    """A precision/recall curve, one point per ranked detection (``N`` points).

    Attributes:
        precision: ``(N,)`` precision after each detection.
        recall: ``(N,)`` recall after each detection.
        scores: ``(N,)`` detection scores in rank order (descending).
    """

    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray


def act_curve(tp_sorted: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """ACT precision/recall curve with its leading point (recall 0, precision 1), in float32.

    The reference fills a float32 ``(N + 1, 2)`` array with ``float(tp) / float(tp + fp)`` and
    ``float(tp) / float(tp + fn)`` computed in float64; the same values are produced here.

    Args:
        tp_sorted: ``(N,)`` bool, whether the detection of rank ``i`` is a true positive.
        n_gt: number of ground-truth instances. With ``n_gt == 0`` the reference divides by zero;
            here recall is 0 and (if there are detections) precision is 0 after the first point,
            so the AP is 0, as in the ACT fork that guards the division.

    Returns:
        ``precision, recall``: two ``(N + 1,)`` float32 arrays.
    """
    tp_sorted = np.asarray(tp_sorted, dtype=bool)
    n = tp_sorted.shape[0]
    tp = np.cumsum(tp_sorted, dtype=np.int64)  # [N]
    precision = np.empty(n + 1, np.float32)
    recall = np.empty(n + 1, np.float32)
    precision[0], recall[0] = 1.0, 0.0
    if n_gt > 0:
        precision[1:] = tp / np.arange(1, n + 1, dtype=np.float64)
        recall[1:] = tp / float(n_gt)
    else:
        precision[1:] = 0.0
        recall[1:] = 0.0
    return precision, recall


def act_ap_from_curve(precision: np.ndarray, recall: np.ndarray) -> float:
    """Trapezoidal AP of a raw curve, with the reference's float32 arithmetic (``pr_to_ap``)."""
    precision = np.asarray(precision, dtype=np.float32)
    recall = np.asarray(recall, dtype=np.float32)
    prdif = recall[1:] - recall[:-1]
    prsum = precision[1:] + precision[:-1]
    return float(np.sum(prdif * prsum * np.float32(0.5)))


def act_ap(tp_sorted: np.ndarray, n_gt: int) -> float:
    """ACT average precision of ranked detections (trapezoid on the raw float32 curve).

    Args:
        tp_sorted: ``(N,)`` bool, true positive flags in descending-score order.
        n_gt: number of ground-truth instances of the class.

    Returns:
        AP as a fraction in [0, 1] (0.0 with no detections).
    """
    precision, recall = act_curve(tp_sorted, n_gt)
    return act_ap_from_curve(precision, recall)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2010+ all-point AP with the precision envelope (float64).

    Args:
        recall: ``(N,)`` recall after each ranked detection (no leading point).
        precision: ``(N,)`` precision after each ranked detection.

    Returns:
        AP in [0, 1]; 0.0 for empty input.
    """
    r = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    p = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # envelope: non-increasing from the right
    changed = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[changed] - r[changed - 1]) * p[changed]))


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2007 11-point interpolated AP: mean over t in {0, 0.1, ..., 1} of max precision at recall >= t."""
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    total = 0.0
    for t in np.linspace(0.0, 1.0, 11):
        above = precision[recall >= t]
        total += float(above.max()) if above.size else 0.0
    return total / 11.0


def voc_curve(tp_sorted: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """VOC precision/recall after each ranked detection, float64, no leading point.

    Returns:
        ``precision, recall``: two ``(N,)`` float64 arrays (recall is 0 when ``n_gt == 0``).
    """
    tp_sorted = np.asarray(tp_sorted, dtype=bool)
    tp = np.cumsum(tp_sorted, dtype=np.int64)
    precision = tp / np.arange(1, tp.shape[0] + 1, dtype=np.float64)
    recall = tp / float(n_gt) if n_gt > 0 else np.zeros(tp.shape[0])
    return precision, recall
