"""Which samples each process reads: the training stream (:class:`StepSampler`) and evaluation shards.

Training is counted in steps (one batch per process). :class:`StepSampler` makes the sample stream a pure
function of the step, so a run stopped after any step and resumed there reads exactly the samples it would
have read, on any number of processes. Evaluation uses :class:`ShardSampler`: every sample exactly once over
all ranks (``DistributedSampler`` pads with repeats, which biases metrics).
"""
import itertools
from typing import Dict, Iterator, List, Optional

import torch
from torch.utils.data import Sampler

__all__ = ["ShardSampler", "StepSampler"]


class StepSampler(Sampler):
    """Sample indices for steps ``start_step, start_step + 1, ...``, endlessly.

    Pass ``p`` over the data is a permutation of ``0..length-1`` drawn from ``seed + p``. Step ``s`` takes
    ``B = micro_batch * world_size`` stream positions and rank ``r`` the ``micro_batch`` of them starting at
    ``r * micro_batch``:

    * ``steps_per_pass=None`` (iteration-based training): the stream runs through the passes back to back,
      step ``s`` reading positions ``s*B .. (s+1)*B - 1``;
    * ``steps_per_pass=K`` (epochs): step ``s`` is step ``s % K`` of pass ``s // K``, which reads the first
      ``K*B`` positions of its permutation (the rest is dropped, like ``drop_last``). With one process this is
      exactly the order of ``DistributedSampler(shuffle=True, seed)`` + ``set_epoch(p)`` + ``drop_last``.

    Set :attr:`start_step` before iterating; the stream does not depend on where it starts.
    """

    def __init__(self, length: int, micro_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 steps_per_pass: Optional[int] = None) -> None:
        if steps_per_pass is not None and steps_per_pass * micro_batch * world_size > length:
            raise ValueError(f"{steps_per_pass} steps of {micro_batch * world_size} samples do not fit in {length}")
        self.length, self.micro_batch, self.rank, self.world_size, self.seed = length, micro_batch, rank, world_size, seed
        self.steps_per_pass = steps_per_pass
        self.start_step = 0
        self._perms: Dict[int, List[int]] = {}

    def _perm(self, p: int) -> List[int]:
        if p not in self._perms:
            self._perms = {p: torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + p)).tolist()}
        return self._perms[p]

    def __iter__(self) -> Iterator[int]:
        global_batch = self.micro_batch * self.world_size
        for step in itertools.count(self.start_step):
            if self.steps_per_pass is None:
                start = step * global_batch + self.rank * self.micro_batch
                for position in range(start, start + self.micro_batch):
                    p, i = divmod(position, self.length)
                    yield self._perm(p)[i]
            else:
                p, k = divmod(step, self.steps_per_pass)
                start = k * global_batch + self.rank * self.micro_batch
                yield from self._perm(p)[start:start + self.micro_batch]


class ShardSampler(Sampler):
    """Indices ``rank, rank + world_size, ...`` of ``0..length-1``: every sample exactly once over all ranks."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
