"""Clip-consistent transforms: boxes must follow the pixels on every frame."""

from __future__ import annotations

import numpy as np
import pytest

from stad.data.transforms import (
    ClipSample,
    Compose,
    CropSampler,
    Expand,
    HorizontalFlip,
    PhotometricDistort,
    RandomCrop,
    Resize,
    boxes_to_original,
    build_test_transform,
    build_train_transform,
    crop_keep_fraction,
)
from stad.errors import StadError

H, W, T = 60, 80, 3
# One actor moving right and growing, integer pixel-edge boxes x1, y1, x2, y2 per frame.
TUBE = np.array([[[10, 12, 30, 40], [14, 13, 36, 42], [18, 14, 42, 44]]], dtype=np.float64)  # [1, T, 4]


def white_box_clip(boxes: np.ndarray, h: int = H, w: int = W) -> np.ndarray:
    """Black (T, h, w, 3) clip with a white rectangle at each frame's box (rows y1:y2, cols x1:x2)."""
    clip = np.zeros((boxes.shape[1], h, w, 3), dtype=np.uint8)
    for boxes_per_tube in boxes:
        for t, (x1, y1, x2, y2) in enumerate(boxes_per_tube.astype(int)):
            clip[t, y1:y2, x1:x2] = 255
    return clip


def white_extent(frame: np.ndarray) -> np.ndarray:
    """``x1, y1, x2, y2`` (pixel edges) of the pixels brighter than mid-grey in an (H, W, 3) frame."""
    ys, xs = np.nonzero(frame.mean(axis=-1) > 127.5)
    assert len(xs) > 0, "no white pixels left"
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def assert_boxes_follow_pixels(out: ClipSample) -> None:
    assert out.boxes.shape == (1, T, 4)
    for t in range(T):
        np.testing.assert_allclose(out.boxes[0, t], white_extent(out.clip[t]), atol=1.0)


def sample() -> ClipSample:
    return ClipSample.create(white_box_clip(TUBE), TUBE, visibility=np.array([[1.0, 0.5, 0.25]]))


def test_flip_moves_boxes_with_pixels():
    out = HorizontalFlip(p=1.0)(sample(), np.random.default_rng(0))
    assert_boxes_follow_pixels(out)
    np.testing.assert_array_equal(out.boxes[0, 0], [W - 30, 12, W - 10, 40])
    np.testing.assert_array_equal(out.visibility, [[1.0, 0.5, 0.25]])


def test_flip_with_p0_is_identity_and_invert_channels():
    s = sample()
    assert HorizontalFlip(p=0.0)(s, np.random.default_rng(0)) is s
    flow = ClipSample.create(np.full((1, 4, 5, 3), 100, np.uint8), np.zeros((0, 4)))
    out = HorizontalFlip(p=1.0, invert_channels=[0])(flow, np.random.default_rng(0))
    assert (out.clip[..., 0] == 155).all() and (out.clip[..., 1:] == 100).all()


@pytest.mark.parametrize("seed", range(4))
def test_expand_moves_boxes_with_pixels(seed):
    out = Expand(p=1.0, max_ratio=3.0)(sample(), np.random.default_rng(seed))
    assert out.size[0] >= H and out.size[1] >= W and out.size != (H, W)
    assert_boxes_follow_pixels(out)
    # The canvas outside the clip is the mean pixel.
    assert (out.clip[0, 0, 0] == [124, 116, 104]).all() or (out.clip[0, -1, -1] == [124, 116, 104]).all()


@pytest.mark.parametrize("size", [(30, 50), (97, 131), (60, 80)])
def test_resize_moves_boxes_with_pixels(size):
    out = Resize(size)(sample(), np.random.default_rng(0))
    assert out.clip.shape == (T, *size, 3)
    assert_boxes_follow_pixels(out)
    sy, sx = size[0] / H, size[1] / W
    np.testing.assert_allclose(out.boxes, TUBE * [sx, sy, sx, sy])


def test_crop_apply_clips_partial_boxes_to_the_crop():
    # The crop cuts the left part of frame 0's box (x 10..30 -> 20..30) and keeps > 25 % on all frames.
    out = RandomCrop().apply(sample(), np.array([20, 5, 70, 55]))
    assert out.size == (50, 50)
    assert_boxes_follow_pixels(out)
    np.testing.assert_array_equal(out.boxes[0, 0], [0, 7, 10, 35])
    np.testing.assert_array_equal(out.keep, [True])


@pytest.mark.parametrize("seed", range(6))
def test_random_crop_moves_boxes_with_pixels(seed):
    out = RandomCrop()(sample(), np.random.default_rng(seed))
    assert out.keep.sum() == len(out.boxes) == 1  # the sampler only proposes crops that keep an actor
    assert_boxes_follow_pixels(out)


