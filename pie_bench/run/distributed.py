"""Data-parallel runs under ``accelerate launch`` or ``torchrun``.

Both launchers export RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; accelerate's
``PartialState`` turns that into a process group (gloo on CPU, nccl on GPUs) and also understands
MPI launches. Every collective the harness needs carries small Python objects (done keys, record
lines, the leaderboard), so they go through a gloo group even when the main backend is nccl.

Sharding is over the *remaining* (editor, sample) work, computed once by rank 0 from what is on disk
and broadcast, so every rank agrees on the split and a resume may use any process count: the cache
is keyed by sample, never by rank.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, TypeVar

import torch

from pie_bench.core.errors import ConfigError, DataError, HarnessError, ResultsError
# the launch environment is read without torch (``bench --processes`` decides before importing it)
from pie_bench.run.spawn import env_world_size, is_main_process  # noqa: F401  (re-exported)

T = TypeVar("T")

# A rank that finishes early waits at the final gather for the slowest one; a generous limit keeps
# long GPU runs alive while a peer that died without its launcher noticing still ends the run.
TIMEOUT_ENV = "PIE_BENCH_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 6 * 3600

_ERRORS = {cls.__name__: cls for cls in (HarnessError, DataError, ConfigError, ResultsError)}


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Strided split: rank k gets items k, k+N, ... Samples are ordered by edit type, so every rank
    gets a similar mix of categories (and similar run time) rather than a contiguous block."""
    return list(items[rank::world])


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    device: Optional[torch.device] = None
    _group: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    # -- collectives (no-ops in a single process) --------------------------------------------------
    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier(group=self._group)

    def broadcast(self, obj: Any) -> Any:
        """``obj`` from rank 0, returned on every rank."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0, group=self._group)
        return box[0]

    def gather(self, obj: Any) -> Optional[list]:
        """Every rank's ``obj`` as a list on rank 0 (None elsewhere)."""
        if not self.active:
            return [obj]
        out = [None] * self.world if self.is_main else None
        torch.distributed.gather_object(obj, out, dst=0, group=self._group)
        return out

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 and hand its result to every rank. A harness error raised there is
        re-raised on every rank with the same one-line message, so no rank is left waiting."""
        if not self.active:
            return fn()
        payload: Any = None
        if self.is_main:
            try:
                payload = ("ok", fn())
            except HarnessError as exc:
                payload = ("error", type(exc).__name__, str(exc))
            except BaseException as exc:  # anything else still releases the peers before propagating
                self.broadcast(("error", "HarnessError", f"rank 0 failed: {type(exc).__name__}: {exc}"))
                raise
        payload = self.broadcast(payload)
        if payload[0] == "error":
            raise _ERRORS.get(payload[1], HarnessError)(payload[2])
        return payload[1]


_DIST: Optional[Dist] = None


def init_distributed(device: str = "cpu") -> Dist:
    """The process group of this launch (created once), or a single-process ``Dist``.

    With ``--device cuda`` each rank takes ``cuda:<local rank>``; an explicit ``cuda:K`` is kept."""
    global _DIST
    if _DIST is not None:
        return _DIST
    if env_world_size() <= 1:
        _DIST = Dist()
        return _DIST
    from accelerate import PartialState

    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    on_cpu = torch.device(device).type == "cpu"
    state = PartialState(cpu=on_cpu, timeout=timeout)
    if state.num_processes <= 1 or not torch.distributed.is_initialized():
        raise ConfigError(f"WORLD_SIZE={env_world_size()} but no process group could be formed for --device "
                          f"{device}; launch with `accelerate launch --num_processes N cli.py bench ...` "
                          "or `torchrun --nproc_per_node N cli.py bench ...`")
    backend = torch.distributed.get_backend()
    group = None if backend == "gloo" else torch.distributed.new_group(backend="gloo", timeout=timeout)
    _DIST = Dist(rank=state.process_index, world=state.num_processes, local_rank=state.local_process_index,
                 backend=backend, device=state.device, _group=group)
    return _DIST


def rank_device(device: str, dist: Dist) -> str:
    """The device this rank computes on."""
    dev = torch.device(device)
    if dist.active and dev.type not in ("cpu",) and dev.index is None:
        return f"{dev.type}:{dist.local_rank}"
    return device
