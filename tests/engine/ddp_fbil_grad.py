"""Run by tests/engine/test_fbil_ddp.py under ``torch.distributed.run --nproc_per_node 2``: each rank takes half of
a batch whose clips hold different numbers of actors, computes the FBIL/ACAR loss (scaled by the global RoI count),
back-propagates through DDP, and rank 0 saves the averaged gradients."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.engine.fbil_toy import ROIS_PER_CLIP, toy_batch, toy_model  # noqa: E402


def main(out: str) -> int:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = DistributedDataParallel(toy_model())
    clips = list(range(len(ROIS_PER_CLIP)))[rank::world]
    loss = model(toy_batch(clips))["loss"]
    loss.backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters() if p.grad is not None}, out)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
