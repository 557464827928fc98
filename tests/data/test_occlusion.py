"""Occlusion augmentation: moving occluders pasted consistently, visibility and mask targets."""

from __future__ import annotations

import numpy as np
import pytest

from stad.data.transforms import (
    ClipSample,
    Compose,
    Expand,
    HorizontalFlip,
    Occluder,
    PasteOccluders,
    RandomCrop,
    Resize,
    box_coverage,
    build_train_transform,
    make_texture,
    visible_mask_targets,
)
from stad.errors import StadError

H, W, T = 40, 60, 4
BOXES = np.array(
    [
        [[10, 10, 30, 30], [12, 10, 32, 30], [14, 10, 34, 30], [16, 10, 36, 30]],
        [[40, 5, 50, 35], [40, 5, 50, 35], [40, 5, 50, 35], [40, 5, 50, 35]],
    ],
    dtype=np.float64,
)  # [2, T, 4]


def black_sample(boxes: np.ndarray = BOXES) -> ClipSample:
    return ClipSample.create(np.zeros((T, H, W, 3), dtype=np.uint8), boxes)


def flat_occluder(x: float, y: float, vx: float, vy: float, h: int, w: int, colour=(200, 100, 50), ellipse=False) -> Occluder:
    texture = np.broadcast_to(np.array(colour, dtype=np.uint8), (h, w, 3)).copy()
    return Occluder(x=x, y=y, vx=vx, vy=vy, texture=texture, ellipse=ellipse)


def test_same_seed_same_output_and_changes_something():
    op = PasteOccluders(p=1.0, max_occluders=3)
    a = op(black_sample(), np.random.default_rng(7))
    b = op(black_sample(), np.random.default_rng(7))
    np.testing.assert_array_equal(a.clip, b.clip)
    np.testing.assert_array_equal(a.occluder_mask, b.occluder_mask)
    np.testing.assert_array_equal(a.visibility, b.visibility)
    assert a.occluder_mask.shape == (T, H, W) and a.occluder_mask.any()
    c = op(black_sample(), np.random.default_rng(8))
    assert not np.array_equal(a.occluder_mask, c.occluder_mask)


def test_random_occluders_keep_boxes_and_lower_visibility_only():
    sample = black_sample()
    lowered = 0
    for seed in range(10):
        out = PasteOccluders(p=1.0)(sample, np.random.default_rng(seed))
        lowered += int((out.visibility < 1).any())
        np.testing.assert_array_equal(out.boxes, sample.boxes)
        assert np.all(out.visibility <= 1.0) and np.all(out.visibility >= 0.0)
        np.testing.assert_allclose(out.visibility, 1.0 - box_coverage(sample.boxes, out.occluder_mask))
        # pixels change only where the mask says (the background is black; textures may contain black)
        assert not out.clip[~out.occluder_mask].any()
    assert lowered >= 5  # half the occluders are aimed at an actor


def test_drawn_texture_moves_by_velocity_between_frames():
    rng = np.random.default_rng(3)
    sample = ClipSample.create(np.zeros((T, 80, 80, 3), dtype=np.uint8), np.zeros((0, T, 4)))
    op = PasteOccluders(p=1.0, max_occluders=1, size_range=(0.2, 0.2), speed=(0.05, 0.05), textures=("noise",))
    (occ,) = op.draw(sample, rng)
    occ = Occluder(x=20.0, y=20.0, vx=occ.vx, vy=occ.vy, texture=occ.texture)  # keep it inside the frame
    out = PasteOccluders.apply(sample, [occ])
    h, w = occ.texture.shape[:2]
    assert abs(np.hypot(occ.vx, occ.vy) - 0.05 * 80) < 1e-9
    for t in range(T):
        left, top = occ.position(t)
        assert (left, top) == (int(np.rint(20 + occ.vx * t)), int(np.rint(20 + occ.vy * t)))
        np.testing.assert_array_equal(out.clip[t, top : top + h, left : left + w], occ.texture)
        assert out.occluder_mask[t].sum() == h * w and out.occluder_mask[t, top : top + h, left : left + w].all()


