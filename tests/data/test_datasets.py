"""Torch datasets on tiny JPEG data sets written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from torch.utils.data import DataLoader

from stad.data.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrameDataset,
    TubeletClipDataset,
    ava_center_frame,
    collate_frames,
    collate_tubelets,
    tubelet_windows,
)
from stad.data.keyframes import KeyframeClipDataset, collate_keyframes
from stad.data.frames import act_frame_path, ava_frame_path, write_jpeg
from stad.data.transforms import (
    ClipSample,
    Compose,
    HorizontalFlip,
    RandomCrop,
    Resize,
    boxes_to_original,
    build_train_transform,
)
from stad.errors import StadError
from stad.structures import KeyframeLabels, TubeAnnotations

RES = (32, 40)  # (H, W) of every video
NFRAMES = {"a/v1": 10, "a/v2": 8, "b/v3": 6}


def tube(first: int, last: int, x: float = 4.0) -> np.ndarray:
    """(L, 5) tube moving 1 px right per frame: [frame, x1, y1, x2, y2]."""
    frames = np.arange(first, last + 1, dtype=np.float64)
    return np.stack([frames, x + frames, 6 + 0 * frames, x + 12 + frames, 20 + 0 * frames], axis=1)


def grey(frame: int, stream: str = "rgb") -> int:
    """Grey level written for ``frame`` (flow images get other levels)."""
    return 10 * frame + (100 if stream == "flow" else 0)


@pytest.fixture()
def act_data(tmp_path: Path) -> tuple[TubeAnnotations, Path]:
    gttubes = {
        "a/v1": {0: [tube(1, 10)], 1: [tube(3, 6, x=20.0)]},
        "a/v2": {0: [tube(2, 5)]},
        "b/v3": {1: [tube(2, 6)]},
    }
    visibility = {v: {label: [np.linspace(0.1, 1.0, len(t)) for t in tubes] for label, tubes in d.items()} for v, d in gttubes.items()}
    ann = TubeAnnotations(
        labels=["walk", "run"],
        gttubes=gttubes,
        nframes=dict(NFRAMES),
        resolution={v: RES for v in NFRAMES},
        train_videos=[["a/v1", "a/v2"]],
        test_videos=[["b/v3"]],
        visibility=visibility,
        name="tiny",
    )
    for video, nframes in NFRAMES.items():
        for frame in range(1, nframes + 1):
            for stream in ("rgb", "flow"):
                write_jpeg(act_frame_path(tmp_path, video, frame, stream), np.full((*RES, 3), grey(frame, stream), np.uint8))
    return ann, tmp_path


def pixels(clip: torch.Tensor) -> torch.Tensor:
    """Undo the normalization of ``(..., C, H, W)`` with C a multiple of 3: pixel values 0..255."""
    channels = clip.shape[-3]
    mean = torch.tensor(IMAGENET_MEAN * (channels // 3)).view(channels, 1, 1)
    std = torch.tensor(IMAGENET_STD * (channels // 3)).view(channels, 1, 1)
    return (clip * std + mean) * 255


def test_train_windows_follow_the_in_out_rule(act_data):
    ann, _ = act_data
    windows = tubelet_windows(ann, ["a/v1", "a/v2"], K=3, stride=1, subset="train")
    # a/v1: tube 1..10 always inside; tube 3..6 must be fully in (starts 3, 4) or fully out (7, 8).
    # a/v2: tube 2..5 inside for starts 2, 3; start 6 has no tube inside.
    assert [(w.video, w.start) for w in windows] == [("a/v1", 3), ("a/v1", 4), ("a/v1", 7), ("a/v1", 8), ("a/v2", 2), ("a/v2", 3)]
    for w in windows:
        frames = set(range(w.start, w.start + 3))
        spans = [set(range(int(t[0, 0]), int(t[-1, 0]) + 1)) for ts in ann.gttubes[w.video].values() for t in ts]
        assert any(frames <= s for s in spans)
        assert all(frames <= s or not (frames & s) for s in spans)
    strided = tubelet_windows(ann, ["a/v1"], K=3, stride=2, subset="train")
    assert [w.start for w in strided] == [3, 7]


def test_test_windows_cover_every_frame(act_data):
    ann, _ = act_data
    assert [w.start for w in tubelet_windows(ann, ["b/v3"], K=3, stride=1, subset="test")] == [1, 2, 3, 4]
    assert [w.start for w in tubelet_windows(ann, ["b/v3"], K=3, stride=3, subset="test")] == [1, 4]
    assert [w.start for w in tubelet_windows(ann, ["b/v3"], K=8, stride=1, subset="test")] == [1]


def test_tubelet_items_shapes_and_boxes_under_identity(act_data):
    ann, root = act_data
    ds = TubeletClipDataset(ann, root, split=1, subset="train", K=3, input_size=(64, 80))
    assert len(ds) == 6
    item = ds[0]  # a/v1 from frame 3: both actors
    assert item["clip"].shape == (3, 3, 64, 80) and item["clip"].dtype == torch.float32
    assert item["boxes"].shape == (2, 3, 4) and item["boxes"].dtype == torch.float32
    assert item["labels"].tolist() == [0, 1] and item["labels"].dtype == torch.int64
    assert item["visibility"].shape == (2, 3)
    assert item["video"] == "a/v1" and item["start"] == 3 and item["frames"].tolist() == [3, 4, 5]
    assert item["orig_size"].tolist() == [32, 40]
    assert item["scale"].tolist() == [2.0, 2.0] and item["num_dropped"] == 0
    expected = np.stack([tube(1, 10)[2:5, 1:], tube(3, 6, x=20.0)[0:3, 1:]]) * 2.0
    np.testing.assert_allclose(item["boxes"].numpy(), expected)
    expected_vis = np.stack([np.linspace(0.1, 1.0, 10)[2:5], np.linspace(0.1, 1.0, 4)[0:3]])
    np.testing.assert_allclose(item["visibility"].numpy(), expected_vis, rtol=1e-6)
    np.testing.assert_allclose(boxes_to_original(item["boxes"].numpy(), item["affine"].numpy()), expected / 2.0, atol=1e-5)
    # the clip holds frames 3, 4, 5 in order
    levels = pixels(item["clip"]).mean(dim=(1, 2, 3))
    np.testing.assert_allclose(levels.numpy(), [grey(3), grey(4), grey(5)], atol=2.0)


def test_visibility_defaults_to_ones(act_data):
    ann, root = act_data
    ann.visibility = None
    item = TubeletClipDataset(ann, root, K=3, input_size=(32, 40))[0]
    assert torch.equal(item["visibility"], torch.ones(2, 3))


def test_test_subset_clamps_at_the_end(act_data):
    ann, root = act_data
    ds = TubeletClipDataset(ann, root, subset="test", K=8, input_size=(16, 20))
    assert len(ds) == 1
    item = ds[0]
    assert item["frames"].tolist() == [1, 2, 3, 4, 5, 6, 6, 6]
    assert item["boxes"].shape == (0, 8, 4)  # the tube (2..6) does not cover frame 1
    levels = pixels(item["clip"]).mean(dim=(1, 2, 3))
    np.testing.assert_allclose(levels.numpy(), [grey(f) for f in [1, 2, 3, 4, 5, 6, 6, 6]], atol=2.0)
    item = TubeletClipDataset(ann, root, subset="test", K=3, input_size=(16, 20))[1]  # frames 2..4
    assert item["labels"].tolist() == [1] and item["boxes"].shape == (1, 3, 4)


def test_flow_stacks_consecutive_images_clamped_at_the_end(act_data):
    ann, root = act_data
    ds = TubeletClipDataset(ann, root, subset="train", K=3, stream="flow", flow_frames=5, input_size=(16, 20))
    item = ds[3]  # a/v1 start 8: frames 8, 9, 10 of a 10-frame video
    assert item["clip"].shape == (3, 15, 16, 20)
    levels = pixels(item["clip"]).mean(dim=(2, 3)).view(3, 5, 3).mean(-1)  # [K, flow_frames]
    expected = [[grey(min(f + j, 10), "flow") for j in range(5)] for f in (8, 9, 10)]
    np.testing.assert_allclose(levels.numpy(), expected, atol=2.0)


def test_train_transform_keeps_boxes_consistent_and_is_seeded(act_data):
    ann, root = act_data
    transform = build_train_transform((48, 48))
    ds = TubeletClipDataset(ann, root, K=3, input_size=(48, 48), transform=transform, seed=3)
    a, b = ds[0], ds[0]
    assert torch.equal(a["clip"], b["clip"]) and torch.equal(a["boxes"], b["boxes"])
    assert len(a["labels"]) + a["num_dropped"] == 2
    assert a["boxes"].shape == (len(a["labels"]), 3, 4) and a["visibility"].shape == (len(a["labels"]), 3)
    epoch0 = [ds[i]["clip"] for i in range(len(ds))]
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i]["clip"], epoch0[i]) for i in range(len(ds)))


def test_flip_transform_moves_boxes(act_data):
    ann, root = act_data
    ds = TubeletClipDataset(ann, root, K=3, input_size=(32, 40), transform=Compose([HorizontalFlip(p=1.0), Resize((32, 40))]))
    item = ds[0]
    gt = tube(1, 10)[2:5, 1:]
    np.testing.assert_allclose(item["boxes"][0, :, 0].numpy(), 40 - gt[:, 2])
    np.testing.assert_allclose(boxes_to_original(item["boxes"].numpy(), item["affine"].numpy())[0], gt, atol=1e-5)


def test_collate_pads_actors_with_a_mask(act_data):
    ann, root = act_data
    ds = TubeletClipDataset(ann, root, K=3, input_size=(16, 20))
    batch = collate_tubelets([ds[0], ds[4]])  # 2 actors, 1 actor
    assert batch["clip"].shape == (2, 3, 3, 16, 20)
    assert batch["boxes"].shape == (2, 2, 3, 4) and batch["visibility"].shape == (2, 2, 3)
    assert batch["mask"].tolist() == [[True, True], [True, False]]
    assert batch["labels"].tolist() == [[0, 1], [0, -1]]
    assert torch.equal(batch["boxes"][1, 0], ds[4]["boxes"][0]) and (batch["boxes"][1, 1] == 0).all()
    assert batch["video"] == ["a/v1", "a/v2"] and batch["start"].tolist() == [3, 2]
    assert batch["orig_size"].shape == (2, 2) and batch["affine"].shape == (2, 4)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_works_and_matches_single_process(act_data, num_workers):
    ann, root = act_data
    ds = TubeletClipDataset(ann, root, K=3, input_size=(24, 24), transform=build_train_transform((24, 24)), seed=1)
    loader = DataLoader(ds, batch_size=4, num_workers=num_workers, collate_fn=collate_tubelets)
    batches = list(loader)
    assert [b["clip"].shape[0] for b in batches] == [4, 2]
    reference = collate_tubelets([ds[i] for i in range(4)])
    assert torch.equal(batches[0]["clip"], reference["clip"]) and torch.equal(batches[0]["boxes"], reference["boxes"])


def test_errors_missing_frame_zero_windows_bad_size(act_data):
    ann, root = act_data
    missing = act_frame_path(root, "a/v1", 4)
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=r"a/v1/00004\.jpg"):
        TubeletClipDataset(ann, root, K=3, input_size=(16, 16))[0]
    with pytest.raises(StadError, match="no train windows of K=20"):
        TubeletClipDataset(ann, root, K=20, input_size=(16, 16))
    with pytest.raises(StadError, match="stream must be"):
        TubeletClipDataset(ann, root, K=3, stream="depth")
    with pytest.raises(StadError, match="input_size"):
        TubeletClipDataset(ann, root, K=3, input_size=(16,))
    with pytest.raises(StadError, match="expected input_size 16x16"):
        TubeletClipDataset(ann, root, K=3, input_size=(16, 16), transform=Compose([]))[4]
    ann.resolution["a/v2"] = (240, 320)
    with pytest.raises(StadError, match="image is 32x40 .* annotations say 240x320"):
        TubeletClipDataset(ann, root, K=3, input_size=(16, 16))[4]


def test_bad_tube_is_reported(act_data):
    ann, root = act_data
    ann.gttubes["a/v2"][0].append(tube(2, 5)[[0, 2, 3]])
    with pytest.raises(StadError, match="a/v2: label 0 tube 1: frames are not consecutive"):
        TubeletClipDataset(ann, root, K=3)


def test_frame_dataset(act_data):
    ann, root = act_data
    ds = FrameDataset(ann, root, split=1, subset="train", input_size=(64, 80), gap=2)
    assert len(ds) == 10 + 4  # a/v1 frames 1..10, a/v2 frames 2..5
    item = ds[2]  # a/v1 frame 3: both actors, previous frame 1
    assert item["image"].shape == (3, 64, 80) and item["previous"].shape == (3, 64, 80)
    assert item["frame"] == 3 and item["previous_frame"] == 1
    assert pixels(item["image"]).mean().item() == pytest.approx(grey(3), abs=2)
    assert pixels(item["previous"]).mean().item() == pytest.approx(grey(1), abs=2)
    np.testing.assert_allclose(item["boxes"].numpy(), np.stack([tube(1, 10)[2, 1:], tube(3, 6, x=20.0)[0, 1:]]) * 2)
    assert item["labels"].tolist() == [0, 1] and item["visibility"].shape == (2,)
    assert ds[0]["previous_frame"] == 1  # clamped at 1
    test = FrameDataset(ann, root, subset="test", input_size=(16, 20))
    assert len(test) == 6 and test[0]["boxes"].shape == (0, 4)
    batch = collate_frames([ds[2], FrameDataset(ann, root, subset="test", input_size=(64, 80))[0]])
    assert batch["boxes"].shape == (2, 2, 4) and batch["mask"].tolist() == [[True, True], [False, False]]


def test_frame_dataset_same_transform_on_both_frames(act_data):
    ann, root = act_data
    ds = FrameDataset(ann, root, input_size=(32, 40), gap=1, transform=build_train_transform((32, 40), photometric=False))
    expanded = 0
    for index in range(1, 9):
        item = ds[index]
        assert item["previous_frame"] == item["frame"] - 1
        # Where the image lies on the expand canvas, and how it was cropped and flipped, must be the
        # same in both frames; the frames themselves differ only by their grey level.
        image_now = (pixels(item["image"]) - grey(item["frame"])).abs().mean(0) < 3  # [H, W]
        image_before = (pixels(item["previous"]) - grey(item["previous_frame"])).abs().mean(0) < 3
        assert torch.equal(image_now, image_before)
        expanded += not bool(image_now.all())
    assert expanded >= 2


@pytest.fixture()
def ava_data(tmp_path: Path) -> Path:
    for frame in range(1, 13):
        write_jpeg(ava_frame_path(tmp_path, "vidA", frame), np.full((20, 30, 3), grey(frame), np.uint8))
    return tmp_path


def keyframe(timestamp: int, n: int = 2, num_classes: int = 4) -> KeyframeLabels:
    labels = np.zeros((n, num_classes), dtype=bool)
    labels[0, [0, 2]] = True
    if n > 1:
        labels[1, 3] = True
    boxes = np.array([[0.1, 0.2, 0.5, 0.9], [0.5, 0.0, 1.0, 0.5]])[:n]
    return KeyframeLabels(video="vidA", timestamp=timestamp, boxes=boxes, labels=labels, person_ids=np.arange(n))


def test_ava_frame_index_mapping():
    assert ava_center_frame(0) == 1
    assert ava_center_frame(2, fps=30) == 61
    assert ava_center_frame(902, fps=30, timestamp_start=900) == 61


def test_keyframe_clips(ava_data):
    keyframes = [keyframe(1), keyframe(2, n=1), keyframe(3)]
    ds = KeyframeClipDataset(keyframes, ava_data, num_frames=4, frame_stride=2, fps=4, input_size=(40, 60), num_classes=4)
    assert len(ds) == 3 and ds.nframes == {"vidA": 12}
    item = ds[0]  # centre 1 * 4 + 1 = 5 -> frames 1, 3, 5, 7
    assert item["center_frame"] == 5 and item["frames"].tolist() == [1, 3, 5, 7]
    assert item["clip"].shape == (4, 3, 40, 60)
    np.testing.assert_allclose(pixels(item["clip"]).mean(dim=(1, 2, 3)).numpy(), [grey(f) for f in (1, 3, 5, 7)], atol=2.0)
    np.testing.assert_allclose(item["boxes"].numpy(), [[6, 8, 30, 36], [30, 0, 60, 20]], atol=1e-4)
    assert item["labels"].dtype == torch.float32 and item["labels"].tolist() == [[1, 0, 1, 0], [0, 0, 0, 1]]
    assert ds[1]["frames"].tolist() == [5, 7, 9, 11]
    last = ds[2]  # centre 13 clamped to 12 -> 8, 10, 12, 12
    assert last["center_frame"] == 12 and last["frames"].tolist() == [8, 10, 12, 12]
    batch = collate_keyframes([ds[1], ds[0]])
    assert batch["boxes"].shape == (2, 2, 4) and batch["labels"].shape == (2, 2, 4)
    assert batch["mask"].tolist() == [[True, False], [True, True]]
    assert batch["person_ids"].tolist() == [[0, -1], [0, 1]] and (batch["labels"][0, 1] == 0).all()
    assert batch["timestamp"].tolist() == [2, 1]
    for workers in (0, 2):
        loaded = list(DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate_keyframes))
        assert [b["clip"].shape[0] for b in loaded] == [2, 1]


def test_keyframe_errors(ava_data):
    with pytest.raises(StadError, match="no keyframes"):
        KeyframeClipDataset([], ava_data, input_size=(8, 8), num_classes=4)
    with pytest.raises(StadError, match=r"keyframe vidA,1: labels must be \(N=2, num_classes=5\)"):
        KeyframeClipDataset([keyframe(1)], ava_data, input_size=(8, 8), num_classes=5)
    other = KeyframeLabels("vidB", 1, np.zeros((0, 4)), np.zeros((0, 4), bool), np.zeros(0, np.int64))
    with pytest.raises(FileNotFoundError, match="frames/vidB"):
        KeyframeClipDataset([other], ava_data, input_size=(8, 8), num_classes=4)
    ava_frame_path(ava_data, "vidA", 7).unlink()
    ds = KeyframeClipDataset([keyframe(1)], ava_data, num_frames=4, frame_stride=2, fps=4, input_size=(8, 8), num_classes=4)
    assert ds.nframes == {"vidA": 12}
    with pytest.raises(FileNotFoundError, match=r"img_00007\.jpg"):
        ds[0]


def test_real_jhmdb_clip_with_puppet_mask_boxes(realdata, tmp_path):
    """Real JHMDB frames (SOURCES.md: clip_frames) with boxes from the official puppet mask: the item's
    boxes, mapped back through ``affine``, equal the mask extent, and the mask pasted as an extra clip
    moves with them under a flip + crop + resize."""
    video = "Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2"
    mask = scipy.io.loadmat(realdata / "jhmdb21" / "puppet_masks" / "catch" / f"{video}.mat")["part_mask"]  # [H, W, T]
    nframes = mask.shape[2]
    rows = []
    for t in range(nframes):
        ys, xs = np.nonzero(mask[:, :, t])
        rows.append([t + 1, xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])  # pixel-edge extent
    gt = np.asarray(rows, dtype=np.float64)
    for t in range(12, 19):  # the frames of the item read below
        png = cv2.imread(str(realdata / "jhmdb21" / "clip_frames" / video / f"{t:05d}.png"), cv2.IMREAD_COLOR)
        write_jpeg(act_frame_path(tmp_path, f"catch/{video}", t), cv2.cvtColor(png, cv2.COLOR_BGR2RGB))
    ann = TubeAnnotations(
        labels=["catch"], gttubes={f"catch/{video}": {0: [gt]}}, nframes={f"catch/{video}": nframes},
        resolution={f"catch/{video}": (240, 320)}, train_videos=[[f"catch/{video}"]], test_videos=[[]],
    )
    ds = TubeletClipDataset(ann, tmp_path, K=7, stride=11, input_size=(288, 288))
    assert [w.start for w in ds.windows] == [1, 12, 23, 34]
    item = ds[1]
    assert item["clip"].shape == (7, 3, 288, 288) and item["boxes"].shape == (1, 7, 4)
    np.testing.assert_allclose(boxes_to_original(item["boxes"].numpy(), item["affine"].numpy())[0], gt[11:18, 1:], atol=1e-4)
    # The mask as a white-on-black clip goes through the same random geometry as the boxes (upscaled
    # at the end: a bilinear downscale can skip the mask's 1-pixel-thin limbs).
    transform = Compose([RandomCrop(), HorizontalFlip(p=0.5), Resize((480, 640))])
    mask_clip = np.repeat(mask[:, :, 11:18].transpose(2, 0, 1)[..., None] * 255, 3, axis=-1).astype(np.uint8)
    checked = 0
    for seed in range(6):
        out = transform(ClipSample.create(mask_clip, gt[None, 11:18, 1:]), np.random.default_rng(seed))
        if not out.keep[0]:
            continue
        for t in range(7):
            ys, xs = np.nonzero(out.clip[t].mean(-1) > 127.5)
            extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
            box = out.boxes[0, t]
            # The visible mask always lies inside the box ...
            assert (extent[:2] >= box[:2] - 1).all() and (extent[2:] <= box[2:] + 1).all()
            # ... and is tight when the crop did not cut the box (a cut box is the clipped box, which
            # can be wider than the part of the mask left inside the crop).
            if box[0] > 1 and box[1] > 1 and box[2] < 639 and box[3] < 479:
                np.testing.assert_allclose(box, extent, atol=1.0)
                checked += 1
    assert checked >= 7
