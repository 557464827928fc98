"""Detector builders by name: a plain dict, no registration magic (STYLE.md habit 6).

``MODELS[cfg.name](cfg)`` builds the detector that a ``ModelConfig`` names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from stad.errors import StadError
from stad.models.fbil import build_actor_context
from stad.models.keypoint import build_keypoint
from stad.models.moc import build_moc
from stad.models.stado import build_stado
from stad.models.step import build_step, build_step_cls

MODELS: dict[str, Callable[[Any], nn.Module]] = {
    "moc": build_moc,
    "stado": build_stado,
    "keypoint": build_keypoint,
    "step": build_step,
    "step_cls": build_step_cls,
    "fbil": build_actor_context,
    "acar": build_actor_context,
}


def build_model(cfg: Any) -> nn.Module:
    """Build the detector ``cfg.name`` from a ``ModelConfig``-like object."""
    if cfg.name not in MODELS:
        raise StadError(f"unknown model {cfg.name!r}; known models: {sorted(MODELS)}")
    return MODELS[cfg.name](cfg)