def test_visibility_equals_one_minus_covered_box_fraction_hand_case():
    # a 10x10 square moving 2 px right per frame, starting at x=20, y=15: covers x 20..30(+2t), y 15..25
    occ = flat_occluder(20, 15, 2, 0, 10, 10)
    sample = black_sample()
    sample.visibility[0] = [1.0, 0.8, 1.0, 0.5]
    out = PasteOccluders.apply(sample, [occ])
    # actor 0: box x [10+2t, 30+2t], y [10, 30], area 400; overlap x [20+2t, 30+2t] ∩ box = 10 - ... :
    # occluder x [20+2t, 30+2t] lies inside [10+2t, 30+2t], y [15, 25] inside [10, 30] → 100 px → 0.25
    np.testing.assert_allclose(out.visibility[0], np.array([1.0, 0.8, 1.0, 0.5]) * 0.75)
    # actor 1: box x [40, 50], y [5, 35], area 300; occluder x [20+2t, 30+2t] reaches 40 only at t>=5 → 0
    np.testing.assert_allclose(out.visibility[1], 1.0)
    np.testing.assert_array_equal(out.boxes, BOXES)
    assert (out.clip[1, 15:25, 22:32] == [200, 100, 50]).all() and not out.clip[1, 15:25, 21].any()
    # a second paste counts only newly covered pixels: the same occluder again changes nothing
    again = PasteOccluders.apply(out, [occ])
    np.testing.assert_allclose(again.visibility, out.visibility)


def test_fractional_boxes_and_clip_level_boxes():
    occ = flat_occluder(0, 0, 0, 0, 10, 10)
    sample = ClipSample.create(np.zeros((T, H, W, 3), dtype=np.uint8), np.array([[5.5, 5.0, 15.5, 15.0]]))
    out = PasteOccluders.apply(sample, [occ])  # (N, 4) boxes: coverage 4.5 * 5 / 100 on every frame
    assert out.visibility.shape == (1,)
    np.testing.assert_allclose(out.visibility, [1 - 0.225])


def test_ellipse_occluder_is_round_and_clipped_at_the_border():
    occ = flat_occluder(-5, -5, 0, 0, 20, 20, ellipse=True)
    out = PasteOccluders.apply(black_sample(), [occ])
    # centre (5, 5) and the edge midpoint (14, 5) in, the texture's corner (14, 14) out
    assert out.occluder_mask[0, 5, 5] and out.occluder_mask[0, 5, 14] and not out.occluder_mask[0, 14, 14]
    assert out.occluder_mask[0].sum() < 15 * 15


def test_p_zero_is_identity_and_build_default_unchanged():
    sample = black_sample()
    out = PasteOccluders(p=0.0)(sample, np.random.default_rng(0))
    assert out is sample and out.occluder_mask is None
    default = build_train_transform((32, 32))
    assert not any(isinstance(op, PasteOccluders) for op in default.transforms)
    ops = build_train_transform((32, 32), occlusion=0.3).transforms
    assert isinstance(ops[-2], PasteOccluders) and ops[-2].p == 0.3 and isinstance(ops[-1], Resize)


def test_bad_arguments_raise():
    with pytest.raises(StadError, match="max_occluders"):
        PasteOccluders(max_occluders=0)
    with pytest.raises(StadError, match="textures"):
        PasteOccluders(textures=("plaid",))
    with pytest.raises(StadError, match="texture must be"):
        PasteOccluders.apply(black_sample(), [Occluder(0, 0, 0, 0, np.zeros((3, 3, 1), dtype=np.uint8))])
    with pytest.raises(StadError, match="unknown occluder texture"):
        make_texture("plaid", 4, 4, 3, np.random.default_rng(0))


@pytest.mark.parametrize("kind", ["noise", "stripes", "checker", "flat"])
def test_textures(kind):
    texture = make_texture(kind, 12, 16, 6, np.random.default_rng(1))
    assert texture.shape == (12, 16, 6) and texture.dtype == np.uint8
    colours = np.unique(texture.reshape(-1, 6), axis=0)
    assert len(colours) == {"flat": 1, "stripes": 2, "checker": 2}.get(kind, len(colours))
    if kind == "noise":
        assert len(colours) > 100


