"""Training samplers that carry the epoch to the data set, so augmentation (and the synthetic stream) changes every
epoch even in persistent DataLoader workers.

A ``Dataset`` copy inside a worker process never sees ``dataset.set_epoch(e)`` called in the main process once the
worker has started (``persistent_workers=True`` keeps it for the whole run). :class:`EpochSampler` therefore yields
``(epoch, index)`` keys instead of plain indices; the data sets of :mod:`stad.data.datasets`,
:mod:`stad.data.keyframes` and :mod:`stad.data.synth_stream` accept both forms (:func:`split_key`). The order of the
indices comes from the wrapped sampler (a ``DistributedSampler``: it depends only on ``(seed, epoch)``, so a resumed
run reads exactly the batches of an uninterrupted one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Sampler

__all__ = ["EpochSampler", "split_key"]


class EpochSampler(Sampler):
    """Wrap a sampler of indices into one of ``(epoch, index)`` keys.

    Args:
        inner: the sampler giving the indices (its ``set_epoch``, when it has one, is called too).
        epoch: the starting epoch (default 0).
    """

    def __init__(self, inner: Sampler, *, epoch: int = 0) -> None:
        self.inner = inner
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch`` for the keys (and the inner sampler's shuffle)."""
        self.epoch = int(epoch)
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for index in self.inner:
            yield epoch, int(index)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


def split_key(key: Any, default_epoch: int) -> tuple[int, int]:
    """``(epoch, index)`` of a data set key: an ``(epoch, index)`` pair from :class:`EpochSampler`, or a plain index
    (then ``default_epoch``, the data set's own ``set_epoch`` value)."""
    if isinstance(key, tuple):
        epoch, index = key
        return int(epoch), int(index)
    return int(default_epoch), int(key)