def test_random_crop_really_crops_and_respects_min_overlap():
    crops = 0
    sampler = CropSampler(min_scale=0.3, max_scale=1.0, min_aspect=0.5, max_aspect=2.0, min_overlap=0.3, max_trials=50)
    for seed in range(20):
        out = RandomCrop(samplers=[sampler])(sample(), np.random.default_rng(seed))
        if out.size != (H, W):
            crops += 1
            # mean over frames of IoU(box, crop) in original pixels must be >= 0.3
            crop = boxes_to_original(np.array([0, 0, out.size[1], out.size[0]], dtype=float), out.affine)
            iw = np.minimum(TUBE[0, :, 2], crop[2]) - np.maximum(TUBE[0, :, 0], crop[0])
            ih = np.minimum(TUBE[0, :, 3], crop[3]) - np.maximum(TUBE[0, :, 1], crop[1])
            inter = iw.clip(0) * ih.clip(0)
            box_area = (TUBE[0, :, 2] - TUBE[0, :, 0]) * (TUBE[0, :, 3] - TUBE[0, :, 1])
            union = box_area + (crop[2] - crop[0]) * (crop[3] - crop[1]) - inter
            assert (inter / union).mean() >= 0.3
    assert crops >= 10


def test_crop_drops_an_actor_on_all_frames_with_its_visibility():
    boxes = np.concatenate([TUBE, [[[60, 5, 78, 20], [62, 5, 79, 20], [50, 5, 70, 20]]]])  # [2, T, 4]
    vis = np.array([[1.0, 0.5, 0.25], [0.9, 0.8, 0.7]])
    s = ClipSample.create(white_box_clip(boxes), boxes, vis)
    # Crop x 0..55: actor 1 keeps 5/20 = 25 % on frame 2 only, 0 % on frames 0-1 -> dropped everywhere.
    np.testing.assert_allclose(crop_keep_fraction(boxes, np.array([0, 0, 55, 60])), [1.0, 0.0])
    out = RandomCrop(min_area_fraction=0.25).apply(s, np.array([0, 0, 55, 60]))
    np.testing.assert_array_equal(out.keep, [True, False])
    assert out.boxes.shape == (1, T, 4) and out.visibility.shape == (1, T)
    np.testing.assert_array_equal(out.visibility, [[1.0, 0.5, 0.25]])
    np.testing.assert_array_equal(out.boxes, TUBE)
    # With threshold 0 nobody is dropped; the partly outside box is clipped to the crop.
    out = RandomCrop(min_area_fraction=0.0).apply(s, np.array([0, 0, 55, 60]))
    np.testing.assert_array_equal(out.keep, [True, True])
    np.testing.assert_array_equal(out.boxes[1, 2], [50, 5, 55, 20])


def test_keep_mask_accumulates_over_two_crops():
    boxes = np.array([[0, 0, 10, 10], [30, 30, 40, 40], [60, 40, 80, 60]], dtype=float)  # [3, 4]
    s = ClipSample.create(np.zeros((2, H, W, 3), np.uint8), boxes)
    crop = RandomCrop(min_area_fraction=0.5)
    out = crop.apply(crop.apply(s, np.array([20, 20, 80, 60])), np.array([0, 0, 30, 30]))
    np.testing.assert_array_equal(out.keep, [False, True, False])
    np.testing.assert_array_equal(out.boxes, [[10, 10, 20, 20]])


def test_no_actors_only_unconstrained_crops():
    s = ClipSample.create(np.zeros((2, H, W, 3), np.uint8), np.zeros((0, T, 4)))
    out = RandomCrop()(s, np.random.default_rng(0))
    assert out.size == (H, W) and out.boxes.shape == (0, 4) and out.keep.shape == (0,)


@pytest.mark.parametrize("seed", range(12))
def test_composition_moves_boxes_with_pixels(seed):
    transform = build_train_transform((64, 96), photometric=False)
    out = transform(sample(), np.random.default_rng(seed))
    assert out.clip.shape == (T, 64, 96, 3)
    if out.keep[0]:
        assert_boxes_follow_pixels(out)
    else:
        assert out.boxes.shape == (0, T, 4) and out.visibility.shape == (0, T)


def test_composition_exercises_every_op_over_seeds():
    transform = build_train_transform((64, 96), photometric=False)
    flips = expands = crops = 0
    for seed in range(12):
        out = transform(sample(), np.random.default_rng(seed))
        ax, bx, ay, by = out.affine
        flips += ax < 0
        # Before the final resize, the pre-resize size is 64/ay by 96/|ax|.
        pre_h, pre_w = 64 / ay, 96 / abs(ax)
        expands += pre_h > H + 0.5
        crops += pre_h < H - 0.5 or pre_w < W - 0.5
    assert flips >= 2 and expands >= 2 and crops >= 2


