"""Target assignment for MOC ("Actions as Moving Points", Li et al., ECCV 2020), computed under no_grad.

Rules read from MOC-Detector's published ``src/datasets/sample/sampler.py`` and ``src/MOC_utils/gaussian_hm.py``
(written anew, vectorised over actors). All quantities are in feature-map (output) units: a box in input
pixels is scaled by ``output_size / input_size`` (= 1/4 for a stride-4 map of an input divisible by 4).
Naming: ``B`` clips, ``N`` padded actors per clip, ``K`` frames, ``C`` classes, ``h x w`` output grid.

For each valid actor (a K-frame tubelet, middle frame ``K // 2``):

* heat-map: a Gaussian peak of value 1 on channel ``label`` at the middle frame's integer centre
  ``c = floor(centre)``, radius ``r = max(0, int(gaussian_radius(ceil(h), ceil(w))))`` (CenterNet's rule with
  min overlap 0.7, kept exactly as the published code computes it), sigma ``(2r + 1) / 6``, truncated to the
  ``(2r+1)^2`` window; overlapping peaks take the maximum;
* index: the flat location ``c_y * w + c_x`` of the middle-frame centre;
* movement: ``centre_i - c`` for every frame ``i`` (2K values ``dx_0, dy_0, ...``), so the middle frame's
  entry is the sub-pixel offset;
* wh: ``(x2 - x1, y2 - y1)`` for every frame, supervised at frame ``i``'s own integer centre
  (``index_all``), clamped to the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stad.errors import StadError

_EPS64 = 2.220446049250313e-16  # np.finfo(float64).eps: the published Gaussian zeroes values below eps * max


@dataclass
class MOCTargets:
    """Training targets of a batch (``B`` clips, ``N`` actor slots, ``K`` frames).

    Attributes:
        heatmap: ``(B, C, h, w)`` float in [0, 1], exactly 1 at the centres.
        index: ``(B, N)`` long, flat middle-frame centre location ``y * w + x`` (0 for empty slots).
        index_all: ``(B, N, K)`` long, flat integer centre location of each frame's box (clamped to the grid).
        movement: ``(B, N, 2K)`` float ``dx_i, dy_i`` (feature-map units).
        wh: ``(B, N, 2K)`` float ``w_i, h_i`` (feature-map units).
        mask: ``(B, N)`` bool, which slots hold an actor.
    """

    heatmap: torch.Tensor
    index: torch.Tensor
    index_all: torch.Tensor
    movement: torch.Tensor
    wh: torch.Tensor
    mask: torch.Tensor


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's Gaussian radius for boxes of ``height x width`` (any shape, float), as the published code has it.

    The three quadratic cases (both corners inside, both outside, one in one out) each give a radius; the
    minimum is returned. The published code divides by 2 instead of ``2a`` in the first two cases; kept, since
    the release models were trained with it.
    """
    height = height.double()
    width = width.double()
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def draw_gaussians(
    *, centers: torch.Tensor, radii: torch.Tensor, channels: torch.Tensor, num_channels: int, size: tuple[int, int]
) -> torch.Tensor:
    """Draw truncated Gaussian peaks into ``num_channels`` maps of ``size = (h, w)``, taking the maximum.

    Args:
        centers: ``(M, 2)`` long integer ``(x, y)`` grid locations (inside the grid).
        radii: ``(M,)`` long radius ``r >= 0`` (window ``(2r+1)^2``, sigma ``(2r+1)/6``).
        channels: ``(M,)`` long, the map each peak goes to (``0 .. num_channels-1``).
        num_channels: number of maps.
        size: ``(h, w)``.

    Returns:
        ``(num_channels, h, w)`` float32, 0 where no peak reaches.
    """
    h, w = size
    device = centers.device
    heatmap = torch.zeros(num_channels, h * w, dtype=torch.float32, device=device)
    if len(centers) == 0:
        return heatmap.view(num_channels, h, w)
    sigma = (2 * radii.double() + 1) / 6  # [M]
    dx = torch.arange(w, device=device)[None, :] - centers[:, 0:1]  # [M, w]
    dy = torch.arange(h, device=device)[None, :] - centers[:, 1:2]  # [M, h]
    gx = torch.exp(-(dx.double() ** 2) / (2 * sigma[:, None] ** 2)) * (dx.abs() <= radii[:, None])  # [M, w]
    gy = torch.exp(-(dy.double() ** 2) / (2 * sigma[:, None] ** 2)) * (dy.abs() <= radii[:, None])  # [M, h]
    peaks = gy[:, :, None] * gx[:, None, :]  # [M, h, w]
    peaks = torch.where(peaks < _EPS64, torch.zeros_like(peaks), peaks).float()
    rows = channels[:, None].expand(-1, h * w)  # [M, h*w]
    heatmap.scatter_reduce_(0, rows, peaks.reshape(len(centers), h * w), "amax", include_self=True)
    return heatmap.view(num_channels, h, w)


