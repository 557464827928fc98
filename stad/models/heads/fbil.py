"""FBIL's head (Chen et al., "Foreground/Background-Masked Interaction Learning for Spatio-temporal Action
Detection", ACM MM 2023) and the linear baseline, written anew from ``shared/methods/FBIL.md`` §3-§4 (facts
read in the public FBI-Learning / ACAR-Net code; no code was copied). ACAR-Net's HR2O head is in
:mod:`stad.models.heads.acar`.

All heads share one interface: the backbone's pathway features ``[slow (B, Cs, Ts, h, w), fast (B, Cf, Tf, h, w)]``
(any number of pathways with the same ``B, h, w``), the RoIs ``(R, 5)`` and the per-clip valid sizes; they return
per-RoI logits ``(R, num_classes)``. Letters: ``B`` clips, ``R`` RoIs (actors), ``n`` RoIs of one clip, ``D``
``reduce_dim``, ``S = h * w`` context tokens of the (batch-padded) feature map.

RoIs are rows ``[clip_index, x1, y1, x2, y2]`` with the box normalised to ``[0, 1]`` of the **padded** clip
(the batch's common frame, FBIL's neck output); ``valid_sizes`` ``(B, 2)`` rows ``[w_frac, h_frac]`` give the
fraction of the padded frame that holds each clip (FBIL's ``sizes_before_padding``; 1 without padding). The
unpadded ("effective") map of clip b is ``eff_h = ceil(h * h_frac)``, ``eff_w = ceil(w * w_frac)``.

FBILHead::

    pathways [B, C_p, T_p, h, w] ─mean over T─▶ concat [B, ΣC_p, h, w]
        ─conv_reduce 1x1 (no bias)─▶ F [B, D, h, w]
      ├─ RoIAlign 7x7 (feature coords x*w, y*h) ─max-pool─▶ actor vectors A [R, D]
      └─ per clip with n > 0: tokens [S, D] + 2-D sine positions (on the eff map), padded cells masked
           ─feature_encoder (e_depth post-norm Transformer layers)─▶ memory [B', S, D]  (once per clip)
    masks per clip from its actors' boxes (rule §4.1): M_glob (β 0.2, δ 1.0), M_loc (β 0.9, δ 0.2)  [B, S]
    A as a 1-token query, memory of its clip as keys/values:
      local_atten   (l_depth x [self-attn → cross-attn with M_glob | padding → FFN]) ─▶ Z_fg [R, D]
      context_atten (c_depth x [self-attn → cross-attn with M_loc  | padding → FFN]) ─▶ Z_bg [R, D]
    AFA: w = softmax(weight_linear(A)) [R, 2];  Z = norm(w0 * Z_fg + w1 * Z_bg)
    logits = fc(cat[A, Z])  [R, num_classes]  (Linear 2D -> K, no bias)

The branch wiring is FBIL's, names swapped as there (sic): ``local_atten`` sees the actor region (the
"foreground"), ``context_atten`` mostly the surroundings (the "background"). Module names follow FBIL's
state-dict keys (``conv_reduce``, ``feature_encoder.{self_atten,ffn}.{l}``, ``{local,context}_atten.{self_atten,
cross_atten,ffn}.{l}``, ``weight_linear.layers.{0,1,2}``, ``norm``, ``fc``), so an FBIL checkpoint's head keys
(after removing the ``module.head.module.`` prefix) load directly.

Our decisions (FBIL.md §4.2): Q1 masks use the RoIAlign feature coordinates by default
(``compat_mask_coords=True`` reproduces FBIL's eff-size scaling); Q2 each clip's context is encoded once and
broadcast to its actors, clips padded to a common map with a padding mask; Q3 masks are exact-count random
subsets chosen by random keys + rank per region, vectorised; the keys are a hash of (seed, branch, cell), with
one seed per clip: drawn from a ``torch.Generator`` when no seeds are given in training, given by the caller
(e.g. a hash of (video, timestamp)) or 0 at evaluation, so evaluation does not depend on batching or order.
Also ours: a row whose every unpadded key is masked gets its region's nearest cell back (FBIL: NaN); region
bounds tolerate 1e-4 of a cell of float error; ``conv_reduce`` is a ``Conv2d`` (weight ``[D, ΣC, 1, 1]``) and
the attention layers also drop attention weights (DETR layers' ``dropout``), both inferred, not read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

_M32 = 0xFFFFFFFF
_HASH_MUL = 0x45D9F3B  # < 2**31: a 32-bit value times it stays inside int64
_EFF_TOL = 1e-4  # ceil(h * frac - tol): a fraction like 10/14 times 14 must not round up to 11
_REGION_TOL = 1e-4  # region bounds: int(x + tol), ceil(x - tol), so float noise (x = 5.0000002) cannot add a cell


# ---------------------------------------------------------------------------------------------------------------
# shared RoI path
# ---------------------------------------------------------------------------------------------------------------


def pool_pathways(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Average every pathway over time and concatenate the channels (FBIL's ``AdaptiveAvgPool3d((1, h, w))``).

    Args:
        features: pathway maps ``[B, C_p, T_p, h, w]`` with the same ``B, h, w`` (slow, fast).

    Returns:
        ``[B, ΣC_p, h, w]``.
    """
    if isinstance(features, torch.Tensor) or len(features) == 0:
        raise TypeError(f"Expected a list of pathway tensors [B, C, T, h, w], got {type(features).__name__}.")
    shapes = [tuple(f.shape) for f in features]
    if any(len(s) != 5 for s in shapes) or len({(s[0], s[3], s[4]) for s in shapes}) != 1:
        raise ValueError(f"Expected pathways [B, C, T, h, w] with equal B, h, w, got shapes {shapes}.")
    return torch.cat([f.mean(dim=2) for f in features], dim=1)  # [B, ΣC, h, w]


