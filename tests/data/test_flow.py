"""Optical flow (OpenCV DIS / Farneback), the ACT flow-image encoding and the resumable `stad flow` run."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stad.cli import main as cli_main
from stad.data.flow import (PARTIAL_SUFFIX, compute_dataset_flow, compute_flow, flow_to_image, image_to_flow,
                            read_flow_image, write_flow_image)
from stad.data.frames import act_frame_path, read_rgb
from stad.data.synthetic import SynthConfig, render_dataset
from stad.errors import StadError


def textured(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB smooth random texture (blurred noise, full contrast)."""
    noise = np.random.default_rng(seed).uniform(0, 255, (height, width)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255
    return np.repeat(smooth.astype(np.uint8)[..., None], 3, axis=2)


@pytest.mark.parametrize("method", ["dis", "farneback"])
@pytest.mark.parametrize("shift", [(3, -2), (-1, 2)])
def test_translation_gives_shift(method: str, shift: tuple[int, int]) -> None:
    dx, dy = shift
    prev = textured()
    nxt = np.roll(prev, shift=(dy, dx), axis=(0, 1))  # prev[y, x] moves to nxt[y + dy, x + dx]
    flow = compute_flow(prev, nxt, method=method)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    inner = flow[16:-16, 16:-16]  # away from the wrapped border
    assert abs(np.median(inner[..., 0]) - dx) < 0.5
    assert abs(np.median(inner[..., 1]) - dy) < 0.5


def test_identical_frames_give_zero_flow_and_gray_input() -> None:
    frame = textured()
    flow = compute_flow(frame[..., 0], frame[..., 0], method="dis")  # (H, W) gray is accepted
    assert np.abs(flow).max() < 0.05


def test_compute_flow_rejects_bad_input() -> None:
    frame = textured()
    with pytest.raises(StadError, match="unknown flow method 'tvl1'"):
        compute_flow(frame, frame, method="tvl1")
    with pytest.raises(StadError, match="differ in size"):
        compute_flow(frame, frame[:50], method="dis")
    with pytest.raises(StadError, match="uint8"):
        compute_flow(frame.astype(np.float32), frame, method="dis")


def test_flow_to_image_mapping() -> None:
    # x, y values at the ends and middle of the range; beyond the bound they saturate
    flow = np.array([[[0.0, 0.0], [20.0, -20.0], [30.0, -25.0], [3.0, 4.0]]], np.float32)  # [1, 4, 2]
    image = flow_to_image(flow, bound=20.0)
    assert image.shape == (1, 4, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [128, 128, 128]  # 127.5 rounds half to even
    assert image[0, 1, :2].tolist() == [255, 0]
    assert image[0, 2].tolist() == [255, 0, 255]
    # (3, 4): magnitude 5 -> 127.5 + 5 * 6.375 = 159.375 -> 159
    assert image[0, 3].tolist() == [round(127.5 + 3 * 6.375), round(127.5 + 4 * 6.375), 159]
    with pytest.raises(StadError, match="bound must be > 0"):
        flow_to_image(flow, bound=0)
    with pytest.raises(StadError, match=r"shape \(H, W, 2\)"):
        flow_to_image(flow[..., :1])


@pytest.mark.parametrize("bound", [20.0, 5.0])
def test_image_round_trip_within_quantisation(bound: float) -> None:
    flow = np.random.default_rng(1).uniform(-bound, bound, (16, 24, 2)).astype(np.float32)
    back = image_to_flow(flow_to_image(flow, bound=bound), bound=bound)
    assert back.shape == flow.shape and back.dtype == np.float32
    assert np.abs(back - flow).max() <= bound / 255 + 1e-5


def test_flow_image_file_has_act_byte_layout(tmp_path: Path) -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 30, 128, 220  # x, y, magnitude
    path = tmp_path / "00001.jpg"
    write_flow_image(path, image)
    raw = cv2.imread(str(path))  # OpenCV memory order, as MOC/ACT read brox-images
    assert np.abs(raw.astype(int) - [30, 128, 220]).max() <= 2
    assert np.abs(read_flow_image(path).astype(int) - image).max() <= 2


def tiny_set(root: Path) -> list[str]:
    ann = render_dataset(SynthConfig.preset("tiny", videos=2, frames=12), root)
    return ann.videos


def mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted((root / "brox-images").rglob("*.jpg"))}


def test_dataset_flow_writes_resumes_and_redoes_partial(tmp_path: Path) -> None:
    from stad.data.act import load_act

    videos = tiny_set(tmp_path)
    ann = load_act(next(tmp_path.glob("*-GT.pkl")))
    result = compute_dataset_flow(ann, tmp_path, method="dis", bound=20.0, progress=False)
    assert sorted(result.written) == videos and not result.failed and not result.skipped
    for video in videos:
        files = sorted(act_frame_path(tmp_path, video, 1, "flow").parent.iterdir())
        assert [f.name for f in files] == [f"{t:05d}.jpg" for t in range(1, 13)]
        assert result.frames[video] == 12
        # the last frame repeats the flow of frame T - 1 (same bytes)
        assert files[-1].read_bytes() == files[-2].read_bytes()
    # frame 1 holds the flow of RGB frame 1 -> 2 (up to quantisation and JPEG error)
    video = videos[0]
    expected = compute_flow(read_rgb(act_frame_path(tmp_path, video, 1)), read_rgb(act_frame_path(tmp_path, video, 2)))
    stored = image_to_flow(read_flow_image(act_frame_path(tmp_path, video, 1, "flow")))
    assert np.median(np.abs(stored - np.clip(expected, -20, 20))) < 0.3

    before = mtimes(tmp_path)
    again = compute_dataset_flow(ann, tmp_path, method="dis", progress=False)
    assert sorted(again.skipped) == videos and not again.written
    assert mtimes(tmp_path) == before

    # a killed run: the final folder is gone and a (complete-looking) temporary folder is left
    final_dir = act_frame_path(tmp_path, video, 1, "flow").parent
    partial_dir = final_dir.with_name(final_dir.name + PARTIAL_SUFFIX)
    final_dir.rename(partial_dir)
    (partial_dir / "00003.jpg").write_bytes(b"half written")
    redo = compute_dataset_flow(ann, tmp_path, method="farneback", progress=False)
    assert redo.written == [video] and redo.skipped == [videos[1]]
    assert not partial_dir.exists()
    assert read_flow_image(final_dir / "00003.jpg").shape == (96, 128, 3)

    # an incomplete final folder is redone too; overwrite recomputes complete ones
    (final_dir / "00012.jpg").unlink()
    assert compute_dataset_flow(ann, tmp_path, method="dis", progress=False).written == [video]
    assert sorted(compute_dataset_flow(ann, tmp_path, method="dis", overwrite=True, progress=False).written) == videos


def test_cli_reports_corrupt_frame_and_continues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    videos = tiny_set(tmp_path)
    bad, good = videos
    act_frame_path(tmp_path, bad, 5).write_bytes(b"not a jpeg")
    assert cli_main(["flow", str(tmp_path), "--no-progress", "--method", "farneback"]) == 1
    captured = capsys.readouterr()
    assert f"failed: {bad}:" in captured.err and "00005.jpg" in captured.err
    assert "1 written (12 flow images), 0 skipped (complete), 1 failed" in captured.out
    assert len(list(act_frame_path(tmp_path, good, 1, "flow").parent.glob("*.jpg"))) == 12
    bad_dir = act_frame_path(tmp_path, bad, 1, "flow").parent
    assert not bad_dir.exists() and not bad_dir.with_name(bad_dir.name + PARTIAL_SUFFIX).exists()
    # the good video is skipped on the rerun, the bad one still fails
    assert cli_main(["flow", str(tmp_path), "--no-progress"]) == 1
    assert "0 written (0 flow images), 1 skipped (complete), 1 failed" in capsys.readouterr().out


def test_cli_needs_one_ground_truth_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["flow", str(tmp_path)]) == 2
    assert "expected exactly one *-GT.pkl" in capsys.readouterr().err
    assert cli_main(["flow", str(tmp_path / "missing")]) == 2
    assert "data set folder not found" in capsys.readouterr().err


