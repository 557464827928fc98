"""FBIL / ACAR-Net under torchrun (2 gloo processes): with ranks holding different numbers of RoIs, the loss scaling
(R / global R x world size, FBIL.md §5) makes the DDP gradient the mean over every RoI of the global batch, i.e. the
single-process gradient of the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests.engine.fbil_toy import ROIS_PER_CLIP, toy_batch, toy_model

SCRIPT = Path(__file__).resolve().parent / "ddp_fbil_grad.py"


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed gloo missing")
def test_two_processes_give_the_gradient_of_the_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    out = tmp_path / "grads.pt"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)

    model = toy_model()
    model(toy_batch(list(range(len(ROIS_PER_CLIP)))))["loss"].backward()
    single = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(ddp) == set(single)
    for name, grad in single.items():
        torch.testing.assert_close(ddp[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    # without the scaling the ranks' means (3 and 2 RoIs) would be averaged: a different gradient
    plain = toy_model()
    halves = [plain(toy_batch(list(range(len(ROIS_PER_CLIP)))[r::2]))["loss"] for r in (0, 1)]
    ((halves[0] + halves[1]) / 2).backward()
    assert not torch.allclose(plain.head.fc2.weight.grad, single["head.fc2.weight"], rtol=1e-3)
