"""Detection families: which family trains, tests and runs each ``model.name`` (see :mod:`.base`)."""

from __future__ import annotations

import importlib

from stad.engine.families.base import Family
from stad.errors import StadError

# model.name -> family module under stad.engine.families
FAMILY_OF_MODEL: dict[str, str] = {
    "moc": "tubelet",
    "stado": "tubelet",
    "keypoint": "frame",
    "step": "keyframe",
    "step_cls": "keyframe",
    "fbil": "keyframe",
    "acar": "keyframe",
}


def family_name(model_name: str) -> str:
    """``tubelet``, ``frame`` or ``keyframe`` for a ``model.name``."""
    if model_name not in FAMILY_OF_MODEL:
        raise StadError(f"unknown model {model_name!r}; known models: {sorted(FAMILY_OF_MODEL)}")
    return FAMILY_OF_MODEL[model_name]


def get_family(model_name: str) -> Family:
    """The :class:`Family` that trains and tests ``model_name`` (its module is imported on first use)."""
    return importlib.import_module(f"stad.engine.families.{family_name(model_name)}").FAMILY


__all__ = ["FAMILY_OF_MODEL", "Family", "family_name", "get_family"]
