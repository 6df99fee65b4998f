"""A precompute over 2 gloo ranks publishes, row for row, the store one process publishes."""

from __future__ import annotations

import datetime
import gzip
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import create_engine

from saescope.ranks import RankFailed, run_on_ranks
from saescope.store.dump import dumped_tables, read_rows, snapshot

from rank_helpers import publish_tiny

HOOK = "blocks.0.mlp.hook_post"
CONTEXTS = 88  # 6 batches of 16 contexts (the last one short): rank 0 streams 3, rank 1 streams 3


def _saes(folder: Path, tiny_lm_dir: Path) -> list[str]:
    """A ReLU and a TopK SAE with random weights on the tiny model's MLP hook, as SAELens folders."""
    from saescope.dictionaries.architectures.standard import StandardSAE
    from saescope.dictionaries.architectures.topk import TopKSAE
    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.dictionaries.saelens_format import save_dictionary
    from saescope.lm.loading import load_lm

    model = load_lm(tiny_lm_dir, device="cpu")
    meta = DictionaryMetadata(model_name="tiny", hook_name=HOOK, context_size=int(model.cfg.n_ctx))
    d_in = int(model.cfg.d_mlp)
    relu, topk = StandardSAE(d_in, 96, meta), TopKSAE(d_in, 128, 4, meta)
    for seed, sae in enumerate((relu, topk)):
        sae.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        relu.b_enc.fill_(-0.3)  # sparse, as a trained SAE
    out = []
    for name, sae in (("relu-96", relu), ("topk-128", topk)):
        save_dictionary(sae, folder / name)
        out.append(str(folder / name))
    return out


def _comparable(column: str, value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return gzip.decompress(value)  # a gzip header carries its own time stamp
        except OSError:
            return value
    if column == "provenance" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "published_at"}
    return value


def _published_rows(db_file: Path) -> dict[str, list[dict[str, Any]]]:
    """Every published row of a store, without the times rows were written at."""
    db = create_engine(f"sqlite:///{db_file}")
    try:
        with snapshot(db) as conn:
            return {
                table.name: [
                    {k: _comparable(k, v) for k, v in row.items() if not isinstance(v, datetime.datetime)}
                    for row in read_rows(conn, table)
                ]
                for table in dumped_tables()
            }
    finally:
        db.dispose()


@pytest.mark.slow
def test_precompute_on_two_ranks_publishes_the_one_process_store_row_for_row(tmp_path: Path, tiny_lm_dir: Path) -> None:
    saes = _saes(tmp_path / "saes", tiny_lm_dir)
    one, two = tmp_path / "one", tmp_path / "two"
    publish_tiny(f"sqlite:///{one}.db", str(tiny_lm_dir), saes, str(one), CONTEXTS)
    run_on_ranks(2, publish_tiny, f"sqlite:///{two}.db", str(tiny_lm_dir), saes, str(two), CONTEXTS)

    rows_one, rows_two = _published_rows(Path(f"{one}.db")), _published_rows(Path(f"{two}.db"))
    assert rows_one.keys() == rows_two.keys()
    assert len(rows_one["features"]) == 96 + 128 and rows_one["examples"]
    for table in rows_one:
        assert len(rows_one[table]) == len(rows_two[table]), table
        for a, b in zip(rows_one[table], rows_two[table]):
            assert a == b, f"{table}: {sorted(k for k in a if a[k] != b.get(k))} differ"
    assert not list(two.glob("precompute_state*")), "the per-rank states are removed once the store is published"


@pytest.mark.slow
def test_a_rank_that_dies_mid_precompute_stops_the_job_and_a_rerun_resumes_each_share(
    tmp_path: Path, tiny_lm_dir: Path
) -> None:
    saes = _saes(tmp_path / "saes", tiny_lm_dir)
    one, two = tmp_path / "one", tmp_path / "two"
    publish_tiny(f"sqlite:///{one}.db", str(tiny_lm_dir), saes, str(one), CONTEXTS)
    with pytest.raises(RankFailed, match="rank 1 of 2 was killed by signal SIGKILL"):
        run_on_ranks(2, publish_tiny, f"sqlite:///{two}.db", str(tiny_lm_dir), saes, str(two), CONTEXTS, 3)
    assert (two / "precompute_state.rank1-of-2.safetensors").is_file(), "rank 1 checkpointed its first batch"
    first = tmp_path / "first"
    run_on_ranks(2, publish_tiny, f"sqlite:///{two}.db", str(tiny_lm_dir), saes, str(two), CONTEXTS, None, str(first))
    assert Path(f"{first}.rank1").read_text() == "3", "rank 1 resumed after the batch it had checkpointed"
    assert _published_rows(Path(f"{one}.db")) == _published_rows(Path(f"{two}.db"))
    assert not list(two.glob("precompute_state*"))
