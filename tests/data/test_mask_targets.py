"""STADO's visible-region mask targets in the data pipeline: stored occluder masks, TubeletClipDataset items,
augmentation consistency, and the synthetic renderer's occluder masks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from stad.data.datasets import TubeletClipDataset, collate_tubelets
from stad.data.frames import write_jpeg
from stad.data.occluder_masks import occluder_mask_path, read_occluder_masks, write_occluder_masks
from stad.data.transforms import build_train_transform
from stad.errors import StadError
from stad.structures import TubeAnnotations

SIZE = 32
BOX = (8.0, 4.0, 20.0, 28.0)  # x1, y1, x2, y2: pixel columns 8..19, rows 4..27 by the centre rule
T = 4


def _bar(t: int) -> np.ndarray:
    """Occluder of frame ``t`` (from 1): a vertical bar over columns 10 + 2(t-1) .. 13 + 2(t-1)."""
    mask = np.zeros((SIZE, SIZE), bool)
    mask[:, 10 + 2 * (t - 1) : 14 + 2 * (t - 1)] = True
    return mask


def _write_dataset(root, videos=("v1", "v2"), occluders: bool = True) -> TubeAnnotations:
    rng = np.random.default_rng(0)
    tube = np.array([[t, *BOX] for t in range(1, T + 1)], dtype=np.float32)
    for video in videos:
        for t in range(1, T + 1):
            write_jpeg(root / "rgb-images" / video / f"{t:05d}.jpg", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        if occluders:
            write_occluder_masks(occluder_mask_path(root, video), np.stack([_bar(t) for t in range(1, T + 1)]))
    return TubeAnnotations(
        labels=["a"], gttubes={v: {0: [tube]} for v in videos}, nframes={v: T for v in videos},
        resolution={v: (SIZE, SIZE) for v in videos}, train_videos=[list(videos)], test_videos=[[]],
        visibility={v: {0: [np.ones(T, np.float32)]} for v in videos},
    )


def _expected(frames, *, stride: int, occluded: bool = True) -> np.ndarray:
    """The visible region written out directly: box pixels minus the bar, averaged over stride cells."""
    out = []
    for t in frames:
        image = np.zeros((SIZE, SIZE), bool)
        image[4:28, 8:20] = True
        if occluded:
            image &= ~_bar(t)
        out.append(image.reshape(SIZE // stride, stride, SIZE // stride, stride).mean(axis=(1, 3)))
    return np.stack(out).astype(np.float32)


def test_occluder_mask_file_round_trip_and_errors(tmp_path) -> None:
    masks = np.random.default_rng(0).random((3, 5, 7)) < 0.3
    path = write_occluder_masks(tmp_path / "m" / "v.npz", masks)
    np.testing.assert_array_equal(read_occluder_masks(path, expected=(3, 5, 7)), masks)
    with pytest.raises(StadError, match=r"\(3, 5, 7\).*\(4, 5, 7\)"):
        read_occluder_masks(path, expected=(4, 5, 7))
    with pytest.raises(StadError, match="bool"):
        write_occluder_masks(tmp_path / "x.npz", masks.astype(np.uint8))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(StadError, match="not an occluder mask file"):
        read_occluder_masks(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        read_occluder_masks(tmp_path / "missing.npz")


def test_item_target_is_the_box_minus_the_stored_occluder(tmp_path) -> None:
    ann = _write_dataset(tmp_path)
    ds = TubeletClipDataset(ann, tmp_path, K=2, input_size=(SIZE, SIZE), mask_stride=4)
    item = ds[0]  # v1, frames 1-2
    target = item["visible_mask"].numpy()
    assert target.shape == (2, 8, 8) and target.dtype == np.float32
    # hand-checked cells of cell-row 1 (pixel rows 4..7): columns 4..7 | 8..11 | 12..15 | 16..19 | 20..23
    np.testing.assert_allclose(target[0, 1, 1:6], [0.0, 0.5, 0.5, 1.0, 0.0])  # bar on columns 10..13
    np.testing.assert_allclose(target[1, 1, 1:6], [0.0, 1.0, 0.0, 1.0, 0.0])  # bar on columns 12..15
    np.testing.assert_allclose(target, _expected([1, 2], stride=4))
    np.testing.assert_allclose(ds[4]["visible_mask"].numpy(), _expected([2, 3], stride=4))  # v2, frames 2-3

    batch = collate_tubelets([ds[0], ds[1]])
    assert batch["visible_mask"].shape == (2, 2, 8, 8)
    torch.testing.assert_close(batch["visible_mask"][1], ds[1]["visible_mask"])


def test_plain_boxes_without_stored_occluders_and_no_target_unless_asked(tmp_path) -> None:
    ann = _write_dataset(tmp_path)
    ignored = TubeletClipDataset(ann, tmp_path, K=2, input_size=(SIZE, SIZE), mask_stride=4, occluder_masks=False)
    np.testing.assert_allclose(ignored[0]["visible_mask"].numpy(), _expected([1, 2], stride=4, occluded=False))
    assert "visible_mask" not in TubeletClipDataset(ann, tmp_path, K=2, input_size=(SIZE, SIZE))[0]

    bare = tmp_path / "bare"
    bare_ann = _write_dataset(bare, occluders=False)
    ds = TubeletClipDataset(bare_ann, bare, K=2, input_size=(SIZE, SIZE), mask_stride=2)
    np.testing.assert_allclose(ds[0]["visible_mask"].numpy(), _expected([1, 2], stride=2, occluded=False))


def test_a_missing_or_wrong_occluder_file_is_an_error(tmp_path) -> None:
    ann = _write_dataset(tmp_path)
    occluder_mask_path(tmp_path, "v2").unlink()
    ds = TubeletClipDataset(ann, tmp_path, K=2, input_size=(SIZE, SIZE), mask_stride=4)
    ds[0]
    with pytest.raises(FileNotFoundError, match="v2.npz"):
        ds[4]
    write_occluder_masks(occluder_mask_path(tmp_path, "v2"), np.zeros((T, SIZE, SIZE + 1), bool))
    with pytest.raises(StadError, match="annotations say"):
        TubeletClipDataset(ann, tmp_path, K=2, input_size=(SIZE, SIZE), mask_stride=4)[4]


def test_augmentation_keeps_boxes_visibility_and_mask_target_consistent(tmp_path) -> None:
    ann = _write_dataset(tmp_path, occluders=False)
    transform = build_train_transform(
        (SIZE, SIZE), photometric=False, expand=False, crop=False, flip=True, occlusion=1.0, occlusion_size=(0.2, 0.6),
        occlusion_max=2,
    )
    ds = TubeletClipDataset(ann, tmp_path, K=2, input_size=(SIZE, SIZE), transform=transform, mask_stride=1)
    lowered = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for index in range(len(ds)):
            item = ds[index]
            boxes, vis, target = item["boxes"].numpy(), item["visibility"].numpy(), item["visible_mask"].numpy()
            assert boxes.shape == (1, 2, 4)
            flipped = (SIZE - BOX[2], BOX[1], SIZE - BOX[0], BOX[3])
            assert np.allclose(boxes[0], BOX) or np.allclose(boxes[0], flipped)
            x1, y1, x2, y2 = boxes[0, 0].astype(int)
            inside = target[:, y1:y2, x1:x2]  # [K, rows, cols]
            assert target.sum() == pytest.approx(inside.sum())  # nothing outside the box
            # the box-area visibility update and the visible region agree pixel for pixel
            np.testing.assert_allclose(inside.mean(axis=(1, 2)), vis[0], atol=1e-6)
            lowered += int((vis < 1).any())
    assert lowered >= 3  # the occluders did cover the actor


def test_augmentation_on_top_of_stored_occluders(tmp_path) -> None:
    ann = _write_dataset(tmp_path)
    transform = build_train_transform((SIZE, SIZE), photometric=False, expand=False, crop=False, flip=False, occlusion=1.0)
    ds = TubeletClipDataset(ann, tmp_path, K=2, input_size=(SIZE, SIZE), transform=transform, mask_stride=1)
    item = ds[1]  # v1, frames 2-3
    target = item["visible_mask"].numpy()
    for k, t in enumerate((2, 3)):
        assert target[k][_bar(t)].max() == 0.0  # stored occluder pixels are never visible
        assert target[k].sum() <= _expected([t], stride=1)[0].sum()


def test_synthetic_renderer_knows_its_occluder_pixels() -> None:
    from stad.data.synthetic import SynthConfig, render_video

    multi = SynthConfig.preset("occluded", videos=3, frames=24)
    single = SynthConfig.preset("occluded", videos=2, frames=24, actors=(1, 1))
    single_actor_checked = False
    for cfg, index in [(multi, 0), (multi, 1), (multi, 2), (single, 0), (single, 1)]:
        video = render_video(cfg, index, return_masks=True)
        occ = video.occluder_masks
        assert occ.shape == (cfg.frames, cfg.height, cfg.width) and occ.dtype == bool and occ.any()
        silhouettes = video.masks.reshape(len(video.actors), cfg.frames, -1)  # [A, T, H*W]
        hidden = (silhouettes & occ.reshape(1, cfg.frames, -1)).sum(-1) / np.maximum(silhouettes.sum(-1), 1)  # [A, T]
        visibility = np.stack([a.visibility for a in video.actors])  # [A, T]
        present = silhouettes.any(-1)
        assert (visibility[present] <= 1 - hidden[present] + 1e-9).all()  # occluders hide at least that much
        if len(video.actors) == 1:  # nothing else can hide the actor
            np.testing.assert_allclose(visibility[present], 1 - hidden[present], atol=1e-9)
            single_actor_checked = True
    assert single_actor_checked


def test_rendered_data_set_has_an_occluder_file_per_video(tiny_synth, tmp_path) -> None:
    from stad.data.synthetic import SynthConfig, load_annotations, render_video

    ann = load_annotations(tiny_synth)
    for video in ann.videos:
        masks = read_occluder_masks(occluder_mask_path(tiny_synth, video), expected=(ann.nframes[video], *ann.resolution[video]))
        assert masks.dtype == bool
    index = int(ann.videos[0].rsplit("_", 1)[1])
    rendered = render_video(SynthConfig.preset("tiny", seed=0), index)
    assert rendered.name == ann.videos[0]
    np.testing.assert_array_equal(read_occluder_masks(occluder_mask_path(tiny_synth, ann.videos[0])), rendered.occluder_masks)
    # the files are optional for readers: a copy without them gives plain-box targets
    copy = tmp_path / "copy"
    shutil.copytree(tiny_synth, copy, ignore=shutil.ignore_patterns("occluder-masks"))
    ds = TubeletClipDataset(load_annotations(copy), copy, K=3, input_size=(96, 128), mask_stride=4)
    assert ds.occluder_mask_dir is None and ds[0]["visible_mask"].shape == (3, 24, 32)
