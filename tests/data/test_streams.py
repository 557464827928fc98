"""Flow-stream inputs: stacking at the video end, flip negating the x flow, flow on the fly == `stad flow`."""

from __future__ import annotations

import numpy as np
import pytest

from stad.data.datasets import TubeletClipDataset
from stad.data.flow import compute_dataset_flow, flow_to_image, image_to_flow, write_flow_image
from stad.data.streams import (
    FLOW_X_CHANNEL,
    StreamSpec,
    flow_images_from_frames,
    read_flow_images,
    read_stream_frames,
    stack_flow,
)
from stad.data.transforms import ClipSample, HorizontalFlip
from stad.errors import StadError
from stad.structures import TubeAnnotations


def test_stream_spec_channels_and_flip_channels():
    assert StreamSpec("rgb").channels == 3 and StreamSpec("rgb").flip_invert_channels == []
    flow = StreamSpec("flow", flow_frames=5)
    assert flow.channels == 15
    assert flow.flip_invert_channels == [0, 3, 6, 9, 12]
    fused = StreamSpec("fused", flow_frames=2)
    assert fused.channels == 9 and fused.flip_invert_channels == [3, 6]
    with pytest.raises(StadError, match="stream must be one of"):
        StreamSpec("depth")


def test_stack_flow_clamps_at_the_video_end():
    images = [np.full((2, 3, 3), t, np.uint8) for t in range(1, 5)]  # frames 1..4, value = frame number
    stacks = list(stack_flow(iter(images), 3))
    assert len(stacks) == 4
    firsts = [[int(s[0, 0, 3 * j]) for j in range(3)] for s in stacks]
    assert firsts == [[1, 2, 3], [2, 3, 4], [3, 4, 4], [4, 4, 4]]
    assert list(stack_flow(iter([]), 3)) == []
    one = list(stack_flow(iter(images[:1]), 2))
    assert len(one) == 1 and one[0].shape == (2, 3, 6)


def _flow_video(tmp_path, nframes=6, size=(8, 10)):
    """An ACT layout with one video whose flow image t has x = +t px everywhere (and one actor tube)."""
    from stad.data.frames import write_jpeg

    video = "v1"
    for t in range(1, nframes + 1):
        write_jpeg(tmp_path / "rgb-images" / video / f"{t:05d}.jpg", np.full((*size, 3), 20 * t, np.uint8))
        flow = np.zeros((*size, 2), np.float32)
        flow[..., 0], flow[..., 1] = float(t), -1.0
        write_flow_image(tmp_path / "brox-images" / video / f"{t:05d}.jpg", flow_to_image(flow))
    tube = np.array([[f, 1, 1, 6, 5] for f in range(1, nframes + 1)], float)
    ann = TubeAnnotations(labels=["a"], gttubes={video: {0: [tube]}}, nframes={video: nframes},
                          resolution={video: size}, train_videos=[[video]], test_videos=[[video]])
    return ann, video


def test_dataset_flow_clip_matches_stream_reader_at_the_video_end(tmp_path):
    ann, video = _flow_video(tmp_path)
    ds = TubeletClipDataset(ann, tmp_path, K=3, input_size=(8, 10), stream="flow", flow_frames=5)
    clip = ds.read_clip(video, np.array([4, 5, 6]))  # [K, H, W, 15]
    streamed = list(read_stream_frames(tmp_path, video, 6, StreamSpec("flow", 5)))
    for k, frame in enumerate((4, 5, 6)):
        np.testing.assert_array_equal(clip[k], streamed[frame - 1])
    # frame 6 stacks flow images 6, 6, 6, 6, 6 (clamped); decoded x flow ~ 6 px
    x = image_to_flow(streamed[5][..., 3:6])[..., 0]
    assert np.allclose(x, 6.0, atol=0.2)


