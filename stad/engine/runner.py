"""From a config to a trained / tested detector, whatever its family: the glue behind ``stad train`` and ``stad test``.

Both dispatch on ``model.name`` to its family (:func:`stad.engine.families.get_family`: tubelet, frame or keyframe),
which reads the data, builds the training loader, predicts, evaluates and writes the report; the training loop
itself (:func:`stad.engine.train.fit`) knows no family.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from stad.config import Config
from stad.engine.families import get_family
from stad.engine.families.common import load_detector, public_metrics

__all__ = ["format_report", "load_detector", "make_evaluator", "test_from_config", "train_from_config"]


def train_from_config(cfg: Config, *, device: str | None = None):
    """Train the detector of ``cfg``; returns :class:`stad.engine.train.FitResult`.

    The family reads the data (rendering a synthetic set into an empty folder), fills the model's classes, builds
    the loader; validation predicts the ``eval.subset`` and evaluates it as ``stad test`` does.
    """
    from stad.engine.distributed import cleanup, init_distributed
    from stad.engine.train import fit, resolve_device, seed_everything
    from stad.models.registry import build_model

    family = get_family(cfg.model.name)
    dist = init_distributed()
    try:
        data = family.load_data(cfg)
        cfg = family.resolve_model_config(cfg, data)
        seed_everything(cfg.train.seed)
        model = build_model(cfg.model)
        loader = family.build_train_loader(cfg, data, model)
        dev = resolve_device(device or cfg.train.device)
        if dist.distributed and dev.type == "cuda":
            dev = torch.device("cuda", dist.local_rank)
        return fit(model, loader, cfg=cfg.train, device=dev, evaluate=make_evaluator(cfg, data), config=cfg)
    finally:
        cleanup()


def make_evaluator(cfg: Config, data: Any) -> Callable[[torch.nn.Module, Any, torch.device], dict[str, float]]:
    """``evaluate(model, loader, device) -> metrics`` for :func:`stad.engine.train.fit`: the family predicts the
    ``eval.subset`` of ``data`` (read by its ``load_data``; the loader is unused) and evaluates it."""
    family = get_family(cfg.model.name)

    def evaluate(model: torch.nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        return public_metrics(family.evaluate(cfg, data, family.predict(model, cfg, data, device=device, progress=False)))

    return evaluate


def test_from_config(
    cfg: Config, checkpoint: str | Path, out_dir: str | Path, *, device: str | None = None, progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Run ``checkpoint`` on the ``eval.subset`` of ``cfg``'s data, write its predictions and ``report.json`` /
    ``report.md``; returns the metrics. ``options`` go to the family (tubelet: ``flow_checkpoint``,
    ``fusion_weights``)."""
    return get_family(cfg.model.name).test(cfg, checkpoint, out_dir, device=device, progress=progress, **options)


def format_report(cfg: Config, metrics: dict[str, Any]) -> str:
    """The Markdown report of ``metrics`` as the family of ``cfg``'s model writes it."""
    return get_family(cfg.model.name).format_report(metrics)
