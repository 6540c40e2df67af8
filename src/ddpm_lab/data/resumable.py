"""A seeded, rank-sharded sampler and DataLoader whose position survives a restart (exact resume).

The order of an epoch is a pure function of (seed, epoch): a permutation from its own generator, with each
item's horizontal-flip bit drawn from the same generator, so the data pipeline never touches the global RNG
(the training step's noise and timesteps then replay exactly after a restore). The loader's state is the
epoch and the number of batches the training loop has processed in it (read from the trainer, so Lightning's
one-batch prefetch is not counted); on restore the sampler skips those batches without loading them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..checks import is_int


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class ResumableSampler(Sampler):
    """Yields (index, flip) pairs: this rank's share of a seeded permutation (all ranks equal length)."""

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, random_flip: bool = False) -> None:
        self.size, self.seed, self.shuffle, self.random_flip = size, seed, shuffle, random_flip
        self.epoch = 0
        # Items to leave out of epoch ``skip_epoch`` (set when restoring mid-epoch). Tied to that epoch: a
        # checkpoint taken after an epoch's last batch resumes in the next epoch, which must not skip anything
        # (it did: the next epoch came out empty and training went on in the one after).
        self.skip, self.skip_epoch = 0, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start, restored ones too
        self.epoch = epoch
        if epoch != self.skip_epoch:
            self.skip = 0

    def __len__(self) -> int:
        world, _ = _world()
        return self.size // world

    def __iter__(self):
        world, rank = _world()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        flips = (
            torch.rand(self.size, generator=generator) < 0.5
            if self.random_flip
            else torch.zeros(self.size, dtype=torch.bool)
        )
        share = self.size // world
        mine = order[rank::world][:share].tolist()
        flip = flips[order[rank::world][:share]].tolist()
        start, self.skip = (self.skip if self.epoch == self.skip_epoch else 0), 0
        yield from zip(mine[start:], flip[start:], strict=True)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a ResumableSampler with Lightning's stateful-loader protocol."""

    def __init__(
        self, dataset: Dataset, sampler: ResumableSampler, batch_size: int, trainer_ref: Any = None, **kwargs: Any
    ) -> None:
        world, _ = _world()
        if len(sampler) < batch_size:  # drop_last would leave zero batches: Lightning then stops without a step
            raise ValueError(
                f"the training set has {sampler.size} items, {len(sampler)} per rank on {world} rank(s), fewer "
                f"than data.batch_size={batch_size} (per rank): every epoch would have zero batches and training "
                f"would end without a step. Set data.batch_size to at most {len(sampler)}, or use more data."
            )
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **kwargs)
        self.trainer_ref = trainer_ref  # the LightningDataModule (its .trainer is set by Lightning)

    def _processed_in_epoch(self) -> int:
        trainer = getattr(self.trainer_ref, "trainer", None)
        if trainer is None:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._processed_in_epoch()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # Lightning restores this state after it has called set_epoch for the epoch it resumes in. A checkpoint
        # taken after an epoch's last batch resumes at the start of the next epoch: skipping the finished
        # epoch's batches there gave an empty epoch (and then a stop, or the wrong permutation).
        if state["batches"] >= len(self):
            self.sampler.epoch = self.sampler.skip_epoch = state["epoch"] + 1
            self.sampler.skip = 0
        else:
            self.sampler.epoch = self.sampler.skip_epoch = state["epoch"]
            self.sampler.skip = state["batches"] * self.batch_size


class IndexedItems(Dataset):
    """``(item, global index)`` pairs of ``dataset``: evaluation draws each item's noise from its index, so a
    validation loss is the same whatever the number of ranks the items are sharded over."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.dataset[index], index


class EvalShardSampler(Sampler):
    """The first ``size`` indices, sharded over ranks without padding (rank r takes r, r + world, ...): every
    item is evaluated exactly once across the ranks."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        world, rank = _world()
        return len(range(rank, self.size, world))

    def __iter__(self):
        world, rank = _world()
        yield from range(rank, self.size, world)


def eval_loader(dataset: Dataset, batch_size: int, seed: int, trainer: Any = None, **kwargs: Any) -> DataLoader:
    """A validation/test DataLoader of ``(x, index)`` batches, sharded over ranks with exact counts.

    With an integer ``trainer.limit_val_batches`` the evaluated items are the first limit x batch_size of the
    split, whatever the world size (Lightning would otherwise take limit batches per rank). The loader has its
    own generator: creating its iterator must not draw from the global RNG (exact resume)."""
    size = len(dataset)
    limit = getattr(trainer, "limit_val_batches", None)
    if is_int(limit) and limit > 0:
        size = min(size, limit * batch_size)
    return DataLoader(
        IndexedItems(dataset),
        batch_size=batch_size,
        sampler=EvalShardSampler(size),
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )
