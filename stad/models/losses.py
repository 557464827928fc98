"""MOC losses ("Actions as Moving Points", Li et al., ECCV 2020): focal heat-map loss + masked L1 regressions.

Read from MOC-Detector's published ``src/trainer/{losses,moc_trainer}.py`` (written anew):

* heat-map: the CornerNet/CenterNet focal loss (alpha 2, beta 4) on ``clamp(sigmoid(logits), 1e-4, 1 - 1e-4)``,
  normalised by the number of peaks (by 1 when there is none);
* movement: L1 at the middle-frame centre ``index``; wh: L1 of frame ``i``'s size read at frame ``i``'s own
  centre ``index_all``; each summed over actors and 2K values and divided by ``2K * num_actors + 1e-4``;
* total ``loss = hm_weight * loss_hm + mov_weight * loss_mov + wh_weight * loss_wh`` (MOC: 1, 1, 0.1).

Losses are computed in float32 (also under autocast).
"""

from __future__ import annotations

import torch

from stad.models.heads.moc import MOCOutputs
from stad.models.matching import MOCTargets

HEATMAP_CLAMP = 1e-4


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CornerNet focal loss of centre heat-maps.

    Args:
        logits: ``(B, C, h, w)`` raw scores.
        target: ``(B, C, h, w)`` Gaussian targets, exactly 1 at peaks.
        alpha: focusing exponent (default 2).
        beta: down-weighting exponent of negatives near a peak (default 4).

    Returns:
        scalar: ``-(sum_pos log(p)(1-p)^a + sum_neg log(1-p) p^a (1-y)^b) / max(num_pos, 1)``.
    """
    pred = torch.sigmoid(logits.float()).clamp(HEATMAP_CLAMP, 1 - HEATMAP_CLAMP)
    target = target.float()
    pos = target.eq(1).float()
    neg = 1.0 - pos
    pos_loss = (torch.log(pred) * (1 - pred) ** alpha * pos).sum()
    neg_loss = (torch.log(1 - pred) * pred**alpha * (1 - target) ** beta * neg).sum()
    num_pos = pos.sum()
    return -(pos_loss + neg_loss) / torch.clamp(num_pos, min=1.0)


def gather_at(feature: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Read a map at flat locations.

    Args:
        feature: ``(B, D, h, w)``.
        index: ``(B, N)`` flat locations (every channel read there) or ``(B, N, D)`` (one location per channel).

    Returns:
        ``(B, N, D)``.
    """
    B, D = feature.shape[:2]  # noqa: N806
    flat = feature.flatten(2).transpose(1, 2)  # [B, h*w, D]
    if index.dim() == 2:
        index = index[:, :, None].expand(-1, -1, D)  # [B, N, D]
    return flat.gather(1, index)


def masked_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum |pred - target|`` over masked rows, divided by ``mask.sum() * D + 1e-4``.

    Args:
        pred: ``(B, N, D)``; target: ``(B, N, D)``; mask: ``(B, N)`` bool.
    """
    m = mask[:, :, None].expand_as(pred).float()
    return torch.abs(pred.float() * m - target.float() * m).sum() / (m.sum() + 1e-4)


def moc_losses(
    outputs: MOCOutputs, targets: MOCTargets, *, hm_weight: float = 1.0, mov_weight: float = 1.0, wh_weight: float = 0.1
) -> dict[str, torch.Tensor]:
    """MOC losses of one batch.

    Returns:
        ``{"loss": weighted total, "loss_hm": ..., "loss_mov": ..., "loss_wh": ...}`` scalars.
    """
    K2 = outputs.movement.shape[1]  # noqa: N806
    loss_hm = focal_heatmap_loss(outputs.heatmap, targets.heatmap)
    mov = gather_at(outputs.movement, targets.index)  # [B, N, 2K]
    index_all = targets.index_all.repeat_interleave(2, dim=2)  # [B, N, 2K]: frame i's location for w_i and h_i
    assert index_all.shape[-1] == K2
    wh = gather_at(outputs.wh, index_all)  # [B, N, 2K]
    loss_mov = masked_l1_loss(mov, targets.movement, targets.mask)
    loss_wh = masked_l1_loss(wh, targets.wh, targets.mask)
    loss = hm_weight * loss_hm + mov_weight * loss_mov + wh_weight * loss_wh
    return {"loss": loss, "loss_hm": loss_hm, "loss_mov": loss_mov, "loss_wh": loss_wh}


def mask_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """STADO's mask supervision: binary cross-entropy of mask logits against a soft visible-region target.

    Args:
        logits: ``(B, K, h, w)`` mask logits.
        target: ``(B, K, h, w)`` visible fraction of each cell in [0, 1] (``stad.data.transforms.visible_mask_targets``).

    Returns:
        scalar: the mean over all cells (float32, also under autocast).
    """
    if logits.shape != target.shape:
        raise ValueError(f"mask logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target.float())
