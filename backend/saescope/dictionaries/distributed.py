"""Data-parallel SAE training over the ranks of a torch.distributed group.

Owns `RankAverager` (what a trainer does differently on several ranks) and `train_distributed`
(run a training function on N gloo ranks of this machine: the Python side of `saescope train-sae
--nproc N`, for callers such as `saescope build`). Every rank cuts the same global batches from the
same source (`ChunkedBatches`), trains on its contiguous share of each, and averages gradients
weighted by share, so every rank takes the optimiser step one process fed the whole batch would
take (to float rounding). The step statistics are reduced the same way (batch means averaged by
share, per-latent firing counts summed, extras named `min_*` by minimum), so dead-latent counters,
density windows, resampling, the sparse-path choice and architecture state (e.g. the BatchTopK
threshold) agree across ranks. Architectures whose loss is a mean over tokens are exact; BatchTopK
selects its k*B activations per rank's share (k per token on average over each share). Rank 0
writes checkpoints and results (`training_stream.py`, `training_file.py`). It knows nothing about
language models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from saescope.dictionaries.training_spec import SAEParameters, StepContext, StepStats
from saescope.ranks import Ranks, run_on_ranks

MIN_PREFIX = "min_"  # step extras reduced by minimum over ranks; every other extra is a batch mean


class RankAverager:
    """One trainer's share of each global batch and the all-reduce that makes ranks agree."""

    def __init__(self, ranks: Ranks) -> None:
        self.ranks = ranks

    def gradients(self, trainer: Any, x: Tensor, ctx: StepContext) -> StepStats:
        """Gradients and statistics of the global batch `x [B, d_in]` from this rank's share of it:
        the trainer's own step on rows `ranks.shard(B)`, then averaged over ranks."""
        lo, hi = self.ranks.shard(x.shape[0])
        rows = hi - lo
        # an empty share (a last batch with fewer rows than ranks) steps on one row with weight 0
        local = x[lo:hi] if rows else x[:1]
        stats = trainer.compute_gradients(local, ctx)
        return self.reduce(trainer.params, stats, rows / x.shape[0])

    def reduce(self, params: SAEParameters, stats: StepStats, weight: float) -> StepStats:
        """Average `.grad` and the statistics over ranks, this rank's share weighing `weight`."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params.trainable()]
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(weight)
        self.ranks.sum_(flat)
        offset = 0
        for p in params.trainable():
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n
        mean_keys = sorted(k for k in stats.extra if not k.startswith(MIN_PREFIX))
        min_keys = sorted(k for k in stats.extra if k.startswith(MIN_PREFIX))
        means = torch.stack(
            [stats.loss, stats.mse, stats.sparsity, stats.aux, stats.l0, *(stats.extra[k] for k in mean_keys)]
        ).double().reshape(-1).mul_(weight)
        self.ranks.sum_(means)
        counts = stats.counts.float().clone()  # firing counts: sums over tokens, not means
        if weight == 0:
            counts.zero_()
        self.ranks.sum_(counts)
        extra = {k: means[5 + i].to(stats.loss.dtype) for i, k in enumerate(mean_keys)}
        if min_keys:
            mins = torch.stack([stats.extra[k] for k in min_keys]).double().reshape(-1)
            if weight == 0:
                mins.fill_(float("inf"))
            self.ranks.min_(mins)
            extra.update({k: mins[i].to(stats.loss.dtype) for i, k in enumerate(min_keys)})
        dtype = stats.loss.dtype
        return StepStats(means[0].to(dtype), means[1].to(dtype), means[2].to(dtype), means[3].to(dtype),
                         means[4].to(dtype), counts, extra)


def attach_ranks(trainers: Sequence[Any], ranks: Ranks) -> None:
    """Make `trainers` train data-parallel over `ranks` (nothing changes for a one-process job)."""
    if not ranks.distributed:
        return
    for t in trainers:
        t.averager = RankAverager(ranks)


def train_distributed(train: Callable[..., Any], *args: Any, nproc: int = 2, **kwargs: Any) -> None:
    """Run `train(*args, **kwargs)` on `nproc` gloo ranks of this machine and wait for them.

    `train` is a module-level function that trains through `training_stream.train_saes_from_chunks`
    (e.g. `training_file.train_saes_from_file`, or a pipeline step calling it): each rank then trains on
    its share of every batch and rank 0 writes the checkpoint and the output folders, which are the
    result (read them afterwards). When a rank dies the others are stopped and `ranks.RankFailed`
    says so; the checkpoint stays intact and calling again resumes. `nproc=1` calls `train` here."""
    if nproc == 1:
        train(*args, **kwargs)
        return
    run_on_ranks(nproc, train, *args, **kwargs)
