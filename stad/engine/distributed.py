"""Multi-process data-parallel training (torchrun + DistributedDataParallel).

Launch with ``torchrun --nproc_per_node=N ...`` (or ``python -m torch.distributed.run``); it sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, which
:func:`init_distributed` reads. Without them every function here behaves as a single process
(rank 0 of 1), so the same training script runs with or without torchrun.

Rules the engine follows:

* the backend is ``nccl`` on CUDA and ``gloo`` on CPU;
* every rank reads a disjoint shard of the data through :func:`build_sampler`
  (``DistributedSampler``); :func:`set_sampler_epoch` reshuffles it each epoch;
* gradients are averaged by DDP, so N processes x batch B equal one process with batch N x B
  when the loss is a mean over the batch;
* only rank 0 (:func:`is_main_process`) writes logs, checkpoints and files;
* metrics and detections are combined with :func:`all_gather_objects` / :func:`gather_list` /
  :func:`mean_across_ranks`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from stad.errors import StadError

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "barrier",
    "build_sampler",
    "cleanup",
    "gather_list",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "mean_across_ranks",
    "set_sampler_epoch",
    "unwrap_model",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        world_size: number of processes.
        local_rank: rank on this machine (selects the CUDA device).
        backend: ``nccl``, ``gloo`` or ``""`` when not distributed.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise StadError(f"environment variable {name} must be an integer, got {text!r}") from None


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_local_rank() -> int:
    """``LOCAL_RANK`` from torchrun, 0 without it."""
    return _env_int("LOCAL_RANK", 0)


def is_main_process() -> bool:
    """Rank 0: the process that writes logs, checkpoints and files."""
    return get_rank() == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment, if there is one.

    Args:
        backend: ``nccl`` / ``gloo``; default ``nccl`` when CUDA is available, else ``gloo``.

    Returns:
        :class:`DistInfo`; with ``WORLD_SIZE`` unset or 1 nothing is initialised (rank 0 of 1).
        On CUDA the current device is set to ``cuda:LOCAL_RANK``.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        return DistInfo(rank=0, world_size=1, local_rank=0, backend="")
    if not dist.is_available():
        raise StadError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def cleanup() -> None:
    """Leave the process group (no-op when none was initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if is_distributed():
        dist.barrier()


def wrap_ddp(model: nn.Module, device: torch.device, **ddp_kwargs: Any) -> nn.Module:
    """Wrap ``model`` (already on ``device``) in DistributedDataParallel when distributed.

    Returns ``model`` unchanged for a single process. Extra keyword arguments go to DDP (e.g.
    ``find_unused_parameters=True`` for models with branches unused in some steps).
    """
    if not is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP / DataParallel wrapper (``detect`` and ``state_dict`` live there)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def build_sampler(dataset: Dataset, *, shuffle: bool, seed: int = 0, drop_last: bool = False) -> DistributedSampler:
    """A ``DistributedSampler`` over this rank's shard of ``dataset`` (the whole data set for one
    process, which needs no process group).

    The order depends only on ``(seed, epoch)`` (call :func:`set_sampler_epoch` each epoch), not
    on global random state, so a resumed run reads the same batches as an uninterrupted one.
    With ``shuffle=False`` rank r reads items r, r + N, r + 2N ... so that a global batch of
    N x B holds the same items as one process reading N x B items in order.
    """
    return DistributedSampler(
        dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=shuffle, seed=seed, drop_last=drop_last
    )


def set_sampler_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's sampler (``loader.sampler`` or ``batch_sampler.sampler``) the epoch, so every epoch has its
    own shuffle (``DistributedSampler``) and augmentation draws (``stad.data.sampling.EpochSampler``); no-op for
    samplers without ``set_epoch``."""
    for sampler in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
            return


def all_gather_objects(obj: Any) -> list[Any]:
    """Picklable ``obj`` from every rank, in rank order (``[obj]`` for one process)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_list(items: list[Any]) -> list[Any]:
    """Concatenate every rank's list, in rank order (detections of each rank's shard)."""
    return [item for per_rank in all_gather_objects(items) for item in per_rank]


def mean_across_ranks(values: Mapping[str, float], weight: float = 1.0) -> dict[str, float]:
    """Weighted mean of scalar metrics over ranks (weight = e.g. the number of samples on the rank).

    Every rank must pass the same keys.
    """
    gathered = all_gather_objects((dict(values), float(weight)))
    keys = list(gathered[0][0])
    for per_rank, _ in gathered:
        if list(per_rank) != keys:
            raise ValueError(f"ranks report different metric names: {keys} vs {list(per_rank)}")
    total = sum(w for _, w in gathered)
    if total <= 0:
        return {key: float("nan") for key in keys}
    return {key: sum(per_rank[key] * w for per_rank, w in gathered) / total for key in keys}
