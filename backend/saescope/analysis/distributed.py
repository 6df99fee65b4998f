"""The streaming precompute over the ranks of a torch.distributed group.

Owns which batches of contexts a rank streams (`owned_batches`: batch i goes to rank i mod world
size), where a rank checkpoints its share (`rank_state_file`, one file per rank next to the
one-process state, keyed by rank and world size) and `merge_rank_streams`, which gathers every
rank's `FeatureStream` states on rank 0 and folds them together (`FeatureStream.merge_state`) into
exactly what one process streaming every batch would hold. Rank 0 then gathers the examples and the
caller publishes once, as in a one-process run. It knows nothing about models or the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from saescope.analysis.streaming import FeatureStream
from saescope.ranks import Ranks

RANK_STATE_GLOB = "precompute_state.rank*.safetensors"


def owned_batches(start: int, n_batches: int, ranks: Ranks) -> list[int]:
    """The batches in `[start, n_batches)` this rank streams: every one in a one-process job, else
    those whose index is the rank modulo the world size."""
    return [b for b in range(start, n_batches) if b % ranks.world_size == ranks.rank]


def rank_state_file(work_dir: Path, ranks: Ranks) -> Path:
    """The checkpoint of this rank's share of the stream."""
    return Path(work_dir) / f"precompute_state.rank{ranks.rank}-of-{ranks.world_size}.safetensors"


def rank_fingerprint(fingerprint: str, ranks: Ranks) -> str:
    """A rank's checkpoint is valid only for the same inputs, rank and world size."""
    return hashlib.sha256(f"{fingerprint}|rank {ranks.rank} of {ranks.world_size}".encode()).hexdigest()


def clear_rank_states(work_dir: Path) -> None:
    """Remove every rank's checkpoint in `work_dir`."""
    for path in Path(work_dir).glob(RANK_STATE_GLOB):
        path.unlink(missing_ok=True)


def merge_rank_streams(streams: Sequence[FeatureStream], ranks: Ranks) -> list[FeatureStream] | None:
    """On rank 0: `streams` with every other rank's streams folded in, in rank order; None on the
    other ranks. Every rank must call it with one stream per dictionary, in the same order."""
    states = ranks.gather_to_main([s.state_dict() for s in streams])
    if states is None:
        return None
    for other in states[1:]:
        for stream, state in zip(streams, other):
            stream.merge_state(state)
    return list(streams)
