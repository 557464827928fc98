"""Drawing (stad.viz.draw) and MP4 writing/reading (stad.viz.video)."""

from __future__ import annotations

import numpy as np
import pytest

from stad.errors import StadError
from stad.viz.draw import TubeOverlay, draw_box, draw_boxes, draw_tubes, identity_color, tile_videos
from stad.viz.video import available_encoder, read_video, write_video


def test_identity_colors_are_distinct_and_stable():
    colors = [identity_color(i) for i in range(12)]
    assert len(set(colors)) == 12
    assert identity_color(3) == colors[3]
    assert all(0 <= c <= 255 for color in colors for c in color)


def test_draw_box_outlines_the_box_pixels():
    image = np.zeros((20, 30, 3), np.uint8)
    draw_box(image, np.array([2.0, 3.0, 10.0, 12.0]), color=(255, 0, 0))
    drawn = image.any(axis=-1)
    ys, xs = np.nonzero(drawn)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (2, 3, 10, 12)
    assert not drawn[5:11, 4:9].any()  # the inside stays untouched
    assert (image[3, 5] == [255, 0, 0]).all()


def test_draw_boxes_with_text_and_bad_lengths():
    image = np.zeros((60, 80, 3), np.uint8)
    draw_boxes(image, np.array([[10, 20, 40, 50], [45, 25, 70, 55]]), identities=np.array([7, 8]),
               texts=["walk", "run"])
    assert (image[20:51, 10] == identity_color(7)).all(axis=-1).sum() > 20
    assert image[:20].any()  # the label strip sits above the first box
    with pytest.raises(ValueError, match="2 boxes but 1 texts"):
        draw_boxes(image, np.zeros((2, 4)), texts=["x"])
    with pytest.raises(ValueError, match="uint8"):
        draw_box(np.zeros((5, 5, 3)), np.zeros(4), color=(1, 1, 1))


def test_draw_tubes_draws_only_on_the_tube_frames_and_upscales():
    frames = np.zeros((5, 16, 20, 3), np.uint8)
    tube = TubeOverlay(identity=1, boxes=np.array([[2, 1, 1, 8, 9], [3, 2, 2, 9, 10]], np.float32), text="jump",
                       frame_texts=["v=1.00", "v=0.50"])
    out = draw_tubes(frames, [tube], scale=3)
    assert out.shape == (5, 48, 60, 3) and not frames.any()  # the input is not modified
    assert [bool(f.any()) for f in out] == [False, True, True, False, False]
    ys, xs = np.nonzero((out[1] == identity_color(1)).all(axis=-1)[20:])  # below the label strip
    assert xs.min() == 3 and xs.max() == 26  # pixels 1..8 at scale 3 span 3..26
    with pytest.raises(ValueError, match="outside the video"):
        draw_tubes(frames, [TubeOverlay(identity=0, boxes=np.array([[6, 1, 1, 2, 2]]))])
    with pytest.raises(ValueError, match="frame texts"):
        draw_tubes(frames, [TubeOverlay(identity=0, boxes=np.array([[1, 1, 1, 2, 2]]), frame_texts=[])])


def test_tile_videos_places_each_video_and_pads_time():
    a = np.full((3, 4, 5, 3), 10, np.uint8)
    b = np.full((2, 4, 5, 3), 20, np.uint8)
    c = np.full((3, 4, 5, 3), 30, np.uint8)
    grid = tile_videos([a, b, c], columns=2, gap=1)
    assert grid.shape == (3, 9, 11, 3)
    assert (grid[0, :4, :5] == 10).all() and (grid[0, :4, 6:] == 20).all() and (grid[0, 5:, :5] == 30).all()
    assert (grid[2, :4, 6:] == 0).all()  # b has ended
    assert (grid[:, 5:, 6:] == 0).all()  # the empty cell
    with pytest.raises(ValueError, match="one frame size"):
        tile_videos([a, np.zeros((1, 5, 5, 3), np.uint8)], columns=2)


def _smooth_video(T: int, H: int, W: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    frames = [np.stack([(x * 4 + 10 * t) % 256, (y * 4) % 256, np.full_like(x, 128)], axis=-1) for t in range(T)]
    return np.stack(frames).astype(np.uint8)


@pytest.mark.parametrize("codec", [None, "mpeg4"])
def test_write_and_read_back_a_video(tmp_path, codec):
    video = _smooth_video(12, 32, 48)
    path = write_video(tmp_path / "sub" / "v.mp4", video, fps=10, codec=codec)
    back = read_video(path)
    assert back.shape == video.shape
    assert np.abs(back.astype(int) - video.astype(int)).mean() < 8


def test_odd_sizes_are_padded_and_errors_leave_no_file(tmp_path):
    assert available_encoder() in ("libx264", "mpeg4")
    back = read_video(write_video(tmp_path / "odd.mp4", _smooth_video(4, 31, 47)))
    assert back.shape == (4, 32, 48, 3)
    with pytest.raises(StadError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [])
    assert not (tmp_path / "empty.mp4").exists()
    with pytest.raises(StadError, match="frame 2 is"):
        write_video(tmp_path / "mixed.mp4", [np.zeros((8, 8, 3), np.uint8), np.zeros((10, 8, 3), np.uint8)])
    assert not (tmp_path / "mixed.mp4").exists()
    with pytest.raises(FileNotFoundError, match="video not found"):
        read_video(tmp_path / "missing.mp4")
