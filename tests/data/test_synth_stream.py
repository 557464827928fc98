"""The synthetic training stream of the tubelet and frame families, idle negatives, partial rendering, and the epoch
that reaches persistent DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import stad.data.synthetic as synthetic
from stad.data.datasets import (
    FrameDataset,
    TubeletClipDataset,
    collate_tubelets,
    tubelet_windows,
    window_kinds,
)
from stad.data.sampling import EpochSampler
from stad.data.synth_stream import FrameStreamDataset, StreamVideos, TubeletStreamDataset
from stad.data.synthetic import SynthConfig, load_annotations, render_dataset, render_scene, sample_scene
from stad.data.transforms import build_train_transform
from stad.errors import StadError

CONFIG = SynthConfig.preset("tiny", videos=4)
SIZE = (96, 128)
EPOCH = 2


def tubelet_stream(**kwargs) -> TubeletStreamDataset:
    options = dict(videos_per_epoch=4, clips_per_video=3, K=5, input_size=SIZE, seed=3, negative_fraction=0.3)
    return TubeletStreamDataset(CONFIG, **{**options, **kwargs})


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The stream's videos of epoch EPOCH written to disk by the real writer (``render_dataset``, ACT layout)."""
    stream = tubelet_stream().stream
    root = tmp_path_factory.mktemp("stream_act")

    def stream_video(cfg, index, *, return_masks=False):
        return render_scene(stream.video(EPOCH, index).scene, return_masks=return_masks)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic, "render_video", stream_video)
        render_dataset(CONFIG, root)
    return root


def test_partial_rendering_gives_the_frames_of_the_whole_video():
    scene = sample_scene(SynthConfig.preset("occluded", videos=2, frames=24), 1)
    full = render_scene(scene, return_masks=True)
    frames = np.array([2, 3, 11, 24])
    part = render_scene(scene, frames=frames, return_masks=True)
    assert np.array_equal(part.frame_numbers, frames)
    assert np.array_equal(part.frames, full.frames[frames - 1])
    assert np.array_equal(part.occluder_masks, full.occluder_masks[frames - 1])
    assert np.array_equal(part.masks, full.masks[:, frames - 1])
    for a, b in zip(full.actors, part.actors):
        assert np.array_equal(a.boxes[frames - 1], b.boxes[frames - 1])
        assert np.array_equal(a.visibility[frames - 1], b.visibility[frames - 1])
        assert np.isnan(b.boxes[0]).all()  # frame 1 not rendered
    with pytest.raises(StadError, match="ascending"):
        render_scene(scene, frames=[3, 2])
    with pytest.raises(StadError, match="1..24"):
        render_scene(scene, frames=[25])


def test_a_stream_item_is_the_item_read_from_the_same_video_on_disk(written):
    """Without augmentation the stream item equals TubeletClipDataset's item of the written video and window
    (pixels after the data set's JPEG compression, boxes, labels, visibility)."""
    ours = tubelet_stream()
    ann = load_annotations(written)
    ann.test_videos = [sorted(ann.nframes)]  # every written video, all their windows
    fixed = TubeletClipDataset(ann, written, split=1, subset="test", K=5, input_size=SIZE, seed=3)
    position = {(w.video, w.start): i for i, w in enumerate(fixed.windows)}
    for index in range(len(ours)):
        item = ours[(EPOCH, index)]
        video = index // 3
        assert item["video"] == ours.stream.name(EPOCH, video)
        theirs = fixed[position[(item["video"], item["start"])]]
        for key in ("clip", "boxes", "labels", "visibility", "frames"):
            assert torch.equal(item[key], theirs[key]), key


def test_stream_items_are_reproducible_and_distinct_per_epoch_and_video():
    ds = tubelet_stream()
    a, b = ds[(EPOCH, 4)], ds[(EPOCH, 4)]
    assert torch.equal(a["clip"], b["clip"]) and a["video"] == b["video"]
    fresh = tubelet_stream()[(EPOCH, 4)]  # another process / worker: same item
    assert torch.equal(a["clip"], fresh["clip"])
    names = {ds[(epoch, index)]["video"] for epoch in range(3) for index in (0, 3, 6)}
    assert len(names) == 9
    clips = [ds[(epoch, 0)]["clip"] for epoch in range(3)]
    assert not torch.equal(clips[0], clips[1]) and not torch.equal(clips[1], clips[2])
    other_seed = tubelet_stream(seed=4)[(EPOCH, 4)]
    assert not torch.equal(a["clip"][0], other_seed["clip"][0])


def test_stream_videos_are_never_the_data_sets_videos():
    """The data set's video i uses the key (seed, i); the stream's keys are longer, so its scenes differ from every
    video of the data set (compared on the actors' random draws)."""
    config = SynthConfig.preset("small")
    fixed = {tuple((a.start, a.end, round(a.x0, 6), round(a.height, 6)) for a in sample_scene(config, i).actors)
             for i in range(config.videos)}
    stream = StreamVideos(config, seed=0, clips_per_video=1, length=7, negative_fraction=0.0)
    for epoch in range(3):
        for video in range(40):
            scene = stream.video(epoch, video).scene
            assert tuple((a.start, a.end, round(a.x0, 6), round(a.height, 6)) for a in scene.actors) not in fixed