def check_rois(rois: torch.Tensor, num_clips: int) -> torch.Tensor:
    """Validate ``rois`` ``(R, 5)`` ``[clip_index, x1, y1, x2, y2]`` and return the clip indices ``(R,)`` int64."""
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"Expected rois of shape [R, 5] (clip_index, x1, y1, x2, y2), got {tuple(rois.shape)}.")
    clip_index = rois[:, 0].long()  # [R]
    if rois.shape[0] and (int(clip_index.min()) < 0 or int(clip_index.max()) >= num_clips):
        raise ValueError(f"RoI clip indices must lie in [0, {num_clips}), got {clip_index.unique().tolist()}.")
    return clip_index


def check_valid_sizes(valid_sizes: torch.Tensor | None, num_clips: int, device: torch.device) -> torch.Tensor:
    """``valid_sizes`` ``(B, 2)`` ``[w_frac, h_frac]`` in (0, 1], or all ones when None; returned as float64."""
    if valid_sizes is None:
        return torch.ones((num_clips, 2), dtype=torch.float64, device=device)
    if valid_sizes.shape != (num_clips, 2):
        raise ValueError(
            f"Expected valid_sizes of shape [{num_clips}, 2] (w_frac, h_frac), got {tuple(valid_sizes.shape)}."
        )
    sizes = valid_sizes.to(device=device, dtype=torch.float64)
    if not bool(((sizes > 0) & (sizes <= 1 + _EFF_TOL)).all()):
        raise ValueError(f"valid_sizes must lie in (0, 1], got {sizes.tolist()}.")
    return sizes


def effective_sizes(valid_sizes: torch.Tensor, map_size: tuple[int, int]) -> torch.Tensor:
    """Unpadded feature-map size of each clip: ``[ceil(h * h_frac), ceil(w * w_frac)]``.

    Args:
        valid_sizes: ``(B, 2)`` ``[w_frac, h_frac]`` (FBIL's ``sizes_before_padding``).
        map_size: ``(h, w)`` of the batch's padded feature map.

    Returns:
        ``(B, 2)`` int64 ``[eff_h, eff_w]``, each in ``[1, h]`` / ``[1, w]``.
    """
    h, w = map_size
    frac = valid_sizes.to(torch.float64)
    eff_h = torch.ceil(frac[:, 1] * h - _EFF_TOL).clamp(1, h)
    eff_w = torch.ceil(frac[:, 0] * w - _EFF_TOL).clamp(1, w)
    return torch.stack((eff_h, eff_w), dim=1).long()  # [B, 2]


