"""A tiny model, data set and evaluator that follow the engine's contracts (tests only).

``ToyRegressor`` maps ``batch["x"]`` (B, 4) to (B, 2) predictions with one linear layer and
returns ``{"loss", "mse", "l1"}``; the targets are a fixed linear function of ``x``, so training
must drive the loss towards 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from stad.engine.distributed import gather_list

IN_FEATURES, OUT_FEATURES = 4, 2


class ToyDataset(Dataset):
    """``n`` items ``{"x": (4,), "y": (2,)}`` with ``y = x @ W + b`` for fixed W, b; deterministic.

    Args:
        n: number of items.
        seed: generator seed of the inputs.
        bad_index: optional item whose input is set to +inf (to provoke a non-finite loss).
    """

    def __init__(self, n: int = 32, *, seed: int = 0, bad_index: int | None = None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, IN_FEATURES, generator=generator)
        weight = torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.0, 1.0], [2.0, 0.5]])
        self.y = self.x @ weight + torch.tensor([0.3, -0.7])
        if bad_index is not None:
            self.x[bad_index] = float("inf")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index]}


class ToyRegressor(nn.Module):
    """Linear regressor with the engine's model contract.

    Args:
        dropout: dropout probability on the input (0 = deterministic).
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(IN_FEATURES, 8)
        self.out = nn.Linear(8, OUT_FEATURES)
        self.last_dtype: torch.dtype | None = None

    def _head_outputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pred = self.out(torch.tanh(self.hidden(self.dropout(batch["x"]))))  # [B, 2]
        self.last_dtype = pred.dtype
        return pred

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = self._head_outputs(batch).float()
        mse = F.mse_loss(pred, batch["y"])
        l1 = F.l1_loss(pred, batch["y"])
        return {"loss": mse + 0.1 * l1, "mse": mse, "l1": l1}

    def detect(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._head_outputs(batch).float()


def evaluate_mse(model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
    """Mean squared error over the whole (possibly sharded) loader, the same on every rank."""
    errors: list[float] = []
    for batch in loader:
        pred = model.detect({key: value.to(device) for key, value in batch.items()})  # [B, 2]
        errors.extend(((pred - batch["y"].to(device)) ** 2).mean(dim=1).tolist())
    all_errors = gather_list(errors)
    return {"val_mse": sum(all_errors) / len(all_errors), "num_items": float(len(all_errors))}
