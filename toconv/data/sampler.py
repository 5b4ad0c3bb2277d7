"""The order training batches come in: fixed by (seed, epoch), shared by every process layout."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochBatches(Sampler[list[int]]):
    """Index batches of one epoch: a (seed, epoch)-seeded permutation, this process's share of it,
    cut into batches, starting at batch ``start``.

    With ``world_size`` processes the permutation is padded (wrapping around) to a multiple of
    ``world_size`` and process ``rank`` takes every ``world_size``-th index.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, epoch: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        if num_items < 1:
            raise ValueError(f"expected at least one item to batch, got {num_items}")
        self.num_items, self.batch_size, self.start = num_items, batch_size, start
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        self.rank, self.world_size = rank, world_size

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        padded = -(-self.num_items // self.world_size) * self.world_size
        order = (order * (padded // self.num_items + 1))[:padded]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        indices = self._indices()
        starts = range(self.start * self.batch_size, len(indices), self.batch_size)
        return iter([indices[i : i + self.batch_size] for i in starts])

    def __len__(self) -> int:
        per_rank = -(-self.num_items // self.world_size)
        return max(0, -(-per_rank // self.batch_size) - self.start)


def step_batches(num_items: int, batch_size: int, steps: int, seed: int = 0) -> Iterator[list[int]]:
    """``steps`` index batches: successive epochs of :class:`EpochBatches`, as the trainer sees them."""
    epoch, step = 0, 0
    while step < steps:
        for indices in EpochBatches(num_items, batch_size, seed, epoch):
            if step == steps:
                return
            yield indices
            step += 1
        epoch += 1
