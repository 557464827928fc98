"""Decoding MOC head outputs into K-frame tubelets ("Actions as Moving Points", Li et al., ECCV 2020).

Rules read from MOC-Detector's published ``src/detector/decode.py`` and ``normal_moc_det.py`` (written anew):

1. ``p = sigmoid(logits)`` (averaged with the mirrored prediction under flip testing, as MOC's ``--flip_test``);
   keep a location only where it equals its 3x3 max-pool (peak "NMS");
2. top ``N`` over classes x locations (MOC takes the top N per class, then the top N of those: the same set);
3. for each peak at grid ``(x, y)``: frame ``i``'s centre is ``(x + dx_i, y + dy_i)``; its size ``(w_i, h_i)`` is
   read at frame ``i``'s own integer centre ``(trunc(x + dx_i), trunc(y + dy_i))`` (the middle frame at
   ``(x, y)``), clamped to the grid; box ``centre -/+ size / 2``;
4. boxes are returned on the grid (feature-map units); :func:`to_tubelets` maps them to the original video
   pixels by ``original / grid`` per axis (MOC's rule for a plain resize) or, when the clip's affine map is
   known, by inverting it, and clips them to ``[0, W0 - 1] x [0, H0 - 1]`` as MOC does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stad.structures import Tubelets


@dataclass
class DecodedTubelets:
    """Top-N tubelets of ``B`` clips, on the output grid.

    Attributes:
        scores: ``(B, N)`` float, centre heat-map probability.
        labels: ``(B, N)`` long, 0-based class.
        boxes: ``(B, N, K, 4)`` float ``x1, y1, x2, y2`` in grid units (input pixels / stride).
        grid_size: ``(h, w)`` of the grid.
    """

    scores: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    grid_size: tuple[int, int]


def heatmap_peaks(heat: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Zero every value of ``heat`` ``(B, C, h, w)`` that is not the maximum of its ``kernel x kernel`` window."""
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    return heat * (hmax == heat).to(heat.dtype)


def decode_moc(heat: torch.Tensor, movement: torch.Tensor, wh: torch.Tensor, *, top_n: int = 100) -> DecodedTubelets:
    """Top-N tubelets from head outputs.

    Args:
        heat: ``(B, C, h, w)`` centre probabilities (sigmoid of the head's logits).
        movement: ``(B, 2K, h, w)`` ``dx_i, dy_i``.
        wh: ``(B, 2K, h, w)`` ``w_i, h_i``.
        top_n: tubelets per clip (MOC: 100); fewer when ``C*h*w`` is smaller.

    Returns:
        :class:`DecodedTubelets`.
    """
    B, C, h, w = heat.shape  # noqa: N806
    K = movement.shape[1] // 2  # noqa: N806
    heat = heatmap_peaks(heat.float())
    n = min(top_n, C * h * w)
    scores, flat = torch.topk(heat.reshape(B, C * h * w), n)  # [B, n]
    labels = torch.div(flat, h * w, rounding_mode="floor")  # [B, n]
    loc = flat % (h * w)  # [B, n]
    ys = torch.div(loc, w, rounding_mode="floor").float()  # [B, n]
    xs = (loc % w).float()
    mov = movement.float().flatten(2).gather(2, loc[:, None, :].expand(-1, 2 * K, -1))  # [B, 2K, n]
    mov = mov.permute(0, 2, 1).reshape(B, n, K, 2)  # [B, n, K, 2] (dx, dy)
    cx = xs[:, :, None] + mov[..., 0]  # [B, n, K]
    cy = ys[:, :, None] + mov[..., 1]
    # Where to read each frame's size: its own integer centre (the middle frame at the peak itself).
    ix = cx.trunc().long().clamp(0, w - 1)
    iy = cy.trunc().long().clamp(0, h - 1)
    ix[:, :, K // 2] = xs.long()
    iy[:, :, K // 2] = ys.long()
    wh_loc = (iy * w + ix).repeat_interleave(2, dim=2)  # [B, n, 2K]
    size = wh.float().flatten(2).gather(2, wh_loc.permute(0, 2, 1))  # [B, 2K, n]: channel j read at wh_loc[..., j]
    # A regressed size can be negative (untrained or poor models); a box never is: clamp at 0, so x2 >= x1.
    size = size.permute(0, 2, 1).reshape(B, n, K, 2).clamp(min=0)  # [B, n, K, 2] (w, h)
    boxes = torch.stack(
        (cx - size[..., 0] / 2, cy - size[..., 1] / 2, cx + size[..., 0] / 2, cy + size[..., 1] / 2), dim=-1
    )  # [B, n, K, 4]
    return DecodedTubelets(scores=scores, labels=labels, boxes=boxes, grid_size=(h, w))


def to_tubelets(
    decoded: DecodedTubelets,
    *,
    starts: list[int],
    original_sizes: list[tuple[int, int] | None],
    affines: list[tuple[float, float, float, float] | None] | None = None,
    stride: int = 4,
) -> list[Tubelets]:
    """Per-clip :class:`stad.structures.Tubelets` in original video pixels.

    Args:
        decoded: output of :func:`decode_moc` for ``B`` clips.
        starts: first frame (from 1) of each clip.
        original_sizes: ``(H0, W0)`` of each clip's video; ``None`` keeps input pixels (grid x ``stride``)
            without clipping.
        affines: optional ``[ax, bx, ay, by]`` per clip mapping original to input pixels
            (``x_in = ax * x0 + bx``, as ``stad.data.transforms``); where given, boxes are mapped back by
            ``x0 = (grid * stride - bx) / ax`` instead of the plain-resize rule ``x0 = grid * W0 / w``.
        stride: input pixels per grid cell.

    Returns:
        ``B`` :class:`Tubelets` of ``N`` rows each (sorted by decreasing score).
    """
    h, w = decoded.grid_size
    boxes = decoded.boxes.detach().cpu().double().numpy()  # [B, N, K, 4]
    scores = decoded.scores.detach().cpu().double().numpy()
    labels = decoded.labels.detach().cpu().numpy().astype(np.int64)
    affines = affines if affines is not None else [None] * len(starts)
    out = []
    for i, (start, size, affine) in enumerate(zip(starts, original_sizes, affines, strict=True)):
        boxes_per_clip = boxes[i].copy()  # [N, K, 4]
        if affine is not None:
            ax, bx, ay, by = (float(v) for v in affine)
            x = (boxes_per_clip[..., 0::2] * stride - bx) / ax  # [N, K, 2]
            y = (boxes_per_clip[..., 1::2] * stride - by) / ay
            x = x[..., ::-1] if ax < 0 else x  # a mirrored input swaps left and right
            y = y[..., ::-1] if ay < 0 else y
            boxes_per_clip = np.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), axis=-1)
        elif size is None:
            boxes_per_clip *= stride
        else:
            H0, W0 = size  # noqa: N806
            boxes_per_clip[..., 0::2] *= W0 / w
            boxes_per_clip[..., 1::2] *= H0 / h
        if size is not None:
            H0, W0 = size  # noqa: N806
            boxes_per_clip[..., 0::2] = np.clip(boxes_per_clip[..., 0::2], 0, W0 - 1)
            boxes_per_clip[..., 1::2] = np.clip(boxes_per_clip[..., 1::2], 0, H0 - 1)
        n = len(scores[i])
        out.append(
            Tubelets(start=np.full(n, int(start), np.int64), label=labels[i].copy(), score=scores[i].copy(), boxes=boxes_per_clip)
        )
    return out
