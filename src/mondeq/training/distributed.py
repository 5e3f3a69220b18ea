"""Data-parallel training under ``torchrun``: this process's rank, the process group, and the
:class:`~torch.nn.parallel.DistributedDataParallel` engine that averages the ranks' gradients."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import InputError


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run (``torchrun``); one process: rank 0 of 1."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Distributed:
        """The process group this process has joined, or a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, t: Tensor) -> Tensor:
        """This rank's share of a global batch."""
        return t[self.rank :: self.world]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.tolist()

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def data_parallel(self, model: nn.Module) -> nn.Module:
        """``model`` itself in one process; across ranks, ``model`` in :class:`DistributedDataParallel` (rank
        0's parameters and buffers on every rank, then gradients all-reduced in buckets while the backward
        runs). DDP averages the ranks' gradients: each rank's loss is ``world`` times its share of the global
        mean."""
        if self.world == 1:
            return model
        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def checked_on_main(self, check: Callable[[], None]) -> None:
        """Run ``check`` on rank 0 only; if it raises :class:`~mondeq.errors.InputError` (or ``OSError``), every
        rank raises together, so that none is left waiting for another (whatever each node's disk holds)."""
        problem = None
        if self.main:
            try:
                check()
            except (InputError, OSError) as e:
                problem = str(e)
        if self.sum([float(problem is not None)])[0] > 0:
            raise InputError(problem or "rank 0 refused to go on (its error says why)")

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


@contextlib.contextmanager
def process_group(device: str) -> Iterator[tuple[Distributed, str]]:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, NCCL on GPUs) and
    leave it on exit: a process that ends still joined can abort while its gloo threads are torn down.
    Yields this process's :class:`Distributed` and its device (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield Distributed(), device
        return
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    try:
        yield Distributed(dist.get_rank(), dist.get_world_size()), device
        dist.barrier()  # leave together: no rank closes its connections while another still writes
    finally:
        if joined:
            dist.destroy_process_group()
