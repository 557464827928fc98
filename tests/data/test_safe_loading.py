"""Files from elsewhere never run code (issue 14): every stad loader of pickles and ``torch.save`` files
refuses a file whose unpickling would call a function, names the file and the refused global, and
still reads the real formats (ACT GT, UCF101-24 pyannot, MOC release, CenterNet COCO, STEP release, stad
checkpoints)."""

from __future__ import annotations

import argparse
import collections
import os
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn

from stad.data.act import act_to_dict, load_act
from stad.data.convert import load_ucf24_pyannot
from stad.data.safe_pickle import safe_torch_load
from stad.engine.checkpoint import load_checkpoint, save_checkpoint
from stad.errors import StadError
from stad.models.backbones._weights import read_state_dict_file
from stad.models.checkpoints import load_centernet_coco_weights, read_weights_file, torch_load_step_file
from stad.models.stado import load_stado_weights
from stad.structures import TubeAnnotations

REFUSED_SYSTEM = r"refused global (posix|nt|os)\.system"


class _Payload:
    """Unpickles as ``os.system("touch <marker>")``: the classic code-execution pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


class _OtherConfig:
    """A harmless class that no loader allow-lists."""


def _write_pickle(path: Path, obj: Any) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


def _tiny_act() -> TubeAnnotations:
    tube = np.array([[1, 10, 20, 50, 60], [2, 11, 21, 51, 61]], dtype=np.float64)
    return TubeAnnotations(
        labels=["walk", "run"],
        gttubes={"walk/v1": {0: [tube]}, "run/v2": {1: [tube + [0, 1, 1, 1, 1]]}},
        nframes={"walk/v1": 4, "run/v2": 3},
        resolution={"walk/v1": (240, 320), "run/v2": (240, 320)},
        train_videos=[["walk/v1"]],
        test_videos=[["run/v2"]],
    )


def _pyannot() -> dict[str, Any]:
    boxes = np.array([[10, 20, 30, 40], [11, 21, 30, 40]], dtype=np.uint8)  # x, y, w, h
    return {"walk/v1": {"numf": np.int64(4), "label": 0, "annotations": [{"sf": 0, "ef": 2, "label": 0, "boxes": boxes}]}}


# ---------------------------------------------------------------------------------------------
# Pickled annotations: stad.data.act.load_act, stad.data.convert.load_ucf24_pyannot

PICKLE_LOADERS: dict[str, Callable[[Path], Any]] = {
    "load_act": load_act,
    "load_ucf24_pyannot": load_ucf24_pyannot,
}


@pytest.mark.parametrize("loader", sorted(PICKLE_LOADERS))
def test_an_annotation_pickle_that_runs_code_is_refused(tmp_path: Path, loader: str) -> None:
    marker = tmp_path / "code_ran"
    path = _write_pickle(tmp_path / "evil.pkl", {"labels": ["a"], "gttubes": _Payload(marker)})
    pickle.loads(pickle.dumps(_Payload(tmp_path / "control")))  # control: plain pickle runs the payload ...
    assert (tmp_path / "control").exists()
    with pytest.raises(StadError, match=rf"evil\.pkl: {REFUSED_SYSTEM}"):  # ... stad's loaders do not
        PICKLE_LOADERS[loader](path)
    assert not marker.exists()


def test_an_act_ground_truth_pickle_still_loads(tmp_path: Path) -> None:
    path = _write_pickle(tmp_path / "UCF101v2-GT.pkl", act_to_dict(_tiny_act()))
    ann = load_act(path)
    assert ann.labels == ["walk", "run"] and ann.nframes == {"walk/v1": 4, "run/v2": 3}
    np.testing.assert_array_equal(ann.gttubes["run/v2"][1][0][:, 1:], [[11, 21, 51, 61], [12, 22, 52, 62]])


def test_a_ucf24_pyannot_pickle_still_loads(tmp_path: Path) -> None:
    ann = load_ucf24_pyannot(_write_pickle(tmp_path / "pyannot.pkl", _pyannot()))
    assert ann.nframes == {"walk/v1": 4}
    np.testing.assert_array_equal(ann.gttubes["walk/v1"][0][0], [[1, 10, 20, 40, 60], [2, 11, 21, 41, 61]])


# ---------------------------------------------------------------------------------------------
# torch.save files: weights, MOC / CenterNet / STEP releases, stad checkpoints

TORCH_LOADERS: dict[str, Callable[[Path], Any]] = {
    "read_state_dict_file": read_state_dict_file,
    "read_weights_file": lambda path: read_weights_file(nn.Linear(2, 2), path),
    "load_centernet_coco_weights": lambda path: load_centernet_coco_weights(nn.Linear(2, 2), path, arch="resnet_18"),
    "load_stado_weights": lambda path: load_stado_weights(nn.Linear(2, 2), path, arch="resnet_18"),  # type: ignore[arg-type]
    "torch_load_step_file": torch_load_step_file,
    "load_checkpoint": load_checkpoint,
}


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("loader", sorted(TORCH_LOADERS))
def test_a_torch_file_that_runs_code_is_refused(tmp_path: Path, loader: str, writer: str) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    payload = {"epoch": 1, "state_dict": {"conv1.weight": _Payload(marker)}}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        _write_pickle(path, payload)
    with pytest.raises(StadError, match=rf"evil\.pth: cannot be read as .* \({REFUSED_SYSTEM}"):
        TORCH_LOADERS[loader](path)
    assert not marker.exists()


def test_a_moc_release_like_checkpoint_still_loads(tmp_path: Path) -> None:
    model = nn.Conv2d(3, 4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.25e-4)
    model(torch.zeros(1, 3, 5, 5)).sum().backward()
    optimizer.step()
    state = {"branch.hm.0.weight": torch.randn(4, 3, 3, 3), "module.backbone.conv1.weight": torch.randn(2, 3, 7, 7)}
    torch.save({"epoch": 12, "state_dict": state, "best": 0.25, "optimizer": optimizer.state_dict()}, tmp_path / "moc.pth")
    obj = read_weights_file(nn.Linear(2, 2), tmp_path / "moc.pth")
    assert obj["epoch"] == 12 and obj["best"] == 0.25 and obj["optimizer"]["param_groups"][0]["lr"] == 1.25e-4
    torch.testing.assert_close(obj["state_dict"]["branch.hm.0.weight"], state["branch.hm.0.weight"])


def test_a_centernet_like_legacy_checkpoint_still_loads(tmp_path: Path) -> None:
    # CenterNet's 2019 release files predate torch's zip format: legacy serialization, OrderedDict state dict.
    state = collections.OrderedDict([("module.wh.0.weight", torch.randn(2, 2)), ("module.hm.2.bias", torch.zeros(80))])
    torch.save({"epoch": 140, "state_dict": state}, tmp_path / "ctdet.pth", _use_new_zipfile_serialization=False)
    obj = read_weights_file(nn.Linear(2, 2), tmp_path / "ctdet.pth")
    assert obj["epoch"] == 140 and list(obj["state_dict"]) == list(state)
    torch.testing.assert_close(obj["state_dict"]["module.wh.0.weight"], state["module.wh.0.weight"])
    sd = read_state_dict_file(tmp_path / "ctdet.pth")  # the ImageNet path: unwraps and strips "module."
    assert sorted(sd) == ["hm.2.bias", "wh.0.weight"]


def test_a_step_release_allows_its_namespace_only(tmp_path: Path) -> None:
    cfg = argparse.Namespace(T=3, max_iter=3, anchor_mode="1")
    torch.save({"cfg": cfg, "base_net": {"module.w": torch.ones(1)}}, tmp_path / "ava_step.pth")
    obj = torch_load_step_file(tmp_path / "ava_step.pth")
    assert vars(obj["cfg"]) == vars(cfg) and obj["base_net"]["module.w"].item() == 1.0
    torch.save({"cfg": _OtherConfig()}, tmp_path / "other.pth")  # any other class: refused, named
    with pytest.raises(StadError, match=r"other\.pth: cannot be read as a STEP release file .*refused global [\w.]*_OtherConfig"):
        torch_load_step_file(tmp_path / "other.pth")


def test_a_namespace_is_refused_outside_the_step_loader(tmp_path: Path) -> None:
    torch.save({"cfg": argparse.Namespace(T=3), "state_dict": {"w": torch.ones(1)}}, tmp_path / "ns.pth")
    with pytest.raises(StadError, match=r"ns\.pth: .*refused global argparse\.Namespace"):
        read_weights_file(nn.Linear(2, 2), tmp_path / "ns.pth")


def test_a_stad_checkpoint_with_numpy_values_is_saved_plain_and_loads(tmp_path: Path) -> None:
    model = nn.Linear(2, 3)
    history = [{"epoch": 1, "val": {"video_mAP@0.5": np.float64(0.5), "per_class": np.array([0.25, 0.75])}}]
    path = save_checkpoint(
        tmp_path / "last.pt", model=model, epoch=1, step=np.int64(7), config={"lr": 0.1},
        extra={"best_value": np.float32(0.5), "best_epoch": np.int64(1), "history": history},
    )
    ckpt = load_checkpoint(path)  # weights_only=True, nothing allow-listed
    assert ckpt["step"] == 7 and ckpt["extra"]["best_epoch"] == 1 and type(ckpt["extra"]["best_epoch"]) is int
    assert ckpt["extra"]["history"][0]["val"] == {"video_mAP@0.5": 0.5, "per_class": [0.25, 0.75]}
    assert type(ckpt["extra"]["best_value"]) is float
    torch.testing.assert_close(ckpt["model"]["weight"], model.weight.detach())
    assert read_weights_file(nn.Linear(2, 3), path) is None  # the weights path reads it too


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth \(expected a weights file\)"):
        safe_torch_load(tmp_path / "nope.pth", what="a weights file")
