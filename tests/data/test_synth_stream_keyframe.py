"""The keyframe training stream (STEP, FBIL): stream items equal the items that ``KeyframeDataset`` reads from the same
videos written in the AVA layout, are deterministic per key, use the data set's label map and honour
``negative_fraction``; the keyframe family trains on them with ``data.options.train_stream``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stad.data.synthetic as synthetic
from stad.config import config_from_dict
from stad.data.ava import LabelMap, read_labelmap
from stad.data.keyframes import (
    KeyframeDataset,
    StepClipRule,
    ava_layout,
    read_keyframe_annotations,
)
from stad.data.synth_stream import KeyframeStreamDataset, ava_frame_index, ava_labelmap
from stad.data.synthetic import SynthConfig, keyframe_labels, render_dataset, render_scene
from stad.data.transforms import build_step_test_transform, build_step_train_transform
from stad.errors import StadError

SIZE = (64, 64)
CONFIG = SynthConfig.preset("tiny", videos=4, frames=91)  # keyframes at seconds 1, 2, 3; video 3 is a test video
EPOCH = 3


def stream_dataset(config: SynthConfig = CONFIG, **kwargs) -> KeyframeStreamDataset:
    options = dict(videos_per_epoch=4, input_size=SIZE, transform=build_step_test_transform(SIZE), seed=7)
    return KeyframeStreamDataset(config, **{**options, **kwargs})


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """``render_dataset(layout="ava")`` of CONFIG whose video ``i`` is stream video ``i`` of epoch EPOCH: the real
    writer (frames, CSV, label map) run on the stream's scenes."""
    stream = stream_dataset().stream
    root = tmp_path_factory.mktemp("stream_ava")

    def stream_video(cfg, index, *, return_masks=False):
        return render_scene(stream.video(EPOCH, index).scene, return_masks=return_masks)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic, "render_video", stream_video)
        render_dataset(CONFIG, root, layout="ava")
    labelmap = read_labelmap(root / "annotations" / "Synth_action_list.pbtxt")
    train = read_keyframe_annotations(root / "annotations" / "Synth_train.csv", labelmap)
    return root, labelmap, train


def fixed_dataset(written, transform) -> KeyframeDataset:
    root, labelmap, train = written
    return KeyframeDataset(train, ava_layout(root), clip_rule=StepClipRule(), input_size=SIZE,
                           num_classes=len(labelmap), transform=transform, seed=7, foreground_only=True,
                           neighbor_annotations=train)


