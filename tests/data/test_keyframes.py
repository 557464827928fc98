"""The keyframe data layer (STEP / FBIL): layouts, clip rules, dataset items, proposals, STEP's augmentation."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stad.data.ava import LabelMap, read_labelmap
from stad.data.frames import read_rgb, write_jpeg
from stad.data.keyframes import (
    ACAR_NORMALIZATION,
    STEP_NORMALIZATION,
    AcarClipRule,
    CenteredClipRule,
    KeyframeDataset,
    StepClipRule,
    acar_layout,
    ava_layout,
    check_proposal_videos,
    collate_keyframes,
    detect_layout,
    enumerate_keyframes,
    foreground_keyframes,
    list_keyframes,
    make_layout,
    read_acar_annotations,
    read_keyframe_annotations,
    read_proposals_csv,
    resolve_layout,
    step_clip_frames,
    step_layout,
    step_second_samples,
    temporal_center_crop,
    write_proposals_csv,
)
from stad.data.synthetic import SynthConfig, render_dataset
from stad.data.transforms import (
    ClipSample,
    Compose,
    RandomErase,
    Resize,
    StepHorizontalFlip,
    StepPhotometricDistort,
    StepRandomSampleCrop,
    boxes_from_original,
    build_step_test_transform,
    build_step_train_transform,
)
from stad.errors import StadError
from stad.structures import KeyframeLabels

# --------------------------------------------------------------------------------------------------
# Tiny frame folders in the three layouts; every frame is a flat grey image whose level encodes it
# --------------------------------------------------------------------------------------------------

STEP_COUNTS = {900: 30, 901: 25, 902: 24, 903: 30}  # frames per second folder of the step layout


def _grey(value: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layouts")
    for f in range(1, 71):  # ava: 70 frames = seconds 0, 1 (30 each) and 2 (10)
        write_jpeg(root / "ava" / "frames" / "vidA" / f"img_{f:05d}.jpg", _grey(3 * f))
    frame = 0
    for second, count in STEP_COUNTS.items():  # step: global frame numbers 1..109 in folder order
        for j in range(count):
            frame += 1
            write_jpeg(root / "step" / "frames" / "vidS" / f"{second:05d}" / f"frame_{j:02d}.jpg", _grey(2 * frame))
    for f in range(1, 101):  # acar: 100 frames from second 900
        write_jpeg(root / "acar" / "vidC" / f"image_{f:06d}.jpg", _grey(2 * f))
    return root


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """stad synth, AVA layout: 2 videos x 121 frames at 96x128 (keyframes 1..4, person ids)."""
    root = tmp_path_factory.mktemp("synth")
    render_dataset(SynthConfig.preset("tiny", videos=2, frames=121), root, layout="ava")
    return root


def _labelmap(synth: Path) -> LabelMap:
    return read_labelmap(synth / "annotations" / "Synth_action_list.pbtxt")


def _pixels(clip: torch.Tensor, normalization) -> np.ndarray:
    """``(T, 3, H, W)`` normalised → ``(T, H, W, 3)`` pixel values."""
    mean = torch.tensor(normalization.mean).view(1, 3, 1, 1)
    std = torch.tensor(normalization.std).view(1, 3, 1, 1)
    return (clip * std + mean).permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------------------------------------------
# Clip rules (pure)
# --------------------------------------------------------------------------------------------------


def test_step_sampling_facts():
    """STEP.md §8 fact 12."""
    assert step_second_samples(30).tolist() == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27]
    assert step_second_samples(25).tolist() == list(range(0, 24, 2))
    assert step_second_samples(24).tolist() == list(range(0, 24, 2))
    assert step_second_samples(1).tolist() == [0] * 12
    assert step_second_samples(10).tolist() == [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]
    with pytest.raises(StadError, match="n=0"):
        step_second_samples(0)
    seconds, first, counts = np.arange(5), 1 + 30 * np.arange(5), np.full(5, 30)
    frames = step_clip_frames(2, seconds, first, counts)
    s30 = np.array([0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27])
    expected = np.concatenate([1 + s30[6:], 31 + s30, 61 + s30, 91 + s30[:6]])
    assert frames.shape == (36,) and frames.dtype == np.int64
    assert frames.tolist() == expected.tolist()
    assert frames[18] == 61  # the keyframe: first frame of second 2


def test_step_edge_rule():
    s30 = [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27]
    seconds, first, counts = np.array([5, 6, 7]), np.array([1, 31, 61]), np.array([30, 30, 30])
    # ts-2 and ts-1 missing: the left half repeats the keyframe (the first sample after them).
    assert step_clip_frames(5, seconds, first, counts).tolist() == [1] * 18 + [1 + s for s in s30] + [31 + s for s in s30[:6]]
    # ts+1 missing: its 6 samples repeat the last sample of ts.
    frames = step_clip_frames(7, seconds, first, counts)
    assert frames[18:].tolist() == [61 + s for s in s30] + [61 + 27] * 6
    assert frames[:18].tolist() == [1 + s for s in s30[6:]] + [31 + s for s in s30]
    # A gap: second 1 missing between 0 and the keyframe 2 repeats the keyframe frame.
    frames = step_clip_frames(2, np.array([0, 2]), np.array([1, 31]), np.array([30, 30]))
    assert frames[:18].tolist() == [1 + s for s in s30[6:]] + [31] * 12
    with pytest.raises(StadError, match=r"keyframe vidX,9: no frames of second 9"):
        step_clip_frames(9, seconds, first, counts, video="vidX")
    # Other clip sizes keep the keyframe at index `before`.
    short = step_clip_frames(6, seconds, first, counts, before=4, after=2, samples_per_second=3)  # samples 0, 10, 20
    assert short.tolist() == [1, 1, 11, 21, 31, 41] and short[4] == 31  # second 4 missing: repeats frame 1


def test_acar_temporal_center_crop():
    crop = temporal_center_crop(np.arange(16, 16 + 91))  # window mid - 45 .. mid + 45 around frame 61
    assert crop.tolist() == list(range(29, 92, 2)) and len(crop) == 32 and crop[16] == 61
    crop = temporal_center_crop(np.arange(100))  # c = 50, begin 18, end 82
    assert crop.tolist() == list(range(18, 82, 2))
    crop = temporal_center_crop(np.arange(10))  # shorter than 64: cyclic fill
    assert crop.tolist() == [i % 10 for i in range(0, 64, 2)]
    with pytest.raises(StadError, match="at least one"):
        temporal_center_crop(np.zeros(0))


# --------------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------------


def test_layout_detection_and_indexes(layouts: Path, tmp_path: Path):
    assert detect_layout(layouts / "ava", "vidA") == "ava"
    assert detect_layout(layouts / "step", "vidS") == "step"
    assert detect_layout(layouts / "acar", "vidC") == "acar"
    ava = resolve_layout(layouts / "ava", ["vidA"])
    index = ava.index("vidA")
    assert ava.name == "ava" and index.nframes == 70
    assert index.seconds.tolist() == [0, 1, 2] and index.first_frames.tolist() == [1, 31, 61] and index.counts.tolist() == [30, 30, 10]
    assert ava.frame_path("vidA", 31) == layouts / "ava" / "frames" / "vidA" / "img_00031.jpg"
    assert list_keyframes(ava, "vidA").tolist() == [0, 1, 2] and list_keyframes(ava, "vidA", first=1, last=1).tolist() == [1]
    mmaction = make_layout("ava", layouts / "ava", timestamp_start=900)  # cut videos: frame 1 = second 900
    assert mmaction.index("vidA").seconds.tolist() == [900, 901, 902]

    step = resolve_layout(layouts / "step", ["vidS"])
    index = step.index("vidS")
    assert index.seconds.tolist() == [900, 901, 902, 903] and index.counts.tolist() == [30, 25, 24, 30]
    assert index.first_frames.tolist() == [1, 31, 56, 80] and index.nframes == 109
    assert step.frame_path("vidS", 56) == layouts / "step" / "frames" / "vidS" / "00902" / "frame_00.jpg"
    assert step.frame_path("vidS", 109).name == "frame_29.jpg"
    with pytest.raises(StadError, match=r"frame 110 of vidS is outside 1\.\.109"):
        step.frame_path("vidS", 110)

    acar = make_layout("acar", layouts / "acar")
    assert acar.index("vidC").seconds.tolist() == [900, 901, 902, 903] and acar.index("vidC").counts.tolist() == [30, 30, 30, 10]
    assert acar.frame_path("vidC", 61).name == "image_000061.jpg"

    # Errors: nothing that fits, a missing video, mixed layouts, bad names.
    (tmp_path / "frames" / "vidX").mkdir(parents=True)
    (tmp_path / "frames" / "vidX" / "frame.png").write_bytes(b"")
    with pytest.raises(StadError, match=r"cannot recognise the frame layout of video 'vidX'.*holds neither.*img_%05d\.jpg.*<ts:05d>/\*\.jpg.*image_%06d\.jpg"):
        detect_layout(tmp_path, "vidX")
    with pytest.raises(StadError, match=r"vidY does not exist"):
        detect_layout(tmp_path, "vidY")
    for sub, video in (("ava", "vidA"), ("step", "vidS")):
        (tmp_path / "mixed" / "frames").mkdir(parents=True, exist_ok=True)
        (tmp_path / "mixed" / "frames" / video).symlink_to(layouts / sub / "frames" / video)
    with pytest.raises(StadError, match=r"different frame layouts \(ava: vidA; step: vidS\)"):
        resolve_layout(tmp_path / "mixed", ["vidA", "vidS"])
    with pytest.raises(StadError, match="unknown frame layout 'bogus'"):
        make_layout("bogus", tmp_path)
    with pytest.raises(StadError, match="fps and timestamp_start do not apply"):
        make_layout("step", tmp_path, fps=30)
    with pytest.raises(FileNotFoundError, match=r"frame folder not found: .*vidZ"):
        ava_layout(tmp_path).index("vidZ")


def test_clip_rules_on_layouts(layouts: Path):
    s30 = np.array([0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27])
    even = np.arange(0, 24, 2)
    clip = StepClipRule()(step_layout(layouts / "step").index("vidS"), 902)
    assert clip.keyframe_index == 18 and clip.keyframe_frame == 56
    assert clip.frames.tolist() == [*(1 + s30[6:]), *(31 + even), *(56 + even), *(80 + s30[:6])]
    acar_index = acar_layout(layouts / "acar").index("vidC")
    clip = StepClipRule()(acar_index, 902)  # second 903 has 10 frames
    assert clip.frames.tolist() == [*(1 + s30[6:]), *(31 + s30), *(61 + s30), 91, 91, 92, 93, 94, 95]
    clip = AcarClipRule()(acar_index, 902)
    assert clip.frames.tolist() == list(range(29, 92, 2)) and clip.keyframe_index == 16 and clip.keyframe_frame == 61
    clip = AcarClipRule()(acar_index, 900)  # edge: frames before 1 are clamped
    assert clip.frames.tolist() == [1] * 16 + list(range(1, 32, 2)) and clip.keyframe_index == 16
    clip = AcarClipRule(windows={("vidC", 902): (50, 20)})(acar_index, 902)  # a pickle's own window
    assert clip.frames.tolist() == [50 + i % 20 for i in range(0, 64, 2)]
    clip = CenteredClipRule(num_frames=4, frame_stride=3)(acar_index, 903)
    assert clip.frames.tolist() == [85, 88, 91, 94] and clip.keyframe_index == 2
    with pytest.raises(StadError, match=r"keyframe vidC,905: no frames of second 905"):
        AcarClipRule()(acar_index, 905)


# --------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------


def test_step_items_on_stad_synth(synth: Path):
    labelmap = _labelmap(synth)
    keyframes = read_keyframe_annotations(synth / "annotations" / "Synth_train.csv", labelmap)
    assert sorted({k.timestamp for k in keyframes}) == [1, 2, 3, 4]
    layout = resolve_layout(synth, sorted({k.video for k in keyframes}))
    ds = KeyframeDataset(
        keyframes, layout, input_size=(48, 64), num_classes=len(labelmap), transform=build_step_test_transform((48, 64))
    )
    assert len(ds) == len(keyframes) and ds.nframes == {"video_00000": 121, "video_00001": 121}
    by_key = {(k.video, k.timestamp): k for k in keyframes}
    for i in (1, 0, 3):  # video_00000 keyframes 2, 1, 4
        keyframe, item = keyframes[i], ds[i]
        n = len(keyframe.boxes)
        assert item["clip"].shape == (36, 3, 48, 64) and item["clip"].dtype == torch.float32
        assert -1.0 <= float(item["clip"].min()) and float(item["clip"].max()) <= 1.0
        assert item["frames"].tolist() == StepClipRule()(layout.index(keyframe.video), keyframe.timestamp).frames.tolist()
        assert item["keyframe_index"] == 18 and item["center_frame"] == keyframe.timestamp * 30 + 1
        assert item["frames"][18] == item["center_frame"]
        assert item["boxes"].shape == (n, 4) and item["boxes"].dtype == torch.float32
        np.testing.assert_allclose(item["boxes"].numpy(), keyframe.boxes * [64, 48, 64, 48], rtol=1e-6)
        assert item["labels"].dtype == torch.float32 and item["labels"].numpy().tolist() == keyframe.labels.astype(np.float32).tolist()
        assert item["person_ids"].dtype == torch.int64 and item["person_ids"].tolist() == keyframe.person_ids.tolist()
        assert item["neighbor_boxes"].shape == (n, 2, 4) and item["neighbor_valid"].shape == (n, 2)
        assert item["neighbor_valid"].dtype == torch.bool and item["orig_size"].tolist() == [96, 128]
        for j, offset in enumerate((-1, 1)):
            other = by_key.get((keyframe.video, keyframe.timestamp + offset))
            for a, pid in enumerate(keyframe.person_ids.tolist()):
                if other is None or pid not in other.person_ids:
                    assert not item["neighbor_valid"][a, j] and (item["neighbor_boxes"][a, j] == 0).all()
                else:
                    expected = other.boxes[list(other.person_ids).index(pid)] * [64, 48, 64, 48]
                    assert item["neighbor_valid"][a, j]
                    np.testing.assert_allclose(item["neighbor_boxes"][a, j].numpy(), expected, rtol=1e-6)
    assert ds[0]["neighbor_valid"][:, 0].sum() == 0 and ds[3]["neighbor_valid"][:, 1].sum() == 0  # ts 1 / ts 4
    assert ds[1]["neighbor_valid"].all()
    # STEP normalisation of the resized float frames: clip[18] is the keyframe's image.
    image = cv2.resize(read_rgb(layout.frame_path("video_00000", 61)).astype(np.float32), (64, 48), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(ds[1]["clip"][18].permute(1, 2, 0).numpy(), image * 2 / 255 - 1, atol=1e-5)


def test_acar_and_step_layout_items_read_the_right_frames(layouts: Path):
    keyframe = KeyframeLabels("vidC", 902, np.array([[0.25, 0.25, 0.75, 1.0]]), np.array([[True, False]]), np.array([4]))
    ds = KeyframeDataset(
        [keyframe], acar_layout(layouts / "acar"), clip_rule=AcarClipRule(), input_size=(8, 8), num_classes=2,
        normalization=ACAR_NORMALIZATION,
    )
    item = ds[0]
    assert item["clip"].shape == (32, 3, 8, 8) and item["keyframe_index"] == 16
    levels = _pixels(item["clip"], ACAR_NORMALIZATION).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(levels, 2 * np.arange(29, 92, 2), atol=2.0)  # grey level = 2 * frame
    np.testing.assert_allclose(item["boxes"].numpy(), [[2, 2, 6, 8]])
    step_kf = KeyframeLabels("vidS", 902, np.zeros((0, 4)), np.zeros((0, 2), bool), np.zeros(0, np.int64))
    item = KeyframeDataset([step_kf], step_layout(layouts / "step"), input_size=(8, 8), num_classes=2)[0]
    levels = _pixels(item["clip"], STEP_NORMALIZATION).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(levels, 2 * item["frames"].numpy(), atol=2.0)
    assert item["frames"][18] == 56 and item["boxes"].shape == (0, 4) and item["neighbor_boxes"].shape == (0, 2, 4)


_CSV = """\
video_00000,0001,0.1,0.1,0.3,0.5,1,5
video_00000,0002,0.2,0.1,0.4,0.5,1,5
video_00000,0002,0.5,0.5,0.9,0.9,2,7
video_00000,0002,0.5,0.5,0.9,0.9,3,7
video_00000,0003,0.6,0.5,0.95,0.9,2,7
video_00000,0003,0.0,0.0,0.1,0.1,2,9
"""


@pytest.fixture()
def custom(synth: Path, tmp_path: Path) -> list[KeyframeLabels]:
    (tmp_path / "ann.csv").write_text(_CSV)
    return read_keyframe_annotations(tmp_path / "ann.csv", _labelmap(synth))


def test_neighbours_move_with_flip_and_crop(synth: Path, custom: list[KeyframeLabels]):
    layout = ava_layout(synth)
    ts2 = [k for k in custom if k.timestamp == 2]
    assert ts2[0].person_ids.tolist() == [5, 7] and ts2[0].labels[1, [1, 2]].all()
    scale = np.array([64, 48, 64, 48])
    kwargs = dict(input_size=(48, 64), num_classes=12, neighbor_annotations=custom)
    item = KeyframeDataset(ts2, layout, **kwargs)[0]
    assert item["neighbor_valid"].tolist() == [[True, False], [False, True]]
    np.testing.assert_allclose(item["neighbor_boxes"][0, 0].numpy(), np.array([0.1, 0.1, 0.3, 0.5]) * scale, rtol=1e-6)
    np.testing.assert_allclose(item["neighbor_boxes"][1, 1].numpy(), np.array([0.6, 0.5, 0.95, 0.9]) * scale, rtol=1e-6)
    assert (item["neighbor_boxes"][0, 1] == 0).all() and (item["neighbor_boxes"][1, 0] == 0).all()

    flipped = KeyframeDataset(ts2, layout, transform=Compose([StepHorizontalFlip(p=1.0), Resize((48, 64))]), **kwargs)[0]
    assert flipped["neighbor_valid"].tolist() == item["neighbor_valid"].tolist()
    np.testing.assert_allclose(flipped["neighbor_boxes"][0, 0].numpy(), [64 - 0.3 * 64, 0.1 * 48, 64 - 0.1 * 64, 0.5 * 48], rtol=1e-6)
    np.testing.assert_allclose(flipped["boxes"][1].numpy(), [64 - 0.9 * 64, 0.5 * 48, 64 - 0.5 * 64, 0.9 * 48], rtol=1e-6)
    assert (flipped["neighbor_boxes"][0, 1] == 0).all() and (flipped["neighbor_boxes"][1, 0] == 0).all()

    def left_half(sample: ClipSample, rng: np.random.Generator) -> ClipSample:  # crop x 0..64 of 128, keep centres inside
        centres = (sample.boxes[:, 0] + sample.boxes[:, 2]) / 2
        cropped = StepRandomSampleCrop.apply(sample, np.array([0, 0, 64, 96]), centres < 64)
        return Resize((48, 64))(cropped, rng)

    proposals = {("video_00000", 2): np.array([[0.1, 0.1, 0.2, 0.2, 0.9], [0.6, 0.1, 0.9, 0.5, 0.8], [0.4, 0.2, 0.7, 0.6, 0.95]])}
    cropped = KeyframeDataset(ts2, layout, transform=left_half, proposals=proposals, **kwargs)[0]
    assert cropped["person_ids"].tolist() == [5] and cropped["num_dropped"] == 1  # person 7's centre x = 89.6 > 64
    assert cropped["neighbor_boxes"].shape == (1, 2, 4) and cropped["neighbor_valid"].tolist() == [[True, False]]
    np.testing.assert_allclose(cropped["neighbor_boxes"][0, 0].numpy(), [12.8, 4.8, 38.4, 24.0], rtol=1e-6)  # x: crop 1:1, y: 96 -> 48
    # Proposals: the first kept, the second outside the crop removed, the third clipped at x = 64.
    np.testing.assert_allclose(cropped["proposals"].numpy(), [[12.8, 4.8, 25.6, 9.6], [51.2, 9.6, 64.0, 28.8]], rtol=1e-6)
    np.testing.assert_allclose(cropped["proposal_scores"].numpy(), [0.9, 0.95], rtol=1e-6)


def test_enumerate_collate_and_proposals(synth: Path, custom: list[KeyframeLabels]):
    layout = ava_layout(synth)
    everything = enumerate_keyframes(layout, ["video_00000"], custom, num_classes=12, first=1)
    assert [(k.timestamp, len(k.boxes)) for k in everything] == [(1, 1), (2, 2), (3, 2), (4, 0)]
    assert everything[3].labels.shape == (0, 12) and everything[3].person_ids.dtype == np.int64
    assert [k.timestamp for k in enumerate_keyframes(layout, ["video_00000"], custom, num_classes=12, excluded={("video_00000", 3)})] == [0, 1, 2, 4]
    assert [k.timestamp for k in foreground_keyframes(everything)] == [1, 2, 3]
    proposals = {
        ("video_00000", 2): np.array([[0.1, 0.1, 0.2, 0.2, 0.9], [0.6, 0.1, 0.9, 0.5, 0.3], [0.4, 0.2, 0.7, 0.6, 0.95]]),
        ("video_00000", 1): np.zeros((0, 5)),
        ("video_00000", 3): np.array([[0.0, 0.0, 0.5, 0.5]]),  # (P, 4): score 1
    }
    ds = KeyframeDataset(everything, layout, input_size=(24, 32), num_classes=12, proposals=proposals, proposal_min_score=0.5)
    assert len(ds) == 4
    assert len(KeyframeDataset(everything, layout, input_size=(24, 32), num_classes=12, foreground_only=True)) == 3
    item = ds[1]
    np.testing.assert_allclose(item["proposals"].numpy(), [[3.2, 2.4, 6.4, 4.8], [12.8, 4.8, 22.4, 14.4]], rtol=1e-6)
    assert item["proposals"].dtype == torch.float32 and item["proposal_scores"].tolist() == pytest.approx([0.9, 0.95])
    assert ds[2]["proposal_scores"].tolist() == [1.0] and ds[3]["proposals"].shape == (0, 4)  # ts 4: none given

    batch = collate_keyframes([ds[3], ds[1], ds[2]])
    assert batch["clip"].shape == (3, 36, 3, 24, 32)
    assert batch["boxes"].shape == (3, 2, 4) and batch["labels"].shape == (3, 2, 12)
    assert batch["mask"].tolist() == [[False, False], [True, True], [True, True]]
    assert batch["person_ids"].tolist() == [[-1, -1], [5, 7], [7, 9]]
    assert batch["neighbor_boxes"].shape == (3, 2, 2, 4) and (batch["neighbor_boxes"][0] == 0).all()
    assert batch["neighbor_valid"].tolist() == [[[False, False], [False, False]], [[True, False], [False, True]], [[True, False], [False, False]]]
    assert batch["proposals"].shape == (3, 2, 4) and batch["proposal_mask"].tolist() == [[False, False], [True, True], [True, False]]
    assert batch["proposal_scores"][2].tolist() == [1.0, 0.0] and (batch["proposals"][0] == 0).all()
    assert batch["timestamp"].tolist() == [4, 2, 3] and batch["keyframe_index"].tolist() == [18] * 3
    assert batch["frames"].shape == (3, 36) and batch["video"] == ["video_00000"] * 3
    no_proposals = KeyframeDataset(everything[:2], layout, input_size=(24, 32), num_classes=12)
    with pytest.raises(StadError, match="with and without proposals"):
        collate_keyframes([ds[0], no_proposals[0]])
    loaded = list(DataLoader(no_proposals, batch_size=2, num_workers=2, collate_fn=collate_keyframes))
    assert len(loaded) == 1 and loaded[0]["mask"].tolist() == [[True, False], [True, True]]

    # Proposals naming videos outside the data set.
    extra = {**proposals, ("video_00009", 2): np.zeros((0, 5)), ("other", 1): np.zeros((0, 5))}
    with pytest.raises(StadError, match=r"proposals: 2 video\(s\) are not in the data set \(1 videos\), e.g. other, video_00009"):
        KeyframeDataset(everything, layout, input_size=(24, 32), num_classes=12, proposals=extra)
    KeyframeDataset(everything, layout, input_size=(24, 32), num_classes=12, proposals=extra, allow_extra_proposal_videos=True)
    check_proposal_videos(proposals, ["video_00000"])
    with pytest.raises(StadError, match=r"must be \(P, 5\)"):
        KeyframeDataset(everything, layout, input_size=(24, 32), num_classes=12, proposals={("video_00000", 1): np.zeros((2, 3))})


def test_bad_inputs(synth: Path, layouts: Path, tmp_path: Path, custom: list[KeyframeLabels]):
    (tmp_path / "ann.csv").write_text(_CSV)
    with pytest.raises(StadError, match=r"ann\.csv: none of its action ids \[1, 2, 3\] \(3\) is in the label map \(ids \[50, 51\] \(2\)\)"):
        read_keyframe_annotations(tmp_path / "ann.csv", LabelMap(ids=[50, 51], names=["a", "b"], label_types=[None, None]))
    partial = read_keyframe_annotations(tmp_path / "ann.csv", LabelMap(ids=[2, 50], names=["a", "b"], label_types=[None, None]))
    assert [k.labels.sum() for k in partial] == [0, 1, 2]  # unknown ids are dropped, actors kept
    with pytest.raises(StadError, match="no keyframes given to KeyframeDataset"):
        KeyframeDataset([], ava_layout(synth), num_classes=12)
    with pytest.raises(StadError, match=r"no keyframes given to KeyframeDataset \(foreground_only\)"):
        KeyframeDataset([KeyframeLabels("video_00000", 4, np.zeros((0, 4)), np.zeros((0, 12), bool), np.zeros(0))], ava_layout(synth), num_classes=12, foreground_only=True)
    with pytest.raises(StadError, match=r"keyframe video_00000,1: labels must be \(N=1, num_classes=5\)"):
        KeyframeDataset(custom, ava_layout(synth), num_classes=5)
    late = KeyframeLabels("vidA", 10, np.zeros((0, 4)), np.zeros((0, 2), bool), np.zeros(0, np.int64))
    with pytest.raises(StadError, match=r"keyframe vidA,10: no frames of second 10 in .*vidA \(the video has seconds 0\.\.2, 70 frames\)"):
        KeyframeDataset([late], ava_layout(layouts / "ava"), num_classes=2)
    with pytest.raises(FileNotFoundError, match=r"frame folder not found: .*frames/vidB"):
        KeyframeDataset([KeyframeLabels("vidB", 1, np.zeros((0, 4)), np.zeros((0, 2), bool), np.zeros(0))], ava_layout(layouts / "ava"), num_classes=2)
    # A frame missing in the middle of a video: named when a clip needs it.
    root = tmp_path / "holes"
    for f in range(1, 41):
        if f != 6:  # second 0 samples frames 1, 3, 6, 8, ...
            write_jpeg(root / "frames" / "vidH" / f"img_{f:05d}.jpg", _grey(f))
    first = KeyframeLabels("vidH", 0, np.zeros((0, 4)), np.zeros((0, 2), bool), np.zeros(0, np.int64))
    ds = KeyframeDataset([first], ava_layout(root), input_size=(8, 8), num_classes=2)
    with pytest.raises(FileNotFoundError, match=r"img_00006\.jpg"):
        ds[0]


# --------------------------------------------------------------------------------------------------
# Proposal files
# --------------------------------------------------------------------------------------------------


def test_proposals_csv_round_trip(tmp_path: Path):
    proposals = {("v", 902): np.array([[0.1, 0.2, 0.3, 0.4, 0.9], [0.5, 0.5, 0.6, 0.7, 0.25]]), ("w", 5): np.zeros((0, 5))}
    write_proposals_csv(tmp_path / "p.csv", proposals)
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "v,0902,0.1,0.2,0.3,0.4,0.9"
    back = read_proposals_csv(tmp_path / "p.csv")
    assert list(back) == [("v", 902)]
    np.testing.assert_array_equal(back[("v", 902)], proposals[("v", 902)])
    (tmp_path / "six.csv").write_text("v,0902,0.1,0.2,0.3,0.4\n\nv,902,0.2,0.2,0.3,0.4,0.5\n")
    assert read_proposals_csv(tmp_path / "six.csv")[("v", 902)].tolist() == [[0.1, 0.2, 0.3, 0.4, 1.0], [0.2, 0.2, 0.3, 0.4, 0.5]]
    (tmp_path / "bad.csv").write_text("v,0902,0.1,0.2,0.3,0.4\nv,0902,0.1,0.2\n")
    with pytest.raises(StadError, match=r"bad\.csv line 2: expected 'video_id,timestamp,x1,y1,x2,y2\[,score\]'"):
        read_proposals_csv(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("v,0902,0.1,0.2,0.3,x\n")
    with pytest.raises(StadError, match=r"nan\.csv line 1: box and score must be numbers"):
        read_proposals_csv(tmp_path / "nan.csv")
    with pytest.raises(FileNotFoundError):
        read_proposals_csv(tmp_path / "missing.csv")


def _acar_pickle(path: Path, data: list, classes: list | None = None) -> Path:
    classes = [{"id": 1, "name": "bend"}, {"id": 3, "name": "crouch"}, {"id": 4, "name": "dance"}] if classes is None else classes
    path.write_bytes(pickle.dumps((data, classes), protocol=2))
    return path


def test_acar_annotation_pickle(tmp_path: Path):
    entry = {
        "video": "vidC", "format_str": "image_%06d.jpg", "start_frame": 16, "n_frames": 91, "time": 902, "midframe": 61,
        "labels": [{"bounding_box": [0.1, 0.2, 0.5, 0.9], "label": [0, 2], "person_id": 3},
                   {"bounding_box": [0.5, 0.5, 0.7, 0.8], "label": []}],
    }
    unlabelled = {**entry, "time": 903, "start_frame": 46, "labels": [{"bounding_box": np.array([0.0, 0.1, 0.2, 0.3]), "label": []}]}
    path = _acar_pickle(tmp_path / "ann.pkl", [unlabelled, entry])
    ann = read_acar_annotations(path)
    assert ann.labelmap.ids == [1, 3, 4] and ann.labelmap.names == ["bend", "crouch", "dance"]
    assert [(k.video, k.timestamp, len(k.boxes)) for k in ann.keyframes] == [("vidC", 902, 1), ("vidC", 903, 0)]
    first = ann.keyframes[0]
    np.testing.assert_array_equal(first.boxes, [[0.1, 0.2, 0.5, 0.9]])
    assert first.labels.tolist() == [[True, False, True]] and first.person_ids.tolist() == [3]
    assert ann.keyframes[1].labels.shape == (0, 3)
    assert ann.proposals[("vidC", 902)].tolist() == [[0.1, 0.2, 0.5, 0.9, 1.0], [0.5, 0.5, 0.7, 0.8, 1.0]]
    assert ann.proposals[("vidC", 903)].shape == (1, 5)
    assert ann.windows == {("vidC", 902): (16, 91), ("vidC", 903): (46, 91)} and ann.format_strs == {"image_%06d.jpg"}
    remapped = read_acar_annotations(path, labelmap=LabelMap(ids=[4, 1], names=["dance", "bend"], label_types=[None, None]))
    assert remapped.keyframes[0].labels.tolist() == [[True, True]] and remapped.labelmap.ids == [4, 1]
    assert AcarClipRule(windows=ann.windows).windows[("vidC", 902)] == (16, 91)

    with pytest.raises(StadError, match=r"entry 0 \(vidC,902\): labels\[0\]\.label \[0, 7\] outside 0\.\.2"):
        read_acar_annotations(_acar_pickle(tmp_path / "b1.pkl", [{**entry, "labels": [{"bounding_box": [0, 0, 1, 1], "label": [0, 7]}]}]))
    with pytest.raises(StadError, match=r"entry 1: missing key\(s\) \['time'\]"):
        read_acar_annotations(_acar_pickle(tmp_path / "b2.pkl", [entry, {"video": "v", "labels": []}]))
    with pytest.raises(StadError, match=r"keyframe vidC,902 appears twice"):
        read_acar_annotations(_acar_pickle(tmp_path / "b3.pkl", [entry, entry]))
    with pytest.raises(StadError, match=r"bounding_box must be 4 finite numbers"):
        read_acar_annotations(_acar_pickle(tmp_path / "b4.pkl", [{**entry, "labels": [{"bounding_box": [0, 1], "label": [0]}]}]))
    with pytest.raises(StadError, match=r"none of the class ids \[1, 3, 4\] \(3\) is in the label map"):
        read_acar_annotations(path, labelmap=LabelMap(ids=[80], names=["x"], label_types=[None]))
    (tmp_path / "b5.pkl").write_bytes(pickle.dumps({"not": "a tuple"}))
    with pytest.raises(StadError, match=r"expected a tuple \(data, idx_to_class\), got dict"):
        read_acar_annotations(tmp_path / "b5.pkl")


# --------------------------------------------------------------------------------------------------
# STEP's augmentation
# --------------------------------------------------------------------------------------------------


def _painted(T: int = 3, H: int = 60, W: int = 80) -> tuple[np.ndarray, np.ndarray]:
    clip = np.zeros((T, H, W, 3), np.uint8)
    boxes = np.array([[10.0, 10.0, 30.0, 40.0], [50.0, 20.0, 72.0, 50.0]])
    for x1, y1, x2, y2 in boxes.astype(int):
        clip[:, y1:y2, x1:x2] = 255
    return clip, boxes


def test_step_augmentation_moves_boxes_with_pixels():
    clip, boxes = _painted()
    transform = build_step_train_transform((40, 40), photometric=False, erase=False)
    cropped = flipped = 0
    for seed in range(30):
        out = transform(ClipSample.create(clip, boxes), np.random.default_rng(seed))
        assert out.clip.shape == (3, 40, 40, 3) and out.clip.dtype == np.float32 and out.keep.sum() >= 1
        cropped += bool(out.affine[0] * 80 > 40.5 or out.affine[2] * 60 > 40.5)
        flipped += bool(out.affine[0] < 0)
        painted = boxes_from_original(boxes, out.affine, out.size)  # [2, 4] where the painted rectangles went
        np.testing.assert_allclose(out.boxes, painted[out.keep], atol=1e-9)
        inside = np.zeros((40, 40), bool)
        outside = np.ones((40, 40), bool)
        for x1, y1, x2, y2 in painted:  # 2-pixel margins for the bilinear resize
            top, bottom, left, right = int(np.ceil(y1)) + 2, int(np.floor(y2)) - 2, int(np.ceil(x1)) + 2, int(np.floor(x2)) - 2
            if top < bottom and left < right:
                inside[top:bottom, left:right] = True
            outside[max(int(y1) - 2, 0) : int(np.ceil(y2)) + 2, max(int(x1) - 2, 0) : int(np.ceil(x2)) + 2] = False
        assert (out.clip[:, inside] > 250).all() and (out.clip[:, outside] < 5).all()
    assert cropped >= 5 and flipped >= 5


def test_step_crop_keeps_a_keyframe_centre():
    clip = np.zeros((2, 100, 100, 3), np.uint8)
    boxes = np.array([[5.0, 5.0, 25.0, 25.0], [60.0, 60.0, 95.0, 95.0], [40.0, 5.0, 55.0, 20.0]])
    crop = StepRandomSampleCrop()
    cropped = dropped = 0
    for seed in range(60):
        out = crop(ClipSample.create(clip, boxes), np.random.default_rng(seed))
        H, W = out.size
        assert out.keep.sum() >= 1 and len(out.boxes) == out.keep.sum()
        ax, bx, ay, by = out.affine
        cx, cy = ax * (boxes[:, 0] + boxes[:, 2]) / 2 + bx, ay * (boxes[:, 1] + boxes[:, 3]) / 2 + by
        assert (((cx > 0) & (cx < W) & (cy > 0) & (cy < H)) == out.keep).all()  # kept = centre inside
        assert (out.boxes >= 0).all() and (out.boxes[:, [0, 2]] <= W).all() and (out.boxes[:, [1, 3]] <= H).all()
        assert W >= 30 and H >= 30 and 0.5 <= H / W <= 2.0 + 0.1
        cropped += (H, W) != (100, 100)
        dropped += int((~out.keep).sum())
    assert cropped >= 20 and dropped >= 5
    empty = ClipSample.create(clip, np.zeros((0, 4)))
    assert crop(empty, np.random.default_rng(0)) is empty


def test_step_flip_rule():
    clip = np.arange(2 * 4 * 10 * 3, dtype=np.uint8).reshape(2, 4, 10, 3)
    boxes = np.array([[1.0, 0.0, 4.0, 3.0], [0.0, 0.0, 0.0, 0.0], [6.0, 1.0, 10.0, 2.0]])
    out = StepHorizontalFlip(p=1.0)(ClipSample.create(clip, boxes), np.random.default_rng(0))
    assert out.boxes.tolist() == [[6.0, 0.0, 9.0, 3.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 4.0, 2.0]]
    assert np.array_equal(out.clip, clip[:, :, ::-1]) and out.affine.tolist() == [-1.0, 10.0, 1.0, 0.0]
    same = StepHorizontalFlip(p=0.0)(ClipSample.create(clip, boxes), np.random.default_rng(0))
    assert same.boxes.tolist() == boxes.tolist()


def test_random_erase_inside_boxes():
    clip = np.zeros((3, 50, 50, 3), np.float32)
    boxes = np.array([[10.0, 10.0, 40.0, 40.0], [45.0, 45.0, 45.0, 48.0]])  # the second has no area
    erase = RandomErase(p=1.0, noise_low=1.0, noise_high=255.0)
    as_uint8 = erase(ClipSample.create(clip.astype(np.uint8), boxes), np.random.default_rng(0)).clip  # rounded noise
    assert as_uint8.dtype == np.uint8 and as_uint8.max() > 0
    for seed in range(10):
        out = erase(ClipSample(clip=clip, boxes=boxes, visibility=np.ones(2), keep=np.ones(2, bool)), np.random.default_rng(seed))
        changed = (out.clip != 0).any(axis=-1)  # [T, H, W]
        assert (changed == changed[0]).all()  # the same pixels on every frame
        assert (out.clip == out.clip[0]).all()  # and the same noise
        ys, xs = np.nonzero(changed[0])
        assert len(ys) > 0 and ys.min() >= 10 and ys.max() < 40 and xs.min() >= 10 and xs.max() < 40
        assert 0.02 * 900 * 0.5 <= len(ys) <= 0.2 * 900 * 1.3
    assert (RandomErase(p=0.0)(ClipSample(clip=clip, boxes=boxes, visibility=np.ones(2), keep=np.ones(2, bool)), np.random.default_rng(0)).clip == 0).all()


def test_step_photometric_distort():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, size=(2, 6, 7, 3), dtype=np.uint8)
    out = StepPhotometricDistort(p=0.0)(ClipSample.create(clip, np.zeros((0, 4))), np.random.default_rng(1))
    assert out.clip.dtype == np.float32
    np.testing.assert_allclose(out.clip, clip, atol=1e-3)  # only the HSV round trip
    grey = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (40, 120, 200)])  # 3 frames of grey levels
    for seed in range(5):
        out = StepPhotometricDistort(p=1.0)(ClipSample.create(grey, np.zeros((0, 4))), np.random.default_rng(seed)).clip
        assert np.allclose(out, out[..., :1], atol=1e-3)  # grey stays grey: saturation, hue, permutation do nothing
        levels = out[:, 0, 0, 0].astype(np.float64)
        a = (levels[1] - levels[0]) / 80.0
        assert a > 0 and abs(levels[0] + a * 80 * 2 - levels[2]) < 1e-2  # brightness and contrast: affine in x
        assert not np.allclose(levels, [40, 120, 200])


def test_step_transform_is_deterministic_and_uses_no_global_rng():
    rng = np.random.default_rng(5)
    clip = rng.integers(0, 256, size=(4, 48, 64, 3), dtype=np.uint8)
    boxes = np.array([[5.0, 5.0, 30.0, 40.0], [30.0, 10.0, 60.0, 45.0]])
    transform = build_step_train_transform((32, 32))
    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state(), random.getstate()
    outputs = [transform(ClipSample.create(clip, boxes), np.random.default_rng(seed)) for seed in range(8)]
    again = [transform(ClipSample.create(clip, boxes), np.random.default_rng(seed)) for seed in range(8)]
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert random.getstate() == py_state
    for a, b in zip(outputs, again):
        assert np.array_equal(a.clip, b.clip) and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.keep, b.keep)
        assert a.clip.shape == (4, 32, 32, 3) and a.clip.min() >= 0 and a.clip.max() <= 255
    assert len({a.clip.tobytes() for a in outputs}) == 8
    test = build_step_test_transform((24, 32))(ClipSample.create(clip, boxes), np.random.default_rng(0))
    assert test.clip.dtype == np.float32 and test.clip.shape == (4, 24, 32, 3)
    np.testing.assert_allclose(test.boxes, boxes * [0.5, 0.5, 0.5, 0.5])


def test_step_training_items_through_the_dataset(synth: Path):
    labelmap = _labelmap(synth)
    keyframes = read_keyframe_annotations(synth / "annotations" / "Synth_train.csv", labelmap)
    ds = KeyframeDataset(
        keyframes, ava_layout(synth), input_size=(32, 32), num_classes=len(labelmap), foreground_only=True,
        transform=build_step_train_transform((32, 32)), seed=3,
    )
    a, b = ds[2], ds[2]
    assert torch.equal(a["clip"], b["clip"]) and torch.equal(a["boxes"], b["boxes"])
    assert a["clip"].shape == (36, 3, 32, 32) and -1.0 <= float(a["clip"].min()) and float(a["clip"].max()) <= 1.0
    assert len(a["boxes"]) >= 1 and a["neighbor_boxes"].shape == (len(a["boxes"]), 2, 4)
    nb = a["neighbor_boxes"][a["neighbor_valid"]]
    assert (nb[:, 2] > nb[:, 0]).all() and (nb >= 0).all() and (nb <= 32).all()
    assert (a["neighbor_boxes"][~a["neighbor_valid"]] == 0).all()
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["clip"], a["clip"])
