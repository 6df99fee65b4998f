"""Which rank of a data-parallel job this process is, the few collectives saescope uses, and launchers.

Owns `Ranks` (this process's rank and the job's world size, with sum / min / gather-to-rank-0 /
barrier collectives that are no-ops in a one-process job), `current_ranks()` (joins the
torch.distributed group that `torchrun` or a launcher below describes in the environment: gloo for
CPU tensors, NCCL for CUDA tensors, each rank on `cuda:LOCAL_RANK`), `launch_ranks(argv, nproc)`
(starts N copies of a `saescope` command as the ranks of one gloo group on this machine: what
`--nproc N` does) and `run_on_ranks(nproc, fn, ...)` (the same for a Python function, through
torch.multiprocessing). Both launchers stop every rank as soon as one dies and raise `RankFailed`
naming it. It imports no stage and knows nothing about what the ranks compute.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from saescope.errors import ConfigError, SaescopeError

ENV_KEYS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # a rank waiting on a peer longer than this gives up
STOP_GRACE_S = 10.0  # a rank asked to stop is killed after this many seconds


class RankFailed(SaescopeError):
    """One rank of a multi-process job died; the others were stopped."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job (rank 0 of 1 when it runs alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints, results and the store."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> tuple[int, int]:
        """Rows `[lo, hi)` of `n` that this rank owns: contiguous, in rank order, sizes differing by
        at most one (concatenating every rank's rows gives the `n` rows back in order)."""
        base, extra = divmod(n, self.world_size)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """`t` replaced in place by its sum over ranks (returned)."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def min_(self, t: torch.Tensor) -> torch.Tensor:
        """`t` replaced in place by its elementwise minimum over ranks (returned)."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t

    def gather_to_main(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` in rank order on rank 0; None on the other ranks."""
        if not self.distributed:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.distributed:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"${name} must be a whole number, not {raw!r}") from None


def current_ranks() -> Ranks:
    """This process's ranks: joins the group the environment describes (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT, LOCAL_RANK, as torchrun sets them) on the first call; rank 0 of 1 when
    WORLD_SIZE is unset or 1. On a CUDA machine each rank uses `cuda:LOCAL_RANK`."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", dist.get_rank()))
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Ranks()
    missing = [k for k in ENV_KEYS if not os.environ.get(k)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: start ranks with torchrun or --nproc")
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside [0, WORLD_SIZE={world})")
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed: run with one process")
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)
    return Ranks(rank, world, local_rank)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for the group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_environment(rank: int, nproc: int, port: int, threads: int | None = None) -> dict[str, str]:
    """The environment variables that make a process rank `rank` of an `nproc`-rank group on this machine."""
    env = {
        "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    }
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def threads_per_rank(nproc: int) -> int:
    """CPU threads each of `nproc` ranks uses: the cores shared evenly (at least one)."""
    return max(1, (os.cpu_count() or 1) // nproc)


def _check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, not {nproc}")
    if _env_int("WORLD_SIZE", 1) > 1:
        raise ConfigError("--nproc inside a job that already has ranks (torchrun): drop --nproc")


def _failure(rank: int, nproc: int, how: str) -> RankFailed:
    return RankFailed(
        f"rank {rank} of {nproc} {how}; the other ranks were stopped. Checkpoints written so far are intact: "
        "once the cause is fixed, run the same command again to resume"
    )


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`, which stops the ranks


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch_ranks(argv: Sequence[str], nproc: int, poll_s: float = 0.2) -> None:
    """Run `saescope ARGV` as `nproc` ranks of one gloo group on this machine and wait for all of them.

    Each rank gets its share of the CPU cores (OMP_NUM_THREADS, unless set). When one rank exits
    with an error every other rank is stopped and `RankFailed` names the first that failed."""
    _check_nproc(nproc)
    port = free_port()
    threads = None if os.environ.get("OMP_NUM_THREADS") else threads_per_rank(nproc)
    previous = None
    if threading.current_thread() is threading.main_thread():  # `docker stop` / kill: stop the ranks too
        previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    procs = [
        subprocess.Popen([sys.executable, "-m", "saescope.cli", *argv],
                         env={**os.environ, **rank_environment(r, nproc, port, threads)})
        for r in range(nproc)
    ]
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                rank, code = failed[0]
                how = (f"was killed by {signal.Signals(-code).name}" if code < 0
                       else f"exited with status {code} (its error is printed above)")
                raise _failure(rank, nproc, how)
            if all(c == 0 for c in codes):
                return
            time.sleep(poll_s)
    finally:
        _stop(procs)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _rank_entry(index: int, nproc: int, port: int, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    os.environ.update(rank_environment(index, nproc, port))
    torch.set_num_threads(threads_per_rank(nproc))
    current_ranks()
    try:
        fn(*args, **kwargs)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_on_ranks(nproc: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Call `fn(*args, **kwargs)` in `nproc` fresh processes, the ranks of one gloo group.

    `fn` and its arguments must be picklable (a module-level function). Returns when every rank
    has returned; when one raises or dies, the others are stopped and `RankFailed` names it."""
    _check_nproc(nproc)
    import torch.multiprocessing as mp

    port = free_port()
    context = mp.start_processes(_rank_entry, args=(nproc, port, fn, args, kwargs), nprocs=nproc, join=False,
                                 start_method="spawn")
    try:
        while not context.join():
            pass
    except mp.ProcessRaisedException as exc:
        last = [line for line in str(exc).strip().splitlines() if line.strip()][-1:]
        raise _failure(exc.error_index, nproc, f"raised {last[0].strip() if last else 'an error'}") from None
    except mp.ProcessExitedException as exc:
        how = f"was killed by signal {exc.signal_name}" if exc.signal_name else f"exited with status {exc.exit_code}"
        raise _failure(exc.error_index, nproc, how) from None
