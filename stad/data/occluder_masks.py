"""Per-video occluder masks: which pixels of each frame an occluder covers, stored beside the ACT layout.

The synthetic renderer (``stad.data.synthetic``) knows its occluders' pixels and writes them as
``<root>/occluder-masks/<video>.npz`` so that STADO's visible-region mask targets
(``stad.data.transforms.visible_mask_targets``: box minus occluder pixels) are exact without augmentation.
Real data sets have no such folder; their targets are the plain visible boxes.

File format: a compressed ``.npz`` (fixed zip time stamps, so identical masks give identical bytes) with
``bits`` = ``np.packbits(mask.reshape(-1))`` (uint8) and ``shape`` = ``(T, H, W)`` (int64); ``mask[t]`` is
frame ``t + 1``, True where an occluder covers the pixel.
Actors hiding each other do not count as occluders here.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from stad.errors import StadError

OCCLUDER_MASK_DIR = "occluder-masks"


def occluder_mask_path(root: str | Path, video: str) -> Path:
    """``<root>/occluder-masks/<video>.npz``."""
    return Path(root) / OCCLUDER_MASK_DIR / f"{video}.npz"


def write_occluder_masks(path: str | Path, masks: np.ndarray) -> Path:
    """Write ``masks`` ``(T, H, W)`` bool (True = covered by an occluder) bit-packed to ``path``."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.dtype != bool:
        raise StadError(f"occluder masks must be a (T, H, W) bool array, got shape {masks.shape} dtype {masks.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"bits": np.packbits(masks.reshape(-1)), "shape": np.asarray(masks.shape, dtype=np.int64)}
    # np.savez_compressed stamps the current time into the zip entries; a fixed stamp keeps the synthetic
    # benchmark bit-identical for a seed (ARCHITECTURE.md section 3). np.load reads the result as any .npz.
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())
    return path


def read_occluder_masks(path: str | Path, *, expected: tuple[int, int, int] | None = None) -> np.ndarray:
    """Read ``(T, H, W)`` bool occluder masks written by :func:`write_occluder_masks`.

    Args:
        path: the ``.npz`` file.
        expected: ``(T, H, W)`` the video should have (``nframes`` and ``resolution``), checked when given.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"occluder mask file not found: {path}")
    with np.load(path) as data:
        if "bits" not in data or "shape" not in data:
            raise StadError(f"{path}: not an occluder mask file (needs 'bits' and 'shape', has {sorted(data.files)})")
        shape = tuple(int(v) for v in data["shape"])
        bits = data["bits"]
    if len(shape) != 3 or bits.dtype != np.uint8 or len(bits) != -(-int(np.prod(shape)) // 8):
        raise StadError(f"{path}: shape {shape} does not match {len(bits)} packed bytes")
    if expected is not None and shape != tuple(expected):
        raise StadError(f"{path}: masks are {shape} (T, H, W) but the annotations say {tuple(expected)}")
    return np.unpackbits(bits, count=int(np.prod(shape))).astype(bool).reshape(shape)
