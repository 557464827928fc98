"""Decoding MOC outputs into tubelets: peaks, top-N, movement, per-frame sizes, mapping to the video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stad.models.decode import decode_moc, heatmap_peaks, to_tubelets


def _hand_made(K: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: N803
    C, h, w = 2, 10, 12  # noqa: N806
    heat = torch.full((1, C, h, w), -10.0)
    heat[0, 1, 3, 5] = 3.0  # the tubelet: class 1 at (x=5, y=3)
    heat[0, 1, 3, 6] = 2.0  # a neighbour: suppressed by the 3x3 peak rule
    heat[0, 0, 7, 1] = 0.0  # a weaker peak of class 0 at (1, 7)
    movement = torch.zeros(1, 2 * K, h, w)
    movement[0, :, 3, 5] = torch.tensor([-2.5, 1.5, 1.25, 1.5, 2.0, -1.0])
    wh = torch.full((1, 2 * K, h, w), 99.0)  # wrong sizes everywhere except where each frame's size must be read
    wh[0, 0:2, 4, 2] = torch.tensor([4.0, 6.0])  # frame 0 centre (2.5, 4.5) -> read at (2, 4)
    wh[0, 2:4, 3, 5] = torch.tensor([5.0, 8.0])  # middle frame centre (6.25, 4.5): read at the peak (5, 3) itself
    wh[0, 4:6, 2, 7] = torch.tensor([6.0, 2.0])  # frame 2 centre (7, 2) -> read at (7, 2)
    return heat, movement, wh


def test_decode_recovers_hand_made_tubelet() -> None:
    heat, movement, wh = _hand_made()
    out = decode_moc(torch.sigmoid(heat), movement, wh, top_n=2)
    assert out.scores.shape == (1, 2) and out.boxes.shape == (1, 2, 3, 4)
    assert out.labels[0].tolist() == [1, 0]
    assert float(out.scores[0, 0]) == pytest.approx(float(torch.sigmoid(torch.tensor(3.0))))
    assert float(out.scores[0, 1]) == pytest.approx(0.5)
    want = [[2.5 - 2, 4.5 - 3, 2.5 + 2, 4.5 + 3], [6.25 - 2.5, 4.5 - 4, 6.25 + 2.5, 4.5 + 4], [7 - 3, 2 - 1, 7 + 3, 2 + 1]]
    np.testing.assert_allclose(out.boxes[0, 0].numpy(), want, atol=1e-6)
    assert out.grid_size == (10, 12)


def test_peaks_keep_only_local_maxima_and_top_n_is_clipped() -> None:
    heat = torch.tensor([[[[0.1, 0.9, 0.8], [0.2, 0.3, 0.1]]]])
    assert heatmap_peaks(heat).flatten().tolist() == pytest.approx([0, 0.9, 0, 0, 0, 0])
    out = decode_moc(torch.full((2, 1, 2, 3), 0.5), torch.zeros(2, 2, 2, 3), torch.ones(2, 2, 2, 3), top_n=100)
    assert out.scores.shape == (2, 6)


def test_to_tubelets_maps_to_original_pixels_and_clips() -> None:
    heat, movement, wh = _hand_made()
    out = decode_moc(torch.sigmoid(heat), movement, wh, top_n=3)
    tubelets = to_tubelets(out, starts=[17], original_sizes=[(100, 240)])
    assert len(tubelets) == 1
    t = tubelets[0]
    assert t.K == 3 and len(t) == 3
    assert t.start.tolist() == [17, 17, 17] and t.label[0] == 1
    # grid 10x12 -> video 100x240: x * 20, y * 10, clipped to [0, 239] x [0, 99]
    np.testing.assert_allclose(t.boxes[0, 1], [3.75 * 20, 0.5 * 10, 8.75 * 20, 8.5 * 10], atol=1e-5)
    np.testing.assert_allclose(t.boxes[1, 1], [0, 0, 239, 99])  # the class-0 peak reads size 99: clipped
    raw = to_tubelets(out, starts=[1], original_sizes=[None], stride=4)[0]
    np.testing.assert_allclose(raw.boxes[0, 0], np.array([0.5, 1.5, 4.5, 7.5]) * 4, atol=1e-5)
    assert t.score.dtype == np.float64 and t.label.dtype == np.int64
