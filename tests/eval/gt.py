"""Ground truth for the metric tests: ACT-style tubes of hand-made videos, all in the test split."""

from __future__ import annotations

import numpy as np

from stad.structures import TubeAnnotations


def make_gt(tubes: dict[str, dict[int, list[np.ndarray]]], *, labels, nframes: int) -> TubeAnnotations:
    """``tubes``: video -> label -> list of ``(L, 5)`` ``[frame, x1, y1, x2, y2]``; every video is a test video."""
    videos = sorted(tubes)
    return TubeAnnotations(
        labels=list(labels),
        gttubes={v: {k: [np.asarray(t, float) for t in ts] for k, ts in tubes[v].items()} for v in videos},
        nframes={v: nframes for v in videos},
        resolution={v: (240, 320) for v in videos},
        train_videos=[[]],
        test_videos=[videos],
    )
