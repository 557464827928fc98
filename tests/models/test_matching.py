"""MOC target assignment: Gaussian heat-maps, indices, movement and wh targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stad.errors import StadError
from stad.models.matching import build_moc_targets, draw_gaussians, gaussian_radius


def _radius_reference(h: float, w: float, overlap: float = 0.7) -> float:
    """The three quadratic roots exactly as written in MOC-Detector's gaussian_hm.py (a reference, float64)."""
    b1 = h + w
    c1 = w * h * (1 - overlap) / (1 + overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - overlap) * w * h
    r2 = (b2 + math.sqrt(b2**2 - 4 * 4 * c2)) / 2
    a3 = 4 * overlap
    b3 = -2 * overlap * (h + w)
    c3 = (overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _draw_reference(hm: np.ndarray, cx: int, cy: int, r: int) -> None:
    """Straightforward loop version of the published draw rule (truncated Gaussian, maximum)."""
    sigma = (2 * r + 1) / 6
    h, w = hm.shape
    for y in range(max(0, cy - r), min(h, cy + r + 1)):
        for x in range(max(0, cx - r), min(w, cx + r + 1)):
            g = math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma))
            if g < np.finfo(np.float64).eps:
                g = 0.0
            hm[y, x] = max(hm[y, x], g)


def test_gaussian_radius_matches_reference_formula() -> None:
    for h, w in [(8, 5), (30, 12), (1, 1), (0, 4), (64, 64)]:
        got = float(gaussian_radius(torch.tensor(float(h)), torch.tensor(float(w))))
        assert got == pytest.approx(_radius_reference(h, w), rel=1e-12)
    # pinned by hand: a 20x10 box, case 3: (-42 + sqrt(42^2 + 4 * 2.8 * 60)) / 2 = 3.6779
    assert float(gaussian_radius(torch.tensor(20.0), torch.tensor(10.0))) == pytest.approx(3.67794, abs=1e-4)


def test_draw_gaussians_equals_loop_reference_near_borders() -> None:
    centers = torch.tensor([[0, 0], [6, 3], [7, 4], [2, 5]])
    radii = torch.tensor([2, 3, 1, 0])
    channels = torch.tensor([0, 1, 1, 0])
    got = draw_gaussians(centers=centers, radii=radii, channels=channels, num_channels=2, size=(6, 8)).numpy()
    want = np.zeros((2, 6, 8))
    for (cx, cy), r, c in zip(centers.tolist(), radii.tolist(), channels.tolist()):
        _draw_reference(want[c], cx, cy, r)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got[0, 0, 0] == 1.0 and got[1, 3, 6] == 1.0 and got[0, 5, 2] == 1.0


def test_single_actor_targets() -> None:
    # K = 3, input 64x64 -> grid 16x16 (scale 1/4). Middle frame box (10, 10, 30, 40) -> centre (5, 6.25) on the grid.
    tube = torch.tensor([[2.0, 6.0, 18.0, 30.0], [10.0, 10.0, 30.0, 40.0], [20.0, 16.0, 44.0, 48.0]])
    t = build_moc_targets(
        boxes=tube[None, None], labels=torch.tensor([[1]]), valid=torch.tensor([[True]]),
        num_classes=3, input_size=(64, 64), output_size=(16, 16),
    )
    assert t.heatmap.shape == (1, 3, 16, 16)
    assert t.heatmap[0, 1, 6, 5] == 1.0
    assert int((t.heatmap == 1).sum()) == 1
    assert t.heatmap[0, 0].abs().sum() == 0 and t.heatmap[0, 2].abs().sum() == 0
    r = int(_radius_reference(math.ceil(7.5), math.ceil(5.0)))
    sigma = (2 * r + 1) / 6
    assert float(t.heatmap[0, 1, 6, 6]) == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert t.index.tolist() == [[6 * 16 + 5]]
    # frame centres on the grid: (2.5, 4.5), (5, 6.25), (8, 8) -> integer (2, 4), (5, 6), (8, 8)
    assert t.index_all.tolist() == [[[4 * 16 + 2, 6 * 16 + 5, 8 * 16 + 8]]]
    np.testing.assert_allclose(t.movement[0, 0].numpy(), [-2.5, -1.5, 0.0, 0.25, 3.0, 2.0])
    np.testing.assert_allclose(t.wh[0, 0].numpy(), [4.0, 6.0, 5.0, 7.5, 6.0, 8.0])
    assert t.mask.tolist() == [[True]]