@torch.no_grad()
def build_moc_targets(
    *,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    num_classes: int,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
) -> MOCTargets:
    """MOC targets from padded tubelet boxes.

    Args:
        boxes: ``(B, N, K, 4)`` float ``x1, y1, x2, y2`` in input pixels (padded slots ignored).
        labels: ``(B, N)`` long, 0-based class (padded slots ignored).
        valid: ``(B, N)`` bool, which slots hold an actor.
        num_classes: ``C``.
        input_size: ``(H, W)`` of the network input in pixels.
        output_size: ``(h, w)`` of the stride-4 output grid.

    Returns:
        :class:`MOCTargets` on ``boxes.device``.

    Raises:
        StadError: bad shapes, a label outside ``0 .. C-1``, a box with ``x2 < x1`` or ``y2 < y1``, or a
            middle-frame centre outside the input, naming the clip, actor and frame.
    """
    if boxes.dim() != 4 or boxes.shape[-1] != 4:
        raise StadError(f"boxes must have shape (B, N, K, 4), got {tuple(boxes.shape)}")
    B, N, K, _ = boxes.shape  # noqa: N806
    if labels.shape != (B, N) or valid.shape != (B, N):
        raise StadError(f"labels and valid must have shape {(B, N)}, got {tuple(labels.shape)} and {tuple(valid.shape)}")
    H, W = input_size  # noqa: N806
    h, w = output_size
    device = boxes.device
    valid = valid.bool()
    sel = valid.nonzero(as_tuple=False)  # [M, 2] (clip, actor)
    tube = boxes[sel[:, 0], sel[:, 1]].double()  # [M, K, 4] input pixels
    lab = labels[sel[:, 0], sel[:, 1]].long()  # [M]
    if len(sel):
        bad = (lab < 0) | (lab >= num_classes)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise StadError(f"labels: clip {int(sel[i, 0])} actor {int(sel[i, 1])} has label {int(lab[i])}, expected 0..{num_classes - 1}")
        inverted = (tube[..., 2] < tube[..., 0]) | (tube[..., 3] < tube[..., 1])  # [M, K]
        if inverted.any():
            i, k = (int(v) for v in inverted.nonzero()[0])
            raise StadError(
                f"boxes: clip {int(sel[i, 0])} actor {int(sel[i, 1])} frame {k} has x2 < x1 or y2 < y1: {tube[i, k].tolist()}"
            )
    scale = torch.tensor([w / W, h / H, w / W, h / H], dtype=torch.float64, device=device)
    tube = tube * scale  # [M, K, 4] output units
    centre = torch.stack(((tube[..., 0] + tube[..., 2]) / 2, (tube[..., 1] + tube[..., 3]) / 2), dim=-1)  # [M, K, 2]
    size = torch.stack((tube[..., 2] - tube[..., 0], tube[..., 3] - tube[..., 1]), dim=-1)  # [M, K, 2] (w, h)
    key = K // 2
    key_int = centre[:, key].float().to(torch.int64)  # [M, 2] truncation as the published float32 -> int32 cast
    outside = (key_int[:, 0] < 0) | (key_int[:, 0] > w) | (key_int[:, 1] < 0) | (key_int[:, 1] > h)
    if outside.any():
        i = int(outside.nonzero()[0])
        raise StadError(
            f"boxes: clip {int(sel[i, 0])} actor {int(sel[i, 1])} has its middle-frame box "
            f"{(tube[i, key] / scale).tolist()} centred outside the {W}x{H} input"
        )
    key_int = torch.minimum(key_int, torch.tensor([w - 1, h - 1], device=device))  # a centre on the far border
    radius = gaussian_radius(torch.ceil(size[:, key, 1]), torch.ceil(size[:, key, 0]))
    radius = torch.clamp(radius.to(torch.int64), min=0)  # [M]
    heatmap = draw_gaussians(
        centers=key_int, radii=radius, channels=sel[:, 0] * num_classes + lab, num_channels=B * num_classes, size=(h, w)
    ).view(B, num_classes, h, w)

    all_int = centre.float().to(torch.int64)  # [M, K, 2]
    all_int[..., 0].clamp_(0, w - 1)
    all_int[..., 1].clamp_(0, h - 1)
    index = torch.zeros(B, N, dtype=torch.int64, device=device)
    index_all = torch.zeros(B, N, K, dtype=torch.int64, device=device)
    movement = torch.zeros(B, N, 2 * K, dtype=torch.float32, device=device)
    wh = torch.zeros(B, N, 2 * K, dtype=torch.float32, device=device)
    index[sel[:, 0], sel[:, 1]] = key_int[:, 1] * w + key_int[:, 0]
    index_all[sel[:, 0], sel[:, 1]] = all_int[..., 1] * w + all_int[..., 0]
    movement[sel[:, 0], sel[:, 1]] = (centre - key_int[:, None, :].double()).reshape(-1, 2 * K).float()
    wh[sel[:, 0], sel[:, 1]] = size.reshape(-1, 2 * K).float()
    return MOCTargets(heatmap=heatmap, index=index, index_all=index_all, movement=movement, wh=wh, mask=valid.clone())
