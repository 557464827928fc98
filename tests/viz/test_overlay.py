"""Heat-map overlay of predicted attention masks (stad detect --show-masks)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stad.viz.draw import overlay_heatmaps


def test_blend_is_the_colour_map_of_the_resized_mask() -> None:
    frames = np.full((2, 8, 12, 3), 100, np.uint8)
    heat = np.zeros((2, 2, 3), np.float32)
    heat[0, 0, 0] = 1.0  # top-left cell hot on frame 1
    heat[1] = np.nan  # frame 2 has no mask
    out = overlay_heatmaps(frames, heat, alpha=0.5)
    assert out.shape == frames.shape and out.dtype == np.uint8
    jet = cv2.cvtColor(cv2.applyColorMap(np.array([[0, 255]], np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0]
    np.testing.assert_allclose(out[0, 7, 11], 0.5 * 100 + 0.5 * jet[0].astype(float), atol=1)  # cold corner: blue
    np.testing.assert_allclose(out[0, 0, 0], 0.5 * 100 + 0.5 * jet[1].astype(float), atol=1)  # hot corner: red
    np.testing.assert_array_equal(out[1], frames[1])  # NaN: left as is
    np.testing.assert_array_equal(frames, 100)  # input untouched


def test_bad_inputs_raise() -> None:
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="heat maps for 2 frames"):
        overlay_heatmaps(frames, np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="uint8 frames"):
        overlay_heatmaps(frames.astype(np.float32), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmaps(frames, np.zeros((2, 2, 2)), alpha=2.0)