def test_empty_targets_and_padding() -> None:
    boxes = torch.zeros(2, 3, 5, 4)
    t = build_moc_targets(
        boxes=boxes, labels=torch.zeros(2, 3, dtype=torch.long), valid=torch.zeros(2, 3, dtype=torch.bool),
        num_classes=4, input_size=(32, 48), output_size=(8, 12),
    )
    assert t.heatmap.shape == (2, 4, 8, 12) and t.heatmap.abs().sum() == 0
    assert t.index.shape == (2, 3) and t.index_all.shape == (2, 3, 5)
    assert t.movement.shape == (2, 3, 10) and t.wh.abs().sum() == 0
    assert not t.mask.any()
    none = build_moc_targets(  # a batch without a single actor slot (N = 0)
        boxes=torch.zeros(2, 0, 5, 4), labels=torch.zeros(2, 0, dtype=torch.long), valid=torch.zeros(2, 0, dtype=torch.bool),
        num_classes=4, input_size=(32, 48), output_size=(8, 12),
    )
    assert none.heatmap.abs().sum() == 0 and none.index.shape == (2, 0) and none.movement.shape == (2, 0, 10)


def test_batched_equals_per_sample_and_overlaps_take_max() -> None:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 3, 1, 2, generator=g) * 30
    wh = 8 + torch.rand(2, 3, 1, 2, generator=g) * 20
    boxes = torch.cat((xy, xy + wh), dim=-1).expand(2, 3, 3, 4).clone()
    boxes[0, 1] = boxes[0, 0] + 2  # two close actors of the same class: overlapping peaks
    labels = torch.tensor([[0, 0, 2], [1, 2, 0]])
    valid = torch.tensor([[True, True, True], [True, False, True]])
    kw = dict(num_classes=3, input_size=(64, 64), output_size=(16, 16))
    both = build_moc_targets(boxes=boxes, labels=labels, valid=valid, **kw)
    for b in range(2):
        one = build_moc_targets(boxes=boxes[b : b + 1], labels=labels[b : b + 1], valid=valid[b : b + 1], **kw)
        for name in ("heatmap", "index", "index_all", "movement", "wh", "mask"):
            assert torch.equal(getattr(both, name)[b : b + 1], getattr(one, name)), name
    singles = [
        build_moc_targets(boxes=boxes[:1, i : i + 1], labels=labels[:1, i : i + 1], valid=valid[:1, i : i + 1], **kw).heatmap
        for i in range(2)
    ]
    assert torch.equal(both.heatmap[0, 0], torch.maximum(singles[0][0, 0], singles[1][0, 0]))


@pytest.mark.parametrize(
    ("box", "label", "match"),
    [
        ([10.0, 10.0, 5.0, 20.0], 0, "x2 < x1"),
        ([10.0, 10.0, 20.0, 20.0], 3, "label 3"),
        ([70.0, 10.0, 90.0, 20.0], 0, "outside"),
    ],
)
def test_bad_input_is_reported(box: list[float], label: int, match: str) -> None:
    with pytest.raises(StadError, match=match):
        build_moc_targets(
            boxes=torch.tensor(box).expand(1, 1, 3, 4), labels=torch.tensor([[label]]), valid=torch.tensor([[True]]),
            num_classes=3, input_size=(64, 64), output_size=(16, 16),
        )