def test_flow_stream_of_the_tubelet_dataset_reads_x_y_magnitude(tmp_path: Path) -> None:
    """The flow clip's channels are (x, y, magnitude) of each stacked flow image, as read_flow_image returns."""
    from stad.data.datasets import IMAGENET_MEAN, IMAGENET_STD, TubeletClipDataset
    from stad.data.flow import read_flow_image

    ann = render_dataset(SynthConfig.preset("tiny", videos=4, frames=12), tmp_path)
    compute_dataset_flow(ann, tmp_path, progress=False)
    video = ann.split_videos(1, "test")[0]
    dataset = TubeletClipDataset(ann, tmp_path, split=1, subset="test", K=3, input_size=(96, 128), stream="flow",
                                 flow_frames=2)
    item = next(dataset[i] for i in range(len(dataset)) if dataset[i]["video"] == video and dataset[i]["start"] == 1)
    clip = item["clip"].numpy()  # [K, 3 * flow_frames, H, W], normalised
    expected = read_flow_image(tmp_path / "brox-images" / video / "00002.jpg")  # frame 1, second stacked image
    for c in range(3):
        raw = clip[0, 3 + c] * IMAGENET_STD[c] + IMAGENET_MEAN[c]
        np.testing.assert_allclose(raw * 255, expected[..., c], atol=1e-3)
