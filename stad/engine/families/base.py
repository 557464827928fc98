"""The interface every detection family implements (ARCHITECTURE.md §2, ``engine/families``).

A family is the glue between a kind of detector and the data it is trained and scored on:

* ``tubelet`` (MOC, STADO): K-frame clips, inference with feature reuse, offline tubes, ACT frame-/video-mAP;
* ``frame`` (KORSAL key-point detector): single frames + temporal cue, per-frame inference, online tubes;
* ``keyframe`` (STEP, FBIL): keyframe clips (+ proposals), actor predictions, AVA frame-mAP.

Each family module defines one :class:`Family` named ``FAMILY``; :mod:`stad.engine.runner` trains and tests any
model through it, and the ``stad`` commands dispatch on the model's family. A family imports this module and
:mod:`stad.engine.families.common`, never another family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from stad.config import Config


@dataclass(frozen=True)
class Family:
    """One detection family behind one small interface.

    Attributes:
        name: ``tubelet``, ``frame`` or ``keyframe``.
        models: the ``model.name`` values of this family.
        load_data: ``(cfg, *, progress) -> data``: the ground truth and frames named by ``cfg.data``.
        resolve_model_config: ``(cfg, data) -> cfg``: ``model.num_classes`` / ``labels`` (and the family's model
            options) filled from the data, checked for consistency.
        build_train_loader: ``(cfg, data, model) -> DataLoader``: the training batches the model's ``forward`` takes.
        predict: ``(model, cfg, data, *, device, progress) -> predictions`` on ``eval.subset`` of the data.
        evaluate: ``(cfg, data, predictions) -> metrics``: a flat dict of floats plus result objects under
            ``_``-keys (left out of logs).
        test: ``(cfg, checkpoint, out_dir, *, device, progress, **options) -> metrics``: load a checkpoint,
            predict, evaluate, write the prediction files and ``report.json`` / ``report.md``.
        format_report: ``(metrics) -> str``: the Markdown report ``stad test`` prints.
    """

    name: str
    models: tuple[str, ...]
    load_data: Callable[..., Any]
    resolve_model_config: Callable[[Config, Any], Config]
    build_train_loader: Callable[[Config, Any, torch.nn.Module], DataLoader]
    predict: Callable[..., Any]
    evaluate: Callable[[Config, Any, Any], dict[str, Any]]
    test: Callable[..., dict[str, Any]]
    format_report: Callable[[dict[str, Any]], str]


def output_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a created folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out