def test_every_worker_count_gives_the_same_batches():
    ds = tubelet_stream(transform=build_train_transform(SIZE, expand=False))

    def batches(workers: int):
        sampler = EpochSampler(torch.utils.data.SequentialSampler(ds))
        loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate_tubelets,
                            persistent_workers=workers > 0)
        out = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            out.append([b["clip"] for b in loader])
        return out

    zero, two = batches(0), batches(2)
    for e in (0, 1):
        assert all(torch.equal(x, y) for x, y in zip(zero[e], two[e]))
    assert not torch.equal(two[0][0], two[1][0])  # the epoch reached the persistent workers


def test_stream_clips_are_positive_or_negative_windows():
    stream = StreamVideos(CONFIG, seed=1, clips_per_video=6, length=5, negative_fraction=0.5)
    kinds = []
    for video in range(30):
        item = stream.video(0, video)
        spans = [(a.start, a.end) for a in item.scene.actors]
        kinds += [window_kinds(spans, start, 5) for start in item.starts]
    assert None not in kinds
    assert 0.3 < kinds.count("negative") / len(kinds) < 0.7
    never = StreamVideos(CONFIG, seed=1, clips_per_video=6, length=5, negative_fraction=0.0)
    for video in range(30):
        item = never.video(0, video)
        spans = [(a.start, a.end) for a in item.scene.actors]
        assert {window_kinds(spans, s, 5) for s in item.starts} == {"positive"}


def test_negative_clips_have_no_actor_and_positive_ones_do():
    ds = tubelet_stream(negative_fraction=0.5)
    seen = set()
    for index in range(len(ds)):
        item = ds[(0, index)]
        video = ds.stream.video(0, index // 3)
        kind = window_kinds([(a.start, a.end) for a in video.scene.actors], item["start"], 5)
        assert (len(item["labels"]) == 0) == (kind == "negative")
        seen.add(kind)
    assert seen == {"positive", "negative"}


def test_frame_stream_items():
    ds = FrameStreamDataset(CONFIG, videos_per_epoch=3, frames_per_video=4, input_size=SIZE, gap=2, seed=0,
                            negative_fraction=0.0)
    assert len(ds) == 12
    for index in range(len(ds)):
        item = ds[(1, index)]
        assert item["previous_frame"] == max(1, item["frame"] - 2)
        assert len(item["labels"]) >= 1  # no negatives asked for: every frame has an acting actor
        assert item["image"].shape == (3, *SIZE)
    assert torch.equal(ds[(1, 5)]["image"], ds[(1, 5)]["image"])
    with pytest.raises(IndexError):
        ds[(0, 12)]


def test_negative_windows_of_a_fixed_data_set(tiny_synth):
    ann = load_annotations(tiny_synth)
    videos = ann.split_videos(1, "train")
    plain = tubelet_windows(ann, videos, K=7, stride=1, subset="train")
    mixed = tubelet_windows(ann, videos, K=7, stride=1, subset="train", negative_fraction=0.25, seed=0)
    assert mixed[: len(plain)] == plain
    extra = mixed[len(plain):]
    candidates = [w for w in tubelet_windows(ann, videos, K=7, stride=1, subset="test")
                  if w.start <= ann.nframes[w.video] - 6 and window_kinds(
                      [(int(t[0, 0]), int(t[-1, 0])) for tubes in ann.gttubes[w.video].values() for t in tubes],
                      w.start, 7) == "negative"]
    assert 0 < len(extra) == min(len(candidates), round(0.25 / 0.75 * len(plain)))
    assert len(set(extra)) == len(extra)
    for window in extra:
        spans = [(int(t[0, 0]), int(t[-1, 0])) for tubes in ann.gttubes[window.video].values() for t in tubes]
        assert window_kinds(spans, window.start, 7) == "negative"
    assert tubelet_windows(ann, videos, K=7, stride=1, subset="train", negative_fraction=0.25, seed=0) == mixed
    with pytest.raises(StadError, match="negative_fraction"):
        tubelet_windows(ann, videos, K=7, stride=1, subset="train", negative_fraction=1.0)
    ds = TubeletClipDataset(ann, tiny_synth, K=7, input_size=SIZE, negative_fraction=0.25)
    assert len(ds) == len(mixed) and ds[len(ds) - 1]["labels"].numel() == 0


def test_negative_frames_of_a_fixed_data_set(tiny_synth):
    ann = load_annotations(tiny_synth)
    plain = FrameDataset(ann, tiny_synth, input_size=SIZE)
    mixed = FrameDataset(ann, tiny_synth, input_size=SIZE, negative_fraction=0.2)
    assert mixed.items[: len(plain)] == plain.items
    extra = mixed.items[len(plain):]
    assert len(extra) == round(0.2 / 0.8 * len(plain))
    assert all(mixed[len(plain) + i]["labels"].numel() == 0 for i in range(0, len(extra), 7))


def test_the_epoch_reaches_persistent_workers_of_a_fixed_data_set(tiny_synth):
    """Before EpochSampler, set_epoch never reached persistent worker copies: every epoch had the same crops."""
    ann = load_annotations(tiny_synth)
    ds = TubeletClipDataset(ann, tiny_synth, K=7, input_size=SIZE, transform=build_train_transform(SIZE))
    sampler = EpochSampler(torch.utils.data.SequentialSampler(range(4)))
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=1, collate_fn=collate_tubelets,
                        persistent_workers=True)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        epochs.append(next(iter(loader))["clip"])
    assert not torch.equal(epochs[0], epochs[1])
    assert torch.equal(epochs[1], torch.stack([ds[(1, i)]["clip"] for i in range(4)]))