def assert_same_item(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        if isinstance(value, torch.Tensor):
            assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
        else:
            assert ours[key] == value, key


def test_a_stream_item_is_the_item_read_from_the_video_written_in_the_ava_layout(written):
    root, labelmap, train = written
    fixed = fixed_dataset(written, build_step_test_transform(SIZE))
    position = {(k.video, k.timestamp): i for i, k in enumerate(fixed.keyframes)}
    ours = stream_dataset(labelmap=labelmap)
    compared = 0
    for index in range(3 * ours.stream.clips_per_video):  # the 3 training videos (video 3 is written to val)
        item = ours[(EPOCH, index)]
        assert item["video"] == ours.stream.name(EPOCH, index // 2)
        assert_same_item(item, fixed[position[(item["video"], item["timestamp"])]])
        compared += 1
    assert compared == 6
    # every annotated keyframe of the stream is the CSV's, and the frame index is the layout's on disk
    by_key = {(k.video, k.timestamp): k for k in train}
    for v in range(3):
        video = ours.stream.video(EPOCH, v)
        assert sorted(video.keyframes) == [1, 2, 3]
        for second, keyframe in video.keyframes.items():
            csv = by_key[(keyframe.video, second)]
            np.testing.assert_array_equal(keyframe.boxes, csv.boxes)
            np.testing.assert_array_equal(keyframe.labels, csv.labels)
            np.testing.assert_array_equal(keyframe.person_ids, csv.person_ids)
        disk = fixed.frame_indexes[video.scene.name]
        index = ava_frame_index(video.scene.name, CONFIG.frames, CONFIG.fps)
        for field in ("seconds", "first_frames", "counts"):
            np.testing.assert_array_equal(getattr(index, field), getattr(disk, field))
        assert (index.nframes, index.fps, index.timestamp_start) == (disk.nframes, disk.fps, disk.timestamp_start)


def test_the_training_augmentation_draws_as_on_the_fixed_data(written):
    """With STEP's training augmentation, a stream item equals KeyframeDataset.make_item of the frames on disk under
    the same (epoch, index) draw: the stream feeds the same pixels and boxes into the same item code."""
    _, labelmap, _ = written
    transform = build_step_train_transform(SIZE)
    fixed = fixed_dataset(written, transform)
    ours = stream_dataset(labelmap=labelmap, transform=transform)
    for index in (0, 3):
        item = ours[(EPOCH, index)]
        keyframe = next(k for k in fixed.keyframes if (k.video, k.timestamp) == (item["video"], item["timestamp"]))
        frames = fixed.clip_frames(keyframe)
        expected = fixed.make_item(keyframe, frames, fixed.read_clip(keyframe.video, frames.frames), fixed.neighbors,
                                   None, epoch=EPOCH, index=index)
        assert_same_item(item, expected)
        assert not torch.equal(item["clip"], ours[(EPOCH + 1, index)]["clip"])


def test_same_key_same_item_other_epoch_or_video_other_item():
    first, again = stream_dataset(), stream_dataset()
    item = first[(0, 0)]
    assert_same_item(again[(0, 0)], item)
    assert len(first) == 8 and first[(0, 1)]["video"] == item["video"]  # keyframes 0 and 1 of one video
    assert first[(0, 1)]["timestamp"] != item["timestamp"]  # distinct seconds while the video has enough
    for other in (first[(1, 0)], first[(0, 2)]):  # another epoch, another video
        assert other["video"] != item["video"]
        assert not torch.equal(other["clip"], item["clip"])
    assert stream_dataset(seed=8)[(0, 0)]["video"] == item["video"]  # same name, other training seed: other scene
    assert not torch.equal(stream_dataset(seed=8)[(0, 0)]["clip"], item["clip"])
    with pytest.raises(IndexError, match="outside the stream's 8 items"):
        first[(0, 8)]


def test_labels_follow_the_data_sets_label_map(written):
    _, labelmap, _ = written
    assert (labelmap.ids, labelmap.names) == (ava_labelmap(CONFIG).ids, ava_labelmap(CONFIG).names)
    # a label map of two classes in another order: columns follow it, other labels are dropped, actors kept
    sub = LabelMap(ids=[9, 1], names=["stand", "walk"], label_types=[None, None])
    ours = stream_dataset(labelmap=sub)
    assert ours.num_classes == 2 and ours.labelmap is sub
    for index in range(len(ours)):
        video, keyframe = ours.keyframe((0, index))
        rendered = render_scene(video.scene, frames=[keyframe.timestamp * 30 + 1])
        names = keyframe_labels(rendered, keyframe.timestamp * 30 + 1, fps=30)
        expected = [[("stand" in n), ("walk" in n)] for n in names]
        np.testing.assert_array_equal(keyframe.labels, expected)
        assert ours[(0, index)]["labels"].shape == (len(names), 2)
    with pytest.raises(StadError, match="label map id 1 is 'run'"):
        stream_dataset(labelmap=LabelMap(ids=[1], names=["run"], label_types=[None]))


def all_idle(labels: np.ndarray) -> bool:
    return not labels[:, : len(CONFIG.classes)].any()  # no pose class: every actor stands


def test_negative_fraction_sets_the_share_of_all_idle_keyframes():
    never = stream_dataset(videos_per_epoch=24, negative_fraction=0.0)
    often = stream_dataset(videos_per_epoch=24, negative_fraction=0.9)
    idle_never = [all_idle(never.keyframe((0, i))[1].labels) for i in range(len(never))]
    idle_often = [all_idle(often.keyframe((0, i))[1].labels) for i in range(len(often))]
    assert not any(idle_never)
    assert sum(idle_often) >= 12  # ~24 expected: every video has an all-idle second (3: frame 91, after the actions)
    item = often[(0, idle_often.index(True))]  # the item carries the keyframe's labels
    assert all_idle(item["labels"].numpy()) and len(item["labels"]) > 0
    with pytest.raises(StadError, match="negative_fraction"):
        stream_dataset(negative_fraction=1.0)


TINY_STEP = {"channel_divisor": 8, "fc_dim": 16, "bottleneck_mid": 32, "bottleneck_out": 128, "pool_size": 4}


def step_config(root, out, **options):
    return config_from_dict({
        "data": {"kind": "synthetic", "root": str(root), "options": {"preset": "tiny", **options},
                 "input_size": list(SIZE), "batch_size": 2, "num_workers": 0},
        "model": {"name": "step", "backbone": "i3d", "options": dict(TINY_STEP)},
        "train": {"seed": 0, "device": "cpu", "output_dir": str(out)},
    })


def test_the_keyframe_family_trains_a_tiny_step_on_the_stream(written, tmp_path):
    from stad.engine.families import get_family
    from stad.models.registry import build_model

    root, _, _ = written
    family = get_family("step")
    cfg = step_config(root, tmp_path, train_stream=True, stream_videos=3, stream_clips=2, negative_fraction=0.5)
    data = family.load_data(cfg, progress=False)
    cfg = family.resolve_model_config(cfg, data)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    loader = family.build_train_loader(cfg, data, model)
    dataset = loader.dataset
    assert isinstance(dataset, KeyframeStreamDataset) and len(dataset) == 6
    assert dataset.labelmap is data.labelmap and dataset.stream.config == CONFIG
    assert dataset.stream.negative_fraction == 0.5 and dataset.seed == 0
    batch = next(iter(loader))
    assert batch["clip"].shape == (2, 36, 3, *SIZE) and batch["labels"].shape[-1] == len(data.labelmap)
    assert batch["video"] == [dataset.stream.name(0, 0)] * 2  # the stream's order: both keyframes of video 0
    model.train()
    losses = model(batch)
    assert torch.isfinite(losses["loss"]) and float(losses["loss"].detach()) > 0
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_stream_options_of_the_keyframe_family_are_checked(written, tmp_path):
    from stad.data.keyframes import write_proposals_csv
    from stad.engine.families import get_family

    root, _, _ = written
    family = get_family("step")
    cfg = step_config(root, tmp_path, negative_fraction=0.5)  # without the stream: nothing to apply it to
    with pytest.raises(StadError, match="negative_fraction.*train_stream: true"):
        family.build_train_loader(cfg, family.load_data(cfg, progress=False), None)
    proposals = tmp_path / "proposals.csv"
    write_proposals_csv(proposals, {("stream_e0003_0000000", 1): np.array([[0.1, 0.1, 0.5, 0.5, 0.9]])})
    cfg = step_config(root, tmp_path, train_stream=True, proposals_train=str(proposals))
    with pytest.raises(StadError, match="without person proposals"):
        family.build_train_loader(cfg, family.load_data(cfg, progress=False), None)
    cfg = step_config(root, tmp_path, stream_videos=2)
    with pytest.raises(StadError, match="need data.options.train_stream: true"):
        family.build_train_loader(cfg, family.load_data(cfg, progress=False), None)
