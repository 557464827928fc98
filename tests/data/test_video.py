"""PyAV decoding, timestamp resampling and frame extraction (synthetic clips and the real UCF101-24 / JHMDB ones)."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from stad.data.frames import read_rgb
from stad.data.video import DecodedFrame, count_frames, extract_frames, iter_decoded, iter_frames, resample
from stad.errors import StadError

# UCF101-24 annotated numf of YOWOv2's demo clips (SOURCES.md)
UCF_CLIPS = {
    "v_Basketball_g01_c02": 180,
    "v_Basketball_g07_c04": 101,
    "v_Biking_g01_c01": 151,
    "v_CliffDiving_g03_c01": 92,
    "v_Fencing_g01_c06": 174,
    "v_HorseRiding_g01_c03": 98,
    "v_IceDancing_g02_c05": 244,
    "v_SalsaSpin_g03_c01": 168,
    "v_SkateBoarding_g02_c01": 369,
}
COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250), (250, 0, 250), (250, 250, 250), (0, 0, 0)]


def write_clip(path: Path, colours: list[tuple[int, int, int]], *, fps: int = 10) -> Path:
    """An MPEG-4 clip of 64x48 solid-colour frames, one colour per frame."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.bit_rate = 2_000_000
        for colour in colours:
            image = np.empty((48, 64, 3), np.uint8)
            image[:] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def colour_index(image: np.ndarray) -> int:
    """Which of COLOURS a decoded frame shows (nearest mean colour)."""
    mean = image.reshape(-1, 3).mean(0)
    return int(np.argmin([np.abs(mean - c).sum() for c in COLOURS]))


def test_iter_frames_synthetic(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", COLOURS)
    frames = list(iter_frames(clip))
    assert len(frames) == len(COLOURS) == count_frames(clip)
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    assert [colour_index(f) for f in frames] == list(range(len(COLOURS)))  # RGB order, presentation order
    assert [d.time for d in iter_decoded(clip)] == [Fraction(i, 10) for i in range(len(COLOURS))]


@pytest.mark.parametrize(("fps", "expected"), [(10, list(range(8))), (5, [0, 2, 4, 6]), (20, [i // 2 for i in range(16)]), (4, [0, 2, 5, 7])])
def test_resample_by_timestamps(tmp_path, fps, expected):
    clip = write_clip(tmp_path / "c.mp4", COLOURS)
    frames = list(resample(iter_decoded(clip), fps, source_rate=Fraction(10)))
    assert [colour_index(f) for f in frames] == expected


def test_resample_fills_gaps_and_start():
    """A frame missing from the stream repeats the previous one; times before the first frame show the first."""
    images = [np.full((1, 1, 3), i, np.uint8) for i in range(3)]
    frames = [DecodedFrame(0, Fraction(1, 10), images[0]), DecodedFrame(1, Fraction(2, 10), images[1]), DecodedFrame(2, Fraction(5, 10), images[2])]
    out = [int(f[0, 0, 0]) for f in resample(iter(frames), 10, source_rate=Fraction(10))]
    assert out == [0, 0, 1, 1, 1, 2]
    assert list(resample(iter([]), 30, source_rate=Fraction(30))) == []


@pytest.mark.parametrize("name", sorted(UCF_CLIPS))
def test_real_ucf24_clips_decode_to_numf(realdata, name):
    """Raw MPEG-4 Part 2 streams named .mp4: the decoded count equals the annotated numf."""
    path = realdata / "ucf101_24/yowov2_demo_clips" / f"{name}.mp4"
    frames = iter_frames(path)
    assert next(frames).shape == (256, 340, 3)
    assert 1 + sum(1 for _ in frames) == UCF_CLIPS[name]


def test_real_jhmdb_avi_matches_frame_folder(realdata):
    """The AVI's header says 48 frames, but 8 are empty packets: decoding gives 40 frames, the 40 PNGs 1:1.

    Resampled at 30 fps by timestamps, the gaps are filled and the clip has 48 frames.
    """
    clip = realdata / "jhmdb21/clip_frames/Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2.avi"
    decoded = [f.astype(np.int16) for f in iter_frames(clip)]
    pngs = [read_rgb(realdata / f"jhmdb21/clip_frames/Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2/{i:05d}.png").astype(np.int16) for i in range(1, 41)]
    assert len(decoded) == 40
    diff = np.array([[np.abs(d - p).mean() for p in pngs] for d in decoded])  # [40, 40]
    assert np.array_equal(diff.argmin(axis=1), np.arange(40)) and diff.diagonal().max() < 3
    assert sum(1 for _ in resample(iter_decoded(clip), 30, source_rate=Fraction(30))) == 48


def test_decode_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        count_frames(tmp_path / "nope.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(StadError, match="junk.mp4"):
        count_frames(tmp_path / "junk.mp4")


def test_extract_frames_ava_resumable(tmp_path):
    write_clip(tmp_path / "videos/a.mp4", COLOURS)
    write_clip(tmp_path / "videos/b.avi", COLOURS[:4])
    (tmp_path / "videos/broken.mp4").write_bytes(b"not a video at all" * 50)
    out = tmp_path / "out"
    result = extract_frames(tmp_path / "videos", out, layout="ava", fps=20, progress=False)
    assert sorted(result.written) == ["a", "b"] and list(result.failed) == ["broken"] and result.skipped == []
    assert result.frames == {"a": 16, "b": 8}
    names = sorted(p.name for p in (out / "frames/a").iterdir())
    assert names[0] == "img_00001.jpg" and names[-1] == "img_00016.jpg" and len(names) == 16
    assert colour_index(read_rgb(out / "frames/a/img_00003.jpg")) == 1
    assert not (out / "frames/broken").exists() and not list((out / "frames").glob(".*partial"))

    # an interrupted run leaves a partial folder: redone; complete folders are skipped
    shutil.rmtree(out / "frames/b")
    (out / "frames/.b.partial").mkdir()
    (out / "frames/.b.partial/img_00009.jpg").write_bytes(b"stale")
    again = extract_frames(tmp_path / "videos", out, layout="ava", fps=20, progress=False)
    assert again.skipped == ["a"] and again.written == ["b"] and list(again.failed) == ["broken"]
    assert sorted(p.name for p in (out / "frames/b").iterdir()) == [f"img_{i:05d}.jpg" for i in range(1, 9)]
    assert not (out / "frames/.b.partial").exists()


def test_extract_frames_act_layout_nested(tmp_path):
    write_clip(tmp_path / "videos/Jump/v_Jump_g01_c01.mp4", COLOURS[:3])
    result = extract_frames(tmp_path / "videos", tmp_path / "out", layout="act", fps=None, progress=False)
    assert result.written == ["Jump/v_Jump_g01_c01"]
    folder = tmp_path / "out/rgb-images/Jump/v_Jump_g01_c01"
    assert sorted(p.name for p in folder.iterdir()) == ["00001.jpg", "00002.jpg", "00003.jpg"]
    with pytest.raises(StadError, match="unknown layout"):
        extract_frames(tmp_path / "videos", tmp_path / "out2", layout="kinetics", progress=False)
