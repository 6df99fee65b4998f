"""Pre-rendered feature pages: written at publish, equal to the live rendering, never stale."""

from __future__ import annotations

import gzip

import pytest
from sqlalchemy import delete, func, select, text

from saescope.analysis.config import PrecomputeConfig
from saescope.store.database import create_database
from saescope.store.pages import fill_feature_pages, missing_pages
from saescope.pipeline.publish import DictionaryEntry, ModelRecord, precompute_and_publish
from saescope.store.reader import StoreReader
from saescope.store.schema import FeaturePageRow

from store_helpers import make_sae

HOOK = "blocks.0.hook_resid_post"
FAST = dict(progress=False, umap=True, top_k=3, n_intervals=2, examples_per_interval=2, n_random=2,
            contexts_per_batch=8, neighbours_k=3)


@pytest.fixture
def clock(monkeypatch):
    """The store reader's monotonic clock, frozen: a one-item list the test moves by hand."""
    import saescope.store.reader as reader_module

    now = [1000.0]
    monkeypatch.setattr(reader_module.time, "monotonic", lambda: now[0])
    return now


def _publish(url: str, model, contexts, dictionary_id: str, d_sae: int, seed: int) -> None:
    entry = DictionaryEntry(dictionary_id, make_sae(32, d_sae, HOOK, seed))
    precompute_and_publish(url, model, ModelRecord(id="tiny"), [entry], contexts, PrecomputeConfig(**FAST))


def _stored_pages(url: str) -> dict[tuple[str, int], bytes]:
    engine = create_database(url)
    with engine.connect() as c:
        rows = c.execute(select(FeaturePageRow.dictionary_id, FeaturePageRow.index, FeaturePageRow.body)).all()
    engine.dispose()
    return {(d, int(i)): gzip.decompress(b) for d, i, b in rows}


def _live(url: str, dictionary_id: str, index: int) -> bytes:
    engine = create_database(url)
    try:
        return StoreReader(engine).feature_page_json(dictionary_id, index)
    finally:
        engine.dispose()


def _assert_pages_are_current(url: str, expected: dict[str, int]) -> None:
    pages = _stored_pages(url)
    assert sorted(pages) == sorted((d, i) for d, n in expected.items() for i in range(n))
    for (d, i), body in pages.items():
        assert body == _live(url, d, i), f"stale page {d}/{i}"


def test_publish_stores_every_page_and_keeps_them_current_when_later_publishes_change_them(tmp_path, model, contexts):
    from saescope.dictionaries.saelens_format import save_dictionary

    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    cfg = PrecomputeConfig(**FAST)
    first = make_sae(32, 6, HOOK, 5)
    save_dictionary(first, tmp_path / "dictionaries" / "first")  # found again by the later publishes
    report = precompute_and_publish(url, model, ModelRecord(id="tiny"), [DictionaryEntry("first", first, "dictionaries/first")],
                                    contexts, cfg, atlas_root=tmp_path)
    assert report.timings["pages"] >= 0
    _assert_pages_are_current(url, {"first": 6})
    before = _stored_pages(url)
    # a second dictionary at the same hook adds matches (and moves map points) of the first one
    precompute_and_publish(url, model, ModelRecord(id="tiny"), [DictionaryEntry("second", make_sae(32, 4, HOOK, 6))],
                           contexts, cfg, atlas_root=tmp_path)
    _assert_pages_are_current(url, {"first": 6, "second": 4})
    assert _stored_pages(url)[("first", 0)] != before[("first", 0)]
    assert b'"dictionary_id":"second"' in _stored_pages(url)[("first", 0)]
    # re-publishing "first" with other weights replaces its pages, never leaving the old ones
    precompute_and_publish(url, model, ModelRecord(id="tiny"), [DictionaryEntry("first", make_sae(32, 3, HOOK, 9))],
                           contexts, cfg)
    _assert_pages_are_current(url, {"first": 3, "second": 4})


def test_fill_renders_only_missing_pages_and_skips_building_dictionaries(tmp_path, model, contexts):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    precompute_and_publish(url, model, ModelRecord(id="tiny"), [DictionaryEntry("d", make_sae(32, 5, HOOK, 1))],
                           contexts, PrecomputeConfig(**FAST))
    engine = create_database(url)
    assert fill_feature_pages(engine) == 0  # complete: nothing to do
    with engine.begin() as c:  # as if a fill had been interrupted part way
        c.execute(delete(FeaturePageRow.__table__).where(FeaturePageRow.index.in_([1, 3])))
    assert missing_pages(engine) == {"d": [1, 3]}
    assert fill_feature_pages(engine) == 2
    assert missing_pages(engine) == {}
    with engine.begin() as c:
        c.execute(text("UPDATE dictionaries SET status = 'building' WHERE id = 'd'"))
        c.execute(delete(FeaturePageRow.__table__))
    assert fill_feature_pages(engine) == 0  # not ready: not rendered
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(FeaturePageRow)).scalar_one() == 0
    engine.dispose()


def test_reader_serves_stored_gzip_and_renders_live_without_pages(tmp_path, model, contexts):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    precompute_and_publish(url, model, ModelRecord(id="tiny"), [DictionaryEntry("d", make_sae(32, 4, HOOK, 1))],
                           contexts, PrecomputeConfig(**FAST))
    live = _live(url, "d", 2)
    reader = StoreReader.from_url(url)
    body, is_gzip = reader.get_feature_page("d", 2, accept_gzip=True)
    assert is_gzip and gzip.decompress(body) == live
    assert reader.get_feature_page("d", 2, accept_gzip=False) == (live, False)
    reader.close()
    # a store written before pages existed (no table): rendered live, same bytes
    engine = create_database(url)
    with engine.begin() as c:
        c.execute(text("DROP TABLE feature_pages"))
    engine.dispose()
    reader = StoreReader.from_url(url)
    assert reader.get_feature_page("d", 2, accept_gzip=True) == (live, False)
    # a publish (or demo run) while it is served adds the table and the pages: used once looked for again
    from saescope.store.database import init_schema

    engine = create_database(url)
    init_schema(engine)
    assert fill_feature_pages(engine) == 4
    engine.dispose()
    assert reader.get_feature_page("d", 2, accept_gzip=True) == (live, False)  # not looked for yet
    reader._pages_table_seen_at -= 60.0  # as if PAGES_TABLE_RECHECK_S had passed
    body, is_gzip = reader.get_feature_page("d", 2, accept_gzip=True)
    assert is_gzip and gzip.decompress(body) == live
    reader.close()


@pytest.mark.postgres
def test_pages_on_postgresql(pg_url, model, contexts):
    precompute_and_publish(pg_url, model, ModelRecord(id="tiny"), [DictionaryEntry("a", make_sae(32, 4, HOOK, 1))],
                           contexts, PrecomputeConfig(**FAST))
    precompute_and_publish(pg_url, model, ModelRecord(id="tiny"), [DictionaryEntry("b", make_sae(32, 3, HOOK, 2))],
                           contexts, PrecomputeConfig(**FAST))
    _assert_pages_are_current(pg_url, {"a": 4, "b": 3})
    reader = StoreReader.from_url(pg_url)
    body, is_gzip = reader.get_feature_page("a", 1, accept_gzip=True)
    assert is_gzip and gzip.decompress(body) == _live(pg_url, "a", 1)
    reader.close()


def test_dictionary_brief_is_cached_for_at_most_its_ttl(tmp_path, model, contexts, clock):
    """Live requests see a re-published dictionary (new created_at) once the brief's TTL has passed."""
    import saescope.store.reader as reader_module
    from saescope.errors import NotFoundError

    now = clock
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    _publish(url, model, contexts, "d", 4, 1)
    reader = StoreReader.from_url(url)
    first = reader.get_dictionary_brief("d")
    assert first["d_sae"] == 4 and first["hook_name"] == HOOK and first["created_at"].tzinfo is not None
    _publish(url, model, contexts, "d", 6, 2)
    now[0] += reader_module.BRIEF_TTL_S / 2
    assert reader.get_dictionary_brief("d") == first  # within the TTL: the cached brief
    now[0] += reader_module.BRIEF_TTL_S
    second = reader.get_dictionary_brief("d")
    assert second["d_sae"] == 6 and second["created_at"] > first["created_at"]
    with pytest.raises(NotFoundError):
        reader.get_dictionary_brief("missing")
    reader.close()


def test_briefs_of_a_model_are_cached_for_at_most_their_ttl(tmp_path, model, contexts, clock):
    """Live requests that name no dictionary see a newly published one once the TTL has passed; the
    briefs match `get_dictionary_brief` and come in `list_dictionaries` order."""
    import saescope.store.reader as reader_module

    now = clock
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    _publish(url, model, contexts, "b", 4, 1)
    reader = StoreReader.from_url(url)
    assert reader.ready_dictionary_briefs("tiny") == [reader.get_dictionary_brief("b")]
    assert reader.ready_dictionary_briefs("other") == []
    _publish(url, model, contexts, "a", 3, 2)
    now[0] += reader_module.BRIEF_TTL_S / 2
    assert [b["id"] for b in reader.ready_dictionary_briefs("tiny")] == ["b"]  # within the TTL
    now[0] += reader_module.BRIEF_TTL_S
    briefs = reader.ready_dictionary_briefs("tiny")
    assert [b["id"] for b in briefs] == [d["id"] for d in reader.list_dictionaries("tiny")] == ["a", "b"]
    assert briefs == [reader.get_dictionary_brief("a"), reader.get_dictionary_brief("b")]
    assert reader.ready_dictionary_briefs(None) == briefs
    briefs[0]["d_sae"] = -1  # callers get copies: the cache is not theirs to change
    assert reader.ready_dictionary_briefs("tiny")[0]["d_sae"] == 3
    reader.close()


def test_pages_can_be_turned_off_and_are_then_rendered_live(tmp_path, model, contexts):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    precompute_and_publish(url, model, ModelRecord(id="tiny"), [DictionaryEntry("d", make_sae(32, 4, HOOK, 1))],
                           contexts, PrecomputeConfig(**{**FAST, "feature_pages": False}))
    assert _stored_pages(url) == {}
    reader = StoreReader.from_url(url)
    assert reader.get_feature_page("d", 3, accept_gzip=True) == (_live(url, "d", 3), False)
    reader.close()