def test_flipped_flow_clip_negates_the_x_flow(tmp_path):
    ann, video = _flow_video(tmp_path)
    spec = StreamSpec("flow", flow_frames=2)
    ds = TubeletClipDataset(ann, tmp_path, K=2, input_size=(8, 10), stream="flow", flow_frames=2)
    clip = ds.read_clip(video, np.array([2, 3]))  # [2, H, W, 6]
    sample = ClipSample.create(clip, np.array([[[1, 1, 6, 5], [1, 1, 6, 5]]], float), np.ones((1, 2)))
    flipped = HorizontalFlip(p=1.0, invert_channels=spec.flip_invert_channels)(sample, np.random.default_rng(0)).clip
    for j in range(2):
        img, out = clip[..., 3 * j:3 * j + 3], flipped[..., 3 * j:3 * j + 3]
        before = np.stack([image_to_flow(f) for f in img])  # [K, H, W, 2]
        after = np.stack([image_to_flow(f) for f in out])
        # decoded x flow is exactly negated (and mirrored), y is only mirrored, magnitude bytes unchanged
        np.testing.assert_array_equal(after[..., 0], -before[:, :, ::-1, 0])
        np.testing.assert_array_equal(after[..., 1], before[:, :, ::-1, 1])
        np.testing.assert_array_equal(out[..., 2], img[:, :, ::-1, 2])
        assert FLOW_X_CHANNEL == 0 and np.all(after[..., 0] < 0)


def test_byte_flip_equals_the_mapping_of_the_negated_flow_off_ties():
    # 255 - round(127.5 + a) == round(127.5 - a) unless 127.5 + a is a .5 tie (then they differ by one step,
    # and both decode symmetrically: (255 - p) - 127.5 == -(p - 127.5)).
    v = np.linspace(-25, 25, 1001, dtype=np.float32)
    flow = np.stack([v, np.zeros_like(v)], -1)[None]  # [1, N, 2]
    p = flow_to_image(flow)[..., 0].astype(int)
    q = flow_to_image(-flow)[..., 0].astype(int)
    ties = np.isclose(np.mod(127.5 + v * 127.5 / 20, 1.0), 0.5)
    assert ties.any() and (~ties).sum() > 900
    assert np.all((255 - p == q)[0][~ties])
    assert np.all(np.abs((255 - p) - q) <= 1)


def test_on_the_fly_flow_equals_stad_flow_files(tmp_path):
    from stad.data.frames import write_jpeg

    rng = np.random.default_rng(0)
    base = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    frames = [np.roll(base, shift=t, axis=1) for t in range(5)]  # moves 1 px right per frame
    for t, frame in enumerate(frames, 1):
        write_jpeg(tmp_path / "rgb-images" / "v" / f"{t:05d}.jpg", frame)
    ann = TubeAnnotations(labels=["a"], gttubes={"v": {}}, nframes={"v": 5}, resolution={"v": (30, 40)},
                          train_videos=[["v"]], test_videos=[[]])
    from stad.data.frames import read_rgb

    decoded = [read_rgb(tmp_path / "rgb-images" / "v" / f"{t:05d}.jpg") for t in range(1, 6)]
    for method in ("dis", "farneback"):
        result = compute_dataset_flow(ann, tmp_path, method=method, overwrite=True, progress=False)
        assert result.written == ["v"]
        stored = list(read_flow_images(tmp_path, "v", 5))
        live = list(flow_images_from_frames(iter(decoded), method=method))
        assert len(live) == 5
        for a, b in zip(stored, live):
            np.testing.assert_array_equal(a, b)
    assert np.median(image_to_flow(live[1])[..., 0]) > 0.5  # rightward motion seen


def test_flow_on_the_fly_checks_frame_sizes():
    frames = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)]
    with pytest.raises(StadError, match="differ in size"):
        list(flow_images_from_frames(iter(frames)))
    one = list(flow_images_from_frames(iter(frames[:1]), jpeg_quality=None))
    assert len(one) == 1 and np.all(one[0] == 128)