def test_boxes_to_original_inverts_expand_flip_resize():
    transform = Compose([Expand(p=1.0), HorizontalFlip(p=1.0), Resize((50, 70))])
    out = transform(sample(), np.random.default_rng(3))
    assert out.affine[0] < 0
    np.testing.assert_allclose(boxes_to_original(out.boxes, out.affine), TUBE, atol=1e-9)


def test_photometric_leaves_boxes_and_is_the_same_on_every_frame():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    s = ClipSample.create(np.stack([frame] * T), TUBE)
    out = PhotometricDistort(p=1.0)(s, np.random.default_rng(1))
    np.testing.assert_array_equal(out.boxes, TUBE)
    assert out.clip.dtype == np.uint8 and out.clip.shape == s.clip.shape
    assert not np.array_equal(out.clip[0], frame)
    for t in range(1, T):
        np.testing.assert_array_equal(out.clip[t], out.clip[0])


def test_photometric_brightness_only_is_exact():
    s = ClipSample.create(np.full((2, 4, 4, 3), 100, np.uint8), np.zeros((0, 4)))
    op = PhotometricDistort(p=1.0, contrast_range=(1.0, 1.0), saturation_range=(1.0, 1.0), hue_delta=0.0, brightness_delta=20.0)
    rng = np.random.default_rng(5)
    expected = np.random.default_rng(5)
    expected.random(4), expected.random()
    delta = expected.uniform(-20.0, 20.0)
    out = op(s, rng)
    assert np.abs(out.clip.astype(float) - (100 + delta)).max() <= 1.0


def test_photometric_rejects_flow_channels():
    s = ClipSample.create(np.zeros((2, 4, 4, 15), np.uint8), np.zeros((0, 4)))
    with pytest.raises(StadError, match="3 channels, got 15"):
        PhotometricDistort()(s, np.random.default_rng(0))


def test_geometric_ops_handle_stacked_flow_channels():
    boxes = TUBE
    clip = np.repeat(white_box_clip(boxes), 5, axis=-1)  # [T, H, W, 15]
    out = build_train_transform((32, 48), photometric=False)(ClipSample.create(clip, boxes), np.random.default_rng(2))
    assert out.clip.shape == (T, 32, 48, 15)
    np.testing.assert_array_equal(out.clip[..., :3], out.clip[..., 12:])


def test_same_seed_same_result_different_seed_differs():
    transform = build_train_transform((40, 40))
    a = transform(sample(), np.random.default_rng(7))
    b = transform(sample(), np.random.default_rng(7))
    np.testing.assert_array_equal(a.clip, b.clip)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.affine, b.affine)
    others = [transform(sample(), np.random.default_rng(seed)) for seed in range(8, 12)]
    assert any(not np.array_equal(o.clip, a.clip) for o in others)


def test_keyframe_boxes_n4_follow_pixels():
    box = np.array([[20, 10, 50, 30]], dtype=float)
    clip = white_box_clip(np.repeat(box[:, None], T, axis=1))
    out = Compose([Expand(p=1.0), HorizontalFlip(p=1.0), Resize((45, 45))])(ClipSample.create(clip, box), np.random.default_rng(1))
    assert out.boxes.shape == (1, 4) and out.visibility.shape == (1,)
    for t in range(T):
        np.testing.assert_allclose(out.boxes[0], white_extent(out.clip[t]), atol=1.0)


def test_test_transform_is_deterministic_resize():
    out = build_test_transform((30, 40))(sample(), np.random.default_rng(0))
    np.testing.assert_allclose(out.boxes, TUBE * 0.5)
    np.testing.assert_allclose(out.affine, [0.5, 0, 0.5, 0])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(StadError, match=r"boxes must be \(N, 4\) or \(N, T=3, 4\), got shape \(1, 2, 4\)"):
        ClipSample.create(np.zeros((3, 4, 4, 3), np.uint8), np.zeros((1, 2, 4)))
    with pytest.raises(StadError, match="uint8"):
        ClipSample.create(np.zeros((3, 4, 4, 3), np.float32), np.zeros((0, 4)))
    with pytest.raises(StadError, match="visibility must have shape"):
        ClipSample.create(np.zeros((3, 4, 4, 3), np.uint8), np.zeros((1, 4)), np.ones((2,)))
    with pytest.raises(StadError, match="size must be"):
        Resize((0, 5))
    with pytest.raises(StadError, match="min_area_fraction"):
        RandomCrop(min_area_fraction=1.5)
