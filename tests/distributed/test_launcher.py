"""`--nproc N` starts N ranks of one command and takes the job down when a rank fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from saescope.errors import ConfigError
from saescope.ranks import RankFailed, Ranks, launch_ranks


def test_a_failing_rank_stops_the_launch_with_a_message_naming_it(tmp_path: Path) -> None:
    argv = ["train-sae", "--activations", str(tmp_path / "missing.npy"), "--d-sae", "8", "--out", str(tmp_path / "o")]
    with pytest.raises(RankFailed, match=r"rank [01] of 2 exited with status 2 .*run the same command again"):
        launch_ranks(argv, 2)
    assert not (tmp_path / "o").exists()


def test_nproc_inside_a_job_with_ranks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="drop --nproc"):
        launch_ranks(["train-sae", "--help"], 2)


@pytest.mark.parametrize("n, world", [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_rank_shards_are_contiguous_and_cover_every_row_once(n: int, world: int) -> None:
    shards = [Ranks(rank, world).shard(n) for rank in range(world)]
    assert shards[0][0] == 0 and shards[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))
    assert max(hi - lo for lo, hi in shards) - min(hi - lo for lo, hi in shards) <= 1
