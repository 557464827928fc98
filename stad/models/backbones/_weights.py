"""Loading a user-supplied ImageNet checkpoint file into a timm backbone body (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stad.data.safe_pickle import safe_torch_load
from stad.errors import StadError


def read_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``torch.save`` file holding a state dict (or ``{"state_dict": ...}`` / ``{"model": ...}``).

    A ``module.`` prefix (DataParallel/DDP) is stripped from every key. The file is read with
    ``torch.load(weights_only=True)``: a file never runs code.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        StadError: a file that needs anything but tensors and plain values (naming the refused global),
            or no state dict of tensors in it.
    """
    path = Path(path)
    obj = safe_torch_load(path, what="a weights file")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise StadError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_body_weights(
    body: nn.Module, state_dict: dict[str, torch.Tensor], *, ignore: tuple[str, ...], first_conv: str, source: str
) -> None:
    """Load ``state_dict`` strictly into ``body`` after dropping keys that start with a prefix in ``ignore``.

    When the body takes ``3 * n`` input channels (stacked optical flow) and the file's first convolution
    ``first_conv`` takes 3, its kernel is averaged over the 3 channels and repeated ``3 * n`` times, as
    MOC-Detector's ``convert2flow`` does.

    Raises:
        StadError: naming the missing / unexpected keys or the first shape mismatch.
    """
    kept = {k: v for k, v in state_dict.items() if not k.startswith(ignore)}
    own = body.state_dict()
    stem = kept.get(first_conv)
    if stem is not None and first_conv in own and stem.dim() == 4 and stem.shape[1] == 3 != own[first_conv].shape[1]:
        kept[first_conv] = stem.mean(dim=1, keepdim=True).expand(-1, own[first_conv].shape[1], -1, -1).clone()
    for key, value in kept.items():
        if key in own and own[key].shape != value.shape:
            raise StadError(f"{source}: parameter {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")
    result = body.load_state_dict(kept, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise StadError(
            f"{source}: does not match the backbone: missing keys {result.missing_keys[:5]}"
            f"{' ...' if len(result.missing_keys) > 5 else ''}, unexpected keys {result.unexpected_keys[:5]}"
            f"{' ...' if len(result.unexpected_keys) > 5 else ''}"
        )