def test_mask_target_hand_case():
    boxes = np.array([[[0, 0, 4, 4], [0, 0, 4, 4]], [[2, 2, 8, 4], [2, 2, 8, 4]]], dtype=np.float64)  # [2, 2, 4]
    visibility = np.array([[1.0, 1.0], [1.0, 0.0]])
    occluder = np.zeros((2, 6, 8), dtype=bool)
    occluder[:, 0:2, 0:2] = True
    target = visible_mask_targets(boxes, visibility, occluder, size=(6, 8), stride=2)
    assert target.shape == (2, 3, 4) and target.dtype == np.float32
    # frame 0: union rows 0..3 cols 0..3 plus rows 2..3 cols 2..7, minus the 2x2 corner
    expected0 = np.array([[0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=np.float32)
    expected1 = np.array([[0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32)  # actor 1 invisible
    np.testing.assert_array_equal(target[0], expected0)
    np.testing.assert_array_equal(target[1], expected1)
    # area average with partial cells and a frame that does not divide by the stride
    half = visible_mask_targets(np.array([[[0, 0, 1, 3]]], dtype=np.float64), np.ones((1, 1)), None, size=(3, 3), stride=2)
    np.testing.assert_array_equal(half, [[[0.5, 0.0], [0.25, 0.0]]])
    empty = visible_mask_targets(np.zeros((0, 2, 4)), np.zeros((0, 2)), None, size=(6, 8), stride=4)
    assert empty.shape == (2, 2, 2) and not empty.any()
    with pytest.raises(StadError, match="occluder_mask must have shape"):
        visible_mask_targets(boxes, visibility, occluder[:, :5], size=(6, 8), stride=2)


def test_composition_with_expand_crop_flip_resize_keeps_mask_aligned():
    occ = flat_occluder(20, 12, 3, 1, 12, 16, colour=(255, 255, 255))
    pasted = PasteOccluders.apply(black_sample(), [occ])
    flipped = HorizontalFlip(p=1.0)(pasted, np.random.default_rng(0))
    white = flipped.clip.mean(axis=-1) == 255
    np.testing.assert_array_equal(white, flipped.occluder_mask)
    expanded = Expand(p=1.0, max_ratio=2.0, fill=0)(flipped, np.random.default_rng(1))
    np.testing.assert_array_equal(expanded.clip.mean(axis=-1) == 255, expanded.occluder_mask)
    ys, xs = np.nonzero(expanded.occluder_mask[0])
    crop = np.array([xs.min() - 10, ys.min() - 10, xs.max() + 20, ys.max() + 15])  # partly cuts the occluder later
    cropped = RandomCrop(min_area_fraction=0.0).apply(expanded, crop)
    assert cropped.occluder_mask.any()
    np.testing.assert_array_equal(cropped.clip.mean(axis=-1) == 255, cropped.occluder_mask)
    resized = Resize((90, 135), interpolation=0)(cropped)  # cv2.INTER_NEAREST: pixels and mask sample alike
    assert resized.occluder_mask.shape == (T, 90, 135)
    np.testing.assert_array_equal(resized.clip.mean(axis=-1) == 255, resized.occluder_mask)
    linear = Resize((90, 135))(cropped)  # bilinear pixels: the mask's inside stays white, far outside black
    inside = resized.occluder_mask & np.roll(resized.occluder_mask, 2, axis=2) & np.roll(resized.occluder_mask, -2, axis=2)
    inside &= np.roll(resized.occluder_mask, 2, axis=1) & np.roll(resized.occluder_mask, -2, axis=1)
    assert inside.any() and (linear.clip[inside] == 255).all()


def test_train_transform_with_occlusion_is_seeded_and_consistent():
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    transform = build_train_transform((32, 48), photometric=False, occlusion=1.0)
    a = transform(black_sample(), rng_a)
    b = transform(black_sample(), rng_b)
    np.testing.assert_array_equal(a.clip, b.clip)
    np.testing.assert_array_equal(a.occluder_mask, b.occluder_mask)
    assert a.occluder_mask.shape == (T, 32, 48) and a.occluder_mask.any()
    target = visible_mask_targets(a.boxes, a.visibility, a.occluder_mask, size=(32, 48), stride=4)
    assert target.shape == (T, 8, 12) and 0.0 <= target.min() and target.max() <= 1.0
    assert Compose([PasteOccluders(p=1.0)])(black_sample(), np.random.default_rng(0)).occluder_mask is not None
