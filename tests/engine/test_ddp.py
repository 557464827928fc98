"""Two CPU processes (gloo, torchrun) reach the same weights as one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

SCRIPT = Path(__file__).resolve().parent / "ddp_toy_train.py"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed gloo missing")
def test_two_gloo_processes_match_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ddp_toy_train  # beside this file

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert ddp_toy_train.main(["--out", str(tmp_path / "single"), "--batch-size", "8"]) == 0  # in this process
    double = _run(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
         "--out", str(tmp_path / "ddp"), "--batch-size", "4"],
        cwd=tmp_path,
    )
    assert double.returncode == 0, double.stderr[-3000:]

    one = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert one["epoch"] == two["epoch"] == 2
    assert one["step"] == two["step"] == 8  # 32 items / global batch 8 x 2 epochs
    assert list(one["model"]) == list(two["model"])  # no "module." prefix from DDP
    for name, weight in one["model"].items():
        torch.testing.assert_close(two["model"][name], weight, rtol=1e-5, atol=1e-6, msg=name)
    # Training really moved the weights (the comparison is not between two untouched inits).
    first = torch.load(tmp_path / "single" / "epoch_0001.pt", weights_only=True)
    assert not torch.equal(first["model"]["out.weight"], one["model"]["out.weight"])
    # The evaluator gathered all 16 validation items from both ranks; metrics agree.
    val_one, val_two = one["extra"]["history"][-1]["val"], two["extra"]["history"][-1]["val"]
    assert val_two["num_items"] == val_one["num_items"] == 16
    assert val_two["val_mse"] == pytest.approx(val_one["val_mse"], rel=1e-5)
    # Random states of both ranks were saved.
    assert len(two["rng"]) == 2 and len(one["rng"]) == 1
    # Only rank 0 wrote: one TensorBoard event file.
    assert len(list((tmp_path / "ddp" / "tb").glob("events.out.tfevents.*"))) == 1


def test_single_process_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.data import DataLoader

    from stad.engine.distributed import (
        all_gather_objects,
        build_sampler,
        gather_list,
        init_distributed,
        is_main_process,
        mean_across_ranks,
        set_sampler_epoch,
        unwrap_model,
        wrap_ddp,
    )
    from stad.errors import StadError

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.distributed) == (0, 1, False)
    assert is_main_process()
    assert all_gather_objects({"a": 1}) == [{"a": 1}]
    assert gather_list([1, 2]) == [1, 2]
    assert mean_across_ranks({"map": 0.5}, weight=3) == {"map": 0.5}
    model = torch.nn.Linear(2, 2)
    assert wrap_ddp(model, torch.device("cpu")) is model and unwrap_model(model) is model

    loader = DataLoader(list(range(10)), batch_size=5, sampler=build_sampler(list(range(10)), shuffle=True, seed=4))
    set_sampler_epoch(loader, 0)
    epoch0 = [x for batch in loader for x in batch.tolist()]
    set_sampler_epoch(loader, 1)
    epoch1 = [x for batch in loader for x in batch.tolist()]
    set_sampler_epoch(loader, 0)
    assert [x for batch in loader for x in batch.tolist()] == epoch0  # order depends only on (seed, epoch)
    assert sorted(epoch0) == sorted(epoch1) == list(range(10)) and epoch0 != epoch1

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(StadError, match="WORLD_SIZE must be an integer, got 'two'"):
        init_distributed()