def padding_cells(eff_sizes: torch.Tensor, map_size: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` bool, True on the cells outside each clip's ``eff_h x eff_w`` top-left block."""
    h, w = map_size
    ys = torch.arange(h, device=eff_sizes.device).view(1, h, 1)
    xs = torch.arange(w, device=eff_sizes.device).view(1, 1, w)
    return (ys >= eff_sizes[:, 0].view(-1, 1, 1)) | (xs >= eff_sizes[:, 1].view(-1, 1, 1))  # [B, h, w]


def roi_actor_vectors(fmap: torch.Tensor, rois: torch.Tensor, roi_size: int) -> torch.Tensor:
    """RoIAlign ``roi_size x roi_size`` on feature coordinates + spatial max-pool (FBIL / ACAR-Net).

    Args:
        fmap: ``[B, D, h, w]`` feature map.
        rois: ``(R, 5)`` ``[clip_index, x1, y1, x2, y2]`` normalised to the padded frame; scaled here by
            ``(w, h)`` (not in place), then ``roi_align`` with spatial_scale 1, sampling_ratio -1, aligned False.
        roi_size: output cells per side (7).

    Returns:
        ``[R, D]`` actor vectors.
    """
    h, w = fmap.shape[-2:]
    scale = rois.new_tensor([1.0, w, h, w, h])
    boxes = (rois * scale).to(fmap.dtype)  # [R, 5] feature coordinates
    pooled = roi_align(fmap, boxes, (roi_size, roi_size), spatial_scale=1.0, sampling_ratio=-1, aligned=False)
    return pooled.amax(dim=(2, 3))  # [R, D]


# ---------------------------------------------------------------------------------------------------------------
# sine positions and masks (pure functions)
# ---------------------------------------------------------------------------------------------------------------


def sine_position_embedding(
    valid: torch.Tensor, num_pos_feats: int, *, temperature: float = 1e4, scale: float = 2 * math.pi, eps: float = 1e-6
) -> torch.Tensor:
    """DETR's normalised 2-D sine embedding, computed over each clip's unpadded cells.

    For a valid cell at (row, col) of a clip whose valid block is ``eff_h x eff_w``:
    ``y_e = (row + 1) / (eff_h + eps) * scale``, ``x_e = (col + 1) / (eff_w + eps) * scale``; in each
    ``num_pos_feats`` block channel ``k`` is ``sin(e / T^(2*floor(k/2)/num_pos_feats))`` for even ``k`` and
    ``cos(...)`` for odd ``k``; channels ``[0, num_pos_feats)`` from ``y_e``, ``[num_pos_feats, 2*num_pos_feats)``
    from ``x_e``. Values on padded cells are meaningless (they are masked everywhere).

    Args:
        valid: ``(B, h, w)`` bool, True on the unpadded cells (a top-left block per clip).
        num_pos_feats: channels per axis (``D / 2``; even).
        temperature: ``T`` (default 1e4).
        scale: (default 2π).
        eps: (default 1e-6).

    Returns:
        ``(B, 2 * num_pos_feats, h, w)`` float32; ``P[b, k, y, x]``.
    """
    if num_pos_feats % 2:
        raise ValueError(f"num_pos_feats must be even (sin/cos pairs), got {num_pos_feats}.")
    y_embed = valid.cumsum(1, dtype=torch.float32)  # [B, h, w]  row + 1 on valid cells
    x_embed = valid.cumsum(2, dtype=torch.float32)  # [B, h, w]
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    k = torch.arange(num_pos_feats, dtype=torch.float32, device=valid.device)
    dim_t = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / num_pos_feats)  # [npf]
    pos_y = y_embed[..., None] / dim_t  # [B, h, w, npf]
    pos_x = x_embed[..., None] / dim_t
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)  # interleave sin/cos
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)  # [B, 2*npf, h, w]


def mask_regions(
    rois: torch.Tensor,
    num_clips: int,
    map_size: tuple[int, int],
    eff_sizes: torch.Tensor,
    *,
    compat_mask_coords: bool = False,
) -> torch.Tensor:
    """The mask region of every clip (FBIL.md §4.1), as inclusive integer cell bounds.

    Box coordinates: normalised box x ``w`` / ``h`` of the padded map (the RoIAlign coordinates; default), or
    x ``eff_w`` / ``eff_h`` with ``compat_mask_coords=True`` (FBIL's quirk Q1). A clip with ``n > 1`` RoIs
    takes the union box of its actors, ``[int(min x1), int(min y1), ceil(max x2), ceil(max y2)]``; a clip
    with one RoI its box doubled about the centre, ``[cx - bw, cy - bh, cx + bw, cy + bh]``, clipped to
    ``[0, eff_w] x [0, eff_h]`` before int/ceil (``int`` truncates toward zero, as Python's). A cell
    ``(x, y)`` is inside iff ``x1 <= x <= x2`` and ``y1 <= y <= y2``. [D] int/ceil allow 1e-4 of a cell of
    float error (``int(x + 1e-4)``, ``ceil(x - 1e-4)``): the same box reached through another normalisation
    (another padded size, one clip alone) must give the same region; FBIL differs only for a bound within
    1e-4 above an integer.

    Args:
        rois: ``(R, 5)`` ``[clip_index, x1, y1, x2, y2]`` normalised to the padded frame.
        num_clips: ``B``.
        map_size: ``(h, w)`` of the padded feature map.
        eff_sizes: ``(B, 2)`` int64 ``[eff_h, eff_w]``.
        compat_mask_coords: FBIL's coordinates (default False).

    Returns:
        ``(B, 4)`` int64 ``[x1, y1, x2, y2]``; a clip without RoIs gets the empty region ``[0, 0, -1, -1]``.
    """
    clip_index = check_rois(rois, num_clips)
    device = rois.device
    if rois.shape[0] == 0:
        return torch.tensor([[0, 0, -1, -1]], dtype=torch.int64, device=device).repeat(num_clips, 1)
    eff = eff_sizes.to(device=device, dtype=torch.float64)[clip_index]  # [R, 2]  (eff_h, eff_w)
    boxes = rois[:, 1:].to(torch.float64)  # [R, 4]
    if compat_mask_coords:
        sx, sy = eff[:, 1], eff[:, 0]
    else:
        h, w = map_size
        sx = torch.full_like(eff[:, 0], float(w))
        sy = torch.full_like(eff[:, 0], float(h))
    x1, y1, x2, y2 = boxes[:, 0] * sx, boxes[:, 1] * sy, boxes[:, 2] * sx, boxes[:, 3] * sy  # [R] each

    counts = torch.bincount(clip_index, minlength=num_clips)  # [B]
    single = counts[clip_index] == 1  # [R]  the clip's only actor
    bw, bh = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    dx1 = (cx - bw).clamp(min=0).minimum(eff[:, 1])  # doubled box, clipped to [0, eff_w] x [0, eff_h]
    dy1 = (cy - bh).clamp(min=0).minimum(eff[:, 0])
    dx2 = (cx + bw).clamp(min=0).minimum(eff[:, 1])
    dy2 = (cy + bh).clamp(min=0).minimum(eff[:, 0])
    x1, y1 = torch.where(single, dx1, x1), torch.where(single, dy1, y1)
    x2, y2 = torch.where(single, dx2, x2), torch.where(single, dy2, y2)

    def reduce(values: torch.Tensor, how: str) -> torch.Tensor:
        out = torch.zeros(num_clips, dtype=torch.float64, device=device)
        return out.scatter_reduce(0, clip_index, values, reduce=how, include_self=False)  # [B]

    region = torch.stack(
        (
            torch.trunc(reduce(x1, "amin") + _REGION_TOL),
            torch.trunc(reduce(y1, "amin") + _REGION_TOL),
            torch.ceil(reduce(x2, "amax") - _REGION_TOL),
            torch.ceil(reduce(y2, "amax") - _REGION_TOL),
        ),
        dim=1,
    ).long()  # [B, 4]
    empty = torch.tensor([0, 0, -1, -1], dtype=torch.int64, device=device)
    return torch.where((counts > 0)[:, None], region, empty)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing function on int64 tensors (values stay in ``[0, 2^32)``, no int64 overflow)."""
    x = x & _M32
    x = (((x >> 16) ^ x) * _HASH_MUL) & _M32
    x = (((x >> 16) ^ x) * _HASH_MUL) & _M32
    return (x >> 16) ^ x


def cell_keys(seeds: torch.Tensor, salt: int, map_size: tuple[int, int]) -> torch.Tensor:
    """Pseudo-random ranking keys for every cell: a hash of ``(seed, salt, row, col)``.

    The key of a cell depends only on the clip's seed, the salt and the cell's (row, col), never on the
    batch, the padded map size or the device.

    Args:
        seeds: ``(B,)`` int64 seeds (any value).
        salt: separates independent draws from one seed (the two branches use 0 and 1).
        map_size: ``(h, w)``.

    Returns:
        ``(B, h, w)`` int64 keys in ``[0, 2^32)``.
    """
    h, w = map_size
    s = seeds.to(torch.int64)
    base = _hash32(_hash32(s & _M32) ^ ((s >> 32) & _M32))  # [B]
    base = _hash32(base ^ _hash32(torch.full_like(base, salt + 0x9E37)))
    ys = torch.arange(h, device=s.device, dtype=torch.int64).view(h, 1)
    xs = torch.arange(w, device=s.device, dtype=torch.int64).view(1, w)
    cell = _hash32(ys * 65536 + xs)  # [h, w]
    return _hash32(_hash32(base.view(-1, 1, 1) ^ cell) + base.view(-1, 1, 1))  # [B, h, w]


def _choose_exact(keys: torch.Tensor, eligible: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per row, the ``floor(fraction * m)`` eligible cells with the largest keys (``m`` eligible cells).

    Args:
        keys: ``(B, S)`` int64 ``>= 0``.
        eligible: ``(B, S)`` bool.

    Returns:
        ``(B, S)`` bool with exactly ``floor(fraction * m_b)`` True in row b, all eligible.
    """
    num_rows, num_cells = keys.shape
    m = eligible.sum(dim=1)  # [B]
    k = torch.floor(m.to(torch.float64) * fraction).long()  # [B]  same float64 product as Python's
    ranked = torch.where(eligible, keys, torch.full_like(keys, -1))  # ineligible cells rank last
    order = torch.argsort(ranked, dim=1, descending=True, stable=True)  # [B, S]
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(num_cells, device=keys.device).expand(num_rows, -1))
    return eligible & (rank < k[:, None])


def random_cell_masks(
    regions: torch.Tensor,
    eff_sizes: torch.Tensor,
    map_size: tuple[int, int],
    *,
    beta: float,
    delta: float,
    seeds: torch.Tensor,
    salt: int = 0,
) -> torch.Tensor:
    """FBIL's random key-padding mask of each clip (FBIL.md §4.1), with our all-masked-row guard.

    Within the clip's ``eff_h x eff_w`` map, exactly ``floor(beta * |inside|)`` cells inside the region and
    ``floor(delta * |outside|)`` cells outside it are chosen uniformly without replacement (the cells with the
    largest :func:`cell_keys`). Guard [D]: if every unpadded cell ends up masked (only possible when the region
    misses the map, or with ``beta = 1``), the region's nearest unpadded cell is unmasked, so attention never
    sees an all-masked row (PyTorch returns NaN there). Padded cells are not marked; OR the padding in.

    Args:
        regions: ``(B, 4)`` int64 inclusive cell bounds ``[x1, y1, x2, y2]`` (:func:`mask_regions`).
        eff_sizes: ``(B, 2)`` int64 ``[eff_h, eff_w]``.
        map_size: ``(h, w)`` of the padded map.
        beta: fraction of inside cells to mask.
        delta: fraction of outside cells to mask.
        seeds: ``(B,)`` int64, one per clip.
        salt: independent draws from one seed (default 0).

    Returns:
        ``(B, h, w)`` bool, True = the key is excluded.
    """
    h, w = map_size
    device = regions.device
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    x1, y1, x2, y2 = (regions[:, i].view(-1, 1, 1) for i in range(4))
    valid = ~padding_cells(eff_sizes.to(device), map_size)  # [B, h, w]
    inside = valid & (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)  # [B, h, w]
    outside = valid & ~inside
    keys = cell_keys(seeds.to(device), salt, map_size).flatten(1)  # [B, S]
    chosen = _choose_exact(keys, inside.flatten(1), beta) | _choose_exact(keys, outside.flatten(1), delta)  # [B, S]
    chosen = chosen.view(-1, h, w)

    all_masked = ~(valid & ~chosen).flatten(1).any(dim=1)  # [B]
    if bool(all_masked.any()):
        eff = eff_sizes.to(device)
        near_x = torch.minimum(regions[:, 0].clamp(min=0), eff[:, 1] - 1)  # nearest column of [x1, x2] on the map
        near_y = torch.minimum(regions[:, 1].clamp(min=0), eff[:, 0] - 1)
        rows = all_masked.nonzero().squeeze(1)
        chosen = chosen.clone()
        chosen[rows, near_y[rows], near_x[rows]] = False
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# layers (DETR-style, post-norm)
# ---------------------------------------------------------------------------------------------------------------


class SelfAttentionLayer(nn.Module):
    """``x = LN(x + Drop(MHA(q=x+pos, k=x+pos, v=x)))`` (keys ``self_attn``, ``norm``). ``[N, L, D] -> [N, L, D]``."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        q = x if pos is None else x + pos
        out = self.self_attn(q, q, x, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return self.norm(x + self.dropout(out))


class CrossAttentionLayer(nn.Module):
    """``x = LN(x + Drop(MHA(q=x, k=v=memory, key_padding_mask)))`` (keys ``multihead_attn``, ``norm``).

    Shapes: ``x [N, L, D]``, ``memory [N, S, D]``, ``key_padding_mask [N, S]`` (True = excluded).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        out = self.multihead_attn(x, memory, memory, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return self.norm(x + self.dropout(out))


class FeedForwardLayer(nn.Module):
    """``x = LN(x + Drop(linear2(Drop(ReLU(linear1(x))))))`` (keys ``linear1``, ``linear2``, ``norm``)."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout2(self.linear2(self.dropout1(F.relu(self.linear1(x))))))


class ContextEncoder(nn.Module):
    """FBIL's ``feature_encoder``: ``depth`` post-norm Transformer encoder layers with positions on q, k.

    Shapes: ``tokens [N, S, D]``, ``pos [N, S, D]``, ``key_padding_mask [N, S]`` -> ``[N, S, D]``.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.self_atten = nn.ModuleList(SelfAttentionLayer(dim, num_heads, dropout) for _ in range(depth))
        self.ffn = nn.ModuleList(FeedForwardLayer(dim, ffn_dim, dropout) for _ in range(depth))

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        x = tokens
        for attn, ffn in zip(self.self_atten, self.ffn):
            x = ffn(attn(x, pos, key_padding_mask))
        return x


class MaskGuidedCrossAttention(nn.Module):
    """FBIL's ``MaskGuideAttention`` (MCA): per layer self-attention on the query token(s), masked
    cross-attention to the encoded context, FFN.

    Shapes: ``query [N, L, D]`` (L = 1 actor token), ``memory [N, S, D]``, ``key_mask [N, S]`` -> ``[N, L, D]``.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.self_atten = nn.ModuleList(SelfAttentionLayer(dim, num_heads, dropout) for _ in range(depth))
        self.cross_atten = nn.ModuleList(CrossAttentionLayer(dim, num_heads, dropout) for _ in range(depth))
        self.ffn = nn.ModuleList(FeedForwardLayer(dim, ffn_dim, dropout) for _ in range(depth))

    def forward(self, query: torch.Tensor, memory: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = query
        for self_attn, cross_attn, ffn in zip(self.self_atten, self.cross_atten, self.ffn):
            x = ffn(cross_attn(self_attn(x), memory, key_mask))
        return x


class MLP(nn.Module):
    """``len(dims) - 1`` Linear layers with ReLU between them (key ``layers.{i}``).

    Shapes: ``[..., dims[0]] -> [..., dims[-1]]``.
    """

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


# ---------------------------------------------------------------------------------------------------------------
# heads
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FBILMasks:
    """The key masks of one batch, ``B`` clips on the padded ``h x w`` map (True = key excluded).

    Attributes:
        foreground: ``(B, h, w)`` M_glob (``global_beta``, ``global_delta``), used by ``local_atten``.
        background: ``(B, h, w)`` M_loc (``local_beta``, ``local_delta``), used by ``context_atten``.
        padding: ``(B, h, w)`` cells outside each clip's unpadded map (not included in the two above).
        regions: ``(B, 4)`` int64 inclusive cell bounds ``[x1, y1, x2, y2]`` of the mask regions.
        eff_sizes: ``(B, 2)`` int64 ``[eff_h, eff_w]``.
    """

    foreground: torch.Tensor
    background: torch.Tensor
    padding: torch.Tensor
    regions: torch.Tensor
    eff_sizes: torch.Tensor


class FBILHead(nn.Module):
    """FBIL's head: masked foreground/background interaction of each actor with its clip's encoded context.

    Args:
        in_channels: channels of the concatenated pathways (2304 for SlowFast-R101 α4 β1/8).
        num_classes: action classes (60 on AVA; no background).
        # sizes (defaults: FBIL's full size)
        reduce_dim: ``D``, width after ``conv_reduce`` (1024); divisible by ``num_heads`` and by 4.
        num_heads: attention heads (8).
        ffn_dim: FFN hidden width (2048).
        dropout: dropout of every attention / FFN layer (0.1).
        e_depth: context-encoder layers (3).
        l_depth: ``local_atten`` (foreground branch) layers (3).
        c_depth: ``context_atten`` (background branch) layers (3).
        roi_size: RoIAlign cells per side before the max-pool (7).
        # masks
        local_beta, local_delta: M_loc fractions, inside / outside (0.9, 0.2) -> ``context_atten``.
        global_beta, global_delta: M_glob fractions (0.2, 1.0) -> ``local_atten``.
        compat_mask_coords: FBIL's quirk Q1, mask boxes scaled by the eff size (default False: the RoIAlign
            coordinates).
        # aggregation
        act: AFA weights, ``"softmax"`` over the two branches (default) or independent ``"sigmoid"``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        # sizes
        reduce_dim: int = 1024,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        e_depth: int = 3,
        l_depth: int = 3,
        c_depth: int = 3,
        roi_size: int = 7,
        # masks
        local_beta: float = 0.9,
        local_delta: float = 0.2,
        global_beta: float = 0.2,
        global_delta: float = 1.0,
        compat_mask_coords: bool = False,
        # aggregation
        act: Literal["softmax", "sigmoid"] = "softmax",
    ) -> None:
        super().__init__()
        if reduce_dim % num_heads or reduce_dim % 4:
            raise ValueError(f"reduce_dim must be divisible by num_heads and by 4, got {reduce_dim} and {num_heads}.")
        if act not in ("softmax", "sigmoid"):
            raise ValueError(f"act must be 'softmax' or 'sigmoid', got {act!r}.")
        fractions = {
            "local_beta": local_beta,
            "local_delta": local_delta,
            "global_beta": global_beta,
            "global_delta": global_delta,
        }
        for name, value in fractions.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}.")
        self.reduce_dim = reduce_dim
        self.num_classes = num_classes
        self.roi_size = roi_size
        self.local_beta, self.local_delta = local_beta, local_delta
        self.global_beta, self.global_delta = global_beta, global_delta
        self.compat_mask_coords = compat_mask_coords
        self.act = act

        self.conv_reduce = nn.Conv2d(in_channels, reduce_dim, 1, bias=False)
        self.feature_encoder = ContextEncoder(reduce_dim, num_heads, ffn_dim, e_depth, dropout)
        self.context_atten = MaskGuidedCrossAttention(reduce_dim, num_heads, ffn_dim, c_depth, dropout)  # background
        self.local_atten = MaskGuidedCrossAttention(reduce_dim, num_heads, ffn_dim, l_depth, dropout)  # foreground
        self.weight_linear = MLP((reduce_dim, reduce_dim, reduce_dim, 2))
        self.norm = nn.LayerNorm(reduce_dim)
        self.fc = nn.Linear(2 * reduce_dim, num_classes, bias=False)
        for module in (self.feature_encoder, self.context_atten, self.local_atten):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def key_masks(
        self,
        rois: torch.Tensor,
        valid_sizes: torch.Tensor | None,
        map_size: tuple[int, int],
        seeds: torch.Tensor,
    ) -> FBILMasks:
        """The two branches' random masks for a batch of ``B = len(seeds)`` clips on an ``h x w`` map.

        Args:
            rois: ``(R, 5)`` ``[clip_index, x1, y1, x2, y2]`` normalised to the padded frame.
            valid_sizes: ``(B, 2)`` ``[w_frac, h_frac]`` or None (no padding).
            map_size: ``(h, w)`` of the padded feature map.
            seeds: ``(B,)`` int64 mask seeds, one per clip.

        Returns:
            :class:`FBILMasks`.
        """
        num_clips = seeds.shape[0]
        sizes = check_valid_sizes(valid_sizes, num_clips, rois.device)
        eff = effective_sizes(sizes, map_size)  # [B, 2]
        regions = mask_regions(rois, num_clips, map_size, eff, compat_mask_coords=self.compat_mask_coords)
        fg = random_cell_masks(  # M_glob -> local_atten
            regions, eff, map_size, beta=self.global_beta, delta=self.global_delta, seeds=seeds, salt=0
        )
        bg = random_cell_masks(  # M_loc -> context_atten
            regions, eff, map_size, beta=self.local_beta, delta=self.local_delta, seeds=seeds, salt=1
        )
        return FBILMasks(fg, bg, padding_cells(eff, map_size), regions, eff)

    def mask_seeds(
        self, num_clips: int, mask_seeds: torch.Tensor | None, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        """``(B,)`` int64 seeds: the given ones; else drawn from ``generator`` (the default torch generator when
        None) in training; else 0 at evaluation (a clip's masks then depend only on its own boxes and size)."""
        if mask_seeds is not None:
            if mask_seeds.shape != (num_clips,):
                raise ValueError(
                    f"Expected mask_seeds of shape [{num_clips}] (one per clip), got {tuple(mask_seeds.shape)}."
                )
            return mask_seeds.to(device=device, dtype=torch.int64)
        if self.training:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            return torch.randint(0, 2**62, (num_clips,), generator=generator, device=gen_device).to(device)
        return torch.zeros(num_clips, dtype=torch.int64, device=device)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        rois: torch.Tensor,
        valid_sizes: torch.Tensor | None = None,
        *,
        mask_seeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Per-RoI action logits.

        Args:
            features: pathway maps ``[B, C_p, T_p, h, w]`` (slow, fast), ``ΣC_p = in_channels``.
            rois: ``(R, 5)`` ``[clip_index, x1, y1, x2, y2]``, boxes normalised to ``[0, 1]`` of the padded clip.
            valid_sizes: ``(B, 2)`` ``[w_frac, h_frac]`` unpadded fraction of each clip, or None (all 1).
            mask_seeds: ``(B,)`` int64, one mask seed per clip (e.g. a hash of (video, timestamp)); used in
                training and evaluation when given. None: drawn from ``generator`` in training, 0 in evaluation.
            generator: source of the training mask seeds when ``mask_seeds`` is None (None: torch's default).

        Returns:
            ``(R, num_classes)`` logits (FBIL: softmax over the pose classes, sigmoid for the rest).
        """
        fmap = self.conv_reduce(pool_pathways(features))  # [B, D, h, w]
        num_clips, dim, h, w = fmap.shape
        clip_index = check_rois(rois, num_clips)  # [R]
        actors = roi_actor_vectors(fmap, rois, self.roi_size)  # [R, D]
        if rois.shape[0] == 0:
            return self.fc(torch.cat((actors, actors.new_zeros((0, dim))), dim=1))  # [0, K]

        seeds = self.mask_seeds(num_clips, mask_seeds, generator, fmap.device)
        masks = self.key_masks(rois, valid_sizes, (h, w), seeds)

        # encode each clip with RoIs once (Q2)
        present = torch.bincount(clip_index, minlength=num_clips) > 0  # [B]
        clips = present.nonzero().squeeze(1)  # [B']
        slot = torch.cumsum(present.long(), 0) - 1  # [B]  clip -> row of `memory`
        padding = masks.padding[clips]  # [B', h, w]
        pos = sine_position_embedding(~padding, dim // 2).to(fmap.dtype)  # [B', D, h, w]
        tokens = fmap[clips].flatten(2).transpose(1, 2)  # [B', S, D]  row-major cells
        memory = self.feature_encoder(tokens, pos.flatten(2).transpose(1, 2), padding.flatten(1))  # [B', S, D]

        # each actor: one query token against its clip's memory (L = 1, batch = actors)
        memory_r = memory[slot[clip_index]]  # [R, S, D]
        pad_r = masks.padding.flatten(1)[clip_index]  # [R, S]
        fg_mask = masks.foreground.flatten(1)[clip_index] | pad_r  # [R, S]
        bg_mask = masks.background.flatten(1)[clip_index] | pad_r
        query = actors.unsqueeze(1)  # [R, 1, D]
        z_fg = self.local_atten(query, memory_r, fg_mask).squeeze(1)  # [R, D]
        z_bg = self.context_atten(query, memory_r, bg_mask).squeeze(1)  # [R, D]

        weights = self.weight_linear(actors)  # [R, 2]
        weights = weights.softmax(dim=1) if self.act == "softmax" else weights.sigmoid()
        z = self.norm(weights[:, :1] * z_fg + weights[:, 1:] * z_bg)  # [R, D]
        return self.fc(torch.cat((actors, z), dim=1))  # [R, K]


def fbil_head_full(num_classes: int = 60, in_channels: int = 2304, **overrides: object) -> FBILHead:
    """FBIL's released head size (SlowFast-R101 features, AVA): 105,387,010 parameters, 154 state-dict keys."""
    return FBILHead(in_channels=in_channels, num_classes=num_classes, **overrides)  # type: ignore[arg-type]


class LinearHead(nn.Module):
    """Baseline without relation reasoning: the same ``conv_reduce`` / RoIAlign path, then one Linear layer.

    Args:
        in_channels: channels of the concatenated pathways.
        num_classes: action classes (no background).
        reduce_dim: width after ``conv_reduce`` (default 1024).
        roi_size: RoIAlign cells per side before the max-pool (default 7).

    ``valid_sizes``, ``mask_seeds`` and ``generator`` are accepted for the shared interface and unused.
    """

    def __init__(self, *, in_channels: int, num_classes: int, reduce_dim: int = 1024, roi_size: int = 7) -> None:
        super().__init__()
        self.roi_size = roi_size
        self.conv_reduce = nn.Conv2d(in_channels, reduce_dim, 1, bias=False)
        self.fc = nn.Linear(reduce_dim, num_classes)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        rois: torch.Tensor,
        valid_sizes: torch.Tensor | None = None,
        *,
        mask_seeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``features`` ``[B, C_p, T_p, h, w]`` list, ``rois`` ``(R, 5)`` normalised -> logits ``(R, num_classes)``."""
        fmap = self.conv_reduce(pool_pathways(features))  # [B, D, h, w]
        check_rois(rois, fmap.shape[0])
        check_valid_sizes(valid_sizes, fmap.shape[0], fmap.device)
        return self.fc(roi_actor_vectors(fmap, rois, self.roi_size))  # [R, K]


__all__ = [
    "FBILHead",
    "FBILMasks",
    "LinearHead",
    "MaskGuidedCrossAttention",
    "ContextEncoder",
    "cell_keys",
    "effective_sizes",
    "fbil_head_full",
    "mask_regions",
    "pool_pathways",
    "random_cell_masks",
    "roi_actor_vectors",
    "sine_position_embedding",
]
