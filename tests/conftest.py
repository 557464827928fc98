"""Shared fixtures: the real public annotation files in ../shared/realdata (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
REALDATA = Path(os.environ.get("STAD_REALDATA", _DEFAULT_REALDATA))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """Folder of real public annotation files (see its SOURCES.md); skips the test when missing."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} not found (set STAD_REALDATA to the shared/realdata folder)")
    return REALDATA


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """The tiny synthetic preset (8 videos x 32 frames, ACT layout), rendered once per test session."""
    from stad.data.synthetic import SynthConfig, render_dataset

    root = tmp_path_factory.mktemp("tiny_synth")
    render_dataset(SynthConfig.preset("tiny", seed=0), root)
    return root


def tiny_moc_config(root: Path, out: Path, **train: object):
    """A small MOC config (quarter-width ResNet-18, plain convs) on the tiny synthetic set, for fast CPU tests."""
    from stad.config import config_from_dict

    return config_from_dict({
        "data": {"kind": "synthetic", "root": str(root), "options": {"preset": "tiny"}, "input_size": [96, 128],
                 "K": 7, "batch_size": 4, "num_workers": 0},
        "model": {"name": "moc", "backbone": "resnet18",
                  "options": {"width": 0.25, "deformable": False, "head_conv": 32, "wh_head_conv": 16}},
        "train": {"epochs": 1, "lr": 2e-3, "scheduler": "none", "seed": 0, "device": "cpu", "val_every": 0,
                  "output_dir": str(out), **train},
        "eval": {"batch_size": 8},
    })
