"""A tiny deterministic FBIL/ACAR batch and model for the DDP test (no dropout, no jitter, no random masks)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from stad.models.registry import build_model

ROIS_PER_CLIP = (3, 2, 1, 0)  # clips 0, 2 on rank 0 (3 RoIs), clips 1, 3 on rank 1 (2 RoIs)
NUM_CLASSES = 5


def toy_model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = SimpleNamespace(name="acar", num_classes=NUM_CLASSES, weights=None, options={
        "backbone": "slowfast_tiny", "head": "acar", "head_options": {"reduce_dim": 16, "hidden_dim": 16, "depth": 1,
                                                                      "dropout": 0.0},
        "pose_classes": 3, "jitter": 0.0})
    return build_model(cfg).train()


def toy_batch(clips: list[int]) -> dict:
    """Clips ``clips`` of a fixed 4-clip batch (64x80, 8 frames; actors and labels depend only on the clip)."""
    n = max(max(ROIS_PER_CLIP[c] for c in clips), 1)
    out = {"clip": [], "boxes": torch.zeros(len(clips), n, 4), "labels": torch.zeros(len(clips), n, NUM_CLASSES),
           "mask": torch.zeros(len(clips), n, dtype=torch.bool)}
    for b, c in enumerate(clips):
        g = torch.Generator().manual_seed(100 + c)
        out["clip"].append(torch.randn(8, 3, 64, 80, generator=g))
        for i in range(ROIS_PER_CLIP[c]):
            x1, y1 = 4 + 9 * i, 5 + 4 * i
            out["boxes"][b, i] = torch.tensor([x1, y1, x1 + 24, y1 + 40])
            out["labels"][b, i, (c + i) % 3] = 1
            out["labels"][b, i, 3 + (c * i) % 2] = 1
            out["mask"][b, i] = True
    out["clip"] = torch.stack(out["clip"])
    out["video"] = [f"v{c}" for c in clips]
    out["timestamp"] = torch.tensor(clips)
    return out
