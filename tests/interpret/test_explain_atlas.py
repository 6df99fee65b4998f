"""`explain_atlas` and `saescope explain` on a real tiny atlas: fragments from the model, LLM-free
explanations and scores written to the store (pages refilled), resume, errors, and the API."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from saescope.atlas_layout import AtlasLayout
from saescope.errors import NotFoundError
from saescope.interpret.config import ExplainConfig
from saescope.interpret.fragments import collect_fragments
from saescope.store.database import create_database
from saescope.store.pages import missing_pages
from saescope.store.reader import StoreReader
from saescope.store.schema import ExplanationRow, ExplanationScoreRow, FeatureFragmentsRow, FeatureRow

CONFIG = ExplainConfig(n_contexts=96, n_top=8, n_random=8, n_random_activating=4, progress=False)


@pytest.fixture(scope="module")
def explained_atlas(demo_atlas, tmp_path_factory):
    """A copy of the demo atlas explained LLM-free with every scorer (and its report)."""
    from saescope.pipeline.explain import explain_atlas

    root = tmp_path_factory.mktemp("explained") / "atlas"
    shutil.copytree(demo_atlas.root, root)
    report = explain_atlas(root, None, None, "lookup", ["simulation", "detection", "fuzzing"], CONFIG, progress=False)
    return root, report


def test_fragments_are_windows_of_distinct_documents_with_the_features_true_activations(demo_atlas, tiny_lm) -> None:
    from saescope.dictionaries.saelens_format import load_dictionary
    from saescope.pipeline.contexts import corpus_contexts

    sae = load_dictionary(AtlasLayout(root=demo_atlas.root).dictionary_dir("relu-64"))
    contexts = corpus_contexts(tiny_lm, "train", 64, 3)
    (frags,) = collect_fragments(tiny_lm, [("relu-64", sae)], contexts.tokens, contexts.doc_ids, CONFIG)
    live = [f for f in frags.features if not f.is_dead]
    assert live and frags.fragment_tokens == contexts.tokens.shape[1] - 1
    f = max(live, key=lambda x: len(x.explanation))
    top = f.explanation + f.scoring
    assert len(top) <= CONFIG.n_top and len({x.doc_id for x in top}) == len(top)
    assert f.explanation[0].activations.max() >= f.scoring[0].activations.max()
    assert len(f.random) == len(frags.features[0].random) and all(x.activations.max() > 0 for x in f.random_activating)
    # the stored activations are the dictionary's own on that window
    frag = f.explanation[0]
    row = next(i for i, toks in enumerate(contexts.tokens) if np.array_equal(toks[1:1 + len(frag.tokens)], frag.tokens))
    _, cache = tiny_lm.run_with_cache(torch.as_tensor(contexts.tokens[row:row + 1]), names_filter=sae.metadata.hook_name)
    with torch.no_grad():
        acts = sae.encode(cache[sae.metadata.hook_name])[0, 1:1 + len(frag.tokens), f.index].numpy()
    np.testing.assert_allclose(frag.activations, acts, rtol=1e-5, atol=1e-6)


def test_every_live_feature_gets_an_explanation_and_scores_with_their_versions(explained_atlas) -> None:
    root, report = explained_atlas
    db = create_database(AtlasLayout(root=root).sqlite_url)
    with db.connect() as conn:
        n_features = conn.execute(select(func.count()).select_from(FeatureRow)).scalar()
        n_expl = conn.execute(select(func.count()).select_from(ExplanationRow)
                              .where(ExplanationRow.explainer == "lookup/1")).scalar()
        n_frag = conn.execute(select(func.count()).select_from(FeatureFragmentsRow)).scalar()
        versions = set(conn.execute(select(ExplanationScoreRow.version).distinct()).scalars())
        scored = conn.execute(select(func.count()).select_from(FeatureRow).where(FeatureRow.score.is_not(None))).scalar()
    assert n_frag == n_features
    assert n_expl == sum(d.n_explained for d in report.dictionaries) > 0
    assert versions == {"simulation-lookup/1", "detection-lookup/1", "fuzzing-lookup/1"}
    assert scored > 0
    for d in report.dictionaries:
        sims = {s["variant"]: s for s in d.summary if s["scorer"] == "simulation"}
        assert set(sims) == {"top_and_random", "top", "random"}
        top = sims["top"]
        assert top["n"] + top["n_nan"] + top["n_failed"] == d.n_features - d.n_dead
    assert missing_pages(db) == {}  # the pages dropped in the write were rendered again
    db.dispose()


def test_the_feature_page_shows_the_explanation_with_every_scorer(explained_atlas) -> None:
    root, _ = explained_atlas
    reader = StoreReader.from_url(AtlasLayout(root=root).sqlite_url)
    feats = reader.list_features("relu-64", sort="score", order="desc", limit=1)["items"]
    detail = reader.get_feature("relu-64", feats[0]["index"])
    (expl,) = [e for e in detail["explanations"] if e["explainer"] == "lookup/1"]
    assert expl["text"].startswith("Fires on the tokens")
    assert {(s["scorer"], s["variant"]) for s in expl["scores"]} >= {("simulation", "top"), ("detection", "balanced_accuracy")}
    assert detail["score"] == pytest.approx(expl["score_top_random"])
    reader.close()


def test_a_rerun_resumes_from_the_log_and_writes_the_same_scores(explained_atlas, tmp_path) -> None:
    from saescope.pipeline.explain import explain_atlas

    root, report = explained_atlas
    copy = tmp_path / "atlas"
    shutil.copytree(root, copy)
    again = explain_atlas(copy, None, ["relu-64"], "lookup", ["simulation", "detection", "fuzzing"], CONFIG,
                          progress=False)
    first = next(d for d in report.dictionaries if d.id == "relu-64")
    assert again.dictionaries[0].summary == first.summary


def test_an_unknown_dictionary_is_refused_and_changes_nothing(explained_atlas) -> None:
    from saescope.pipeline.explain import explain_atlas

    root, _ = explained_atlas
    before = (root / "atlas.db").stat().st_mtime_ns
    with pytest.raises(NotFoundError, match="no ready dictionary 'nope'"):
        explain_atlas(root, None, ["nope"], "lookup", ["simulation"], CONFIG, progress=False)
    assert (root / "atlas.db").stat().st_mtime_ns == before


def test_the_cli_explains_one_dictionary_and_rejects_an_unknown_scorer(demo_atlas, tmp_path, capsys) -> None:
    from saescope.cli import main

    copy = tmp_path / "atlas"
    shutil.copytree(demo_atlas.root, copy)
    assert main(["explain", "--atlas", str(copy), "--dictionary", "relu-64", "--scorer", "simulation",
                 "--contexts", "64", "--device", "cpu"]) == 0
    assert "relu-64" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--atlas", str(copy), "--scorer", "vibes"])
    assert exc.value.code == 2
    assert main(["explain", "--atlas", str(copy), "--explainer", "openai"]) == 2  # no endpoint configured


def test_the_api_serves_summaries_per_dictionary_and_searches_every_dictionary(explained_atlas) -> None:
    from fastapi.testclient import TestClient

    from saescope.api.app import create_app
    from saescope.api.settings import ApiSettings

    root, report = explained_atlas
    layout = AtlasLayout(root=root)
    app = create_app(ApiSettings(store_url=layout.sqlite_url, atlas_root=root, device="cpu", torch_threads=1))
    with TestClient(app) as client:
        hook = client.get("/api/v1/dictionaries").json()[0]["hook_name"]
        body = client.get("/api/v1/interpretability", params={"hook_name": hook}).json()
        ids = {d["dictionary_id"] for d in body["dictionaries"]}
        assert ids == {d.id for d in report.dictionaries}
        for d in body["dictionaries"]:
            (run,) = d["runs"]
            sim = next(s for s in run["summary"] if s["scorer"] == "simulation" and s["variant"] == "top_and_random")
            assert sim["n"] > 0 and sim["ci_low"] <= sim["mean"] <= sim["ci_high"] and "n_nan" in sim
            assert len(d["points"]["index"]) == len(d["points"]["score"]) == len(d["points"]["max_cosine"])
        assert client.get("/api/v1/interpretability", params={"hook_name": "blocks.9.hook_nope"}).status_code == 404
        label = client.get("/api/v1/dictionaries/relu-64/features", params={"sort": "score", "order": "desc"}).json()
        word = label["items"][0]["label"].strip("'\" ").split("'")[0].strip() or "Fires"
        found = client.get("/api/v1/search", params={"q": "fires on the tokens"}).json()
        assert found["total"] >= len({d.id for d in report.dictionaries})
        assert len({x["dictionary_id"] for x in found["items"]}) > 1
        assert all(x["explanation"].lower().startswith("fires on") for x in found["items"])
        assert client.get("/api/v1/search", params={"q": word}).json()["total"] >= 1
        assert client.get("/api/v1/search", params={"q": ""}).status_code == 422
        index = label["items"][0]["index"]
        frags = client.get(f"/api/v1/dictionaries/relu-64/features/{index}/fragments").json()
        assert set(frags["sets"]) == {"explanation", "scoring", "random_activating", "random"}
        top = frags["sets"]["explanation"][0]
        assert len(top["tokens"]) == len(top["activations"]) and max(top["activations"]) == frags["max_activation"]
        assert len(frags["sets"]["random"]) == CONFIG.n_random
        assert client.get("/api/v1/dictionaries/relu-64/features/99999/fragments").status_code == 404


def test_a_store_without_the_interpretability_tables_still_serves_features(demo_atlas, tmp_path) -> None:
    from sqlalchemy import text

    copy = tmp_path / "atlas"
    shutil.copytree(demo_atlas.root, copy)
    url = AtlasLayout(root=copy).sqlite_url
    db = create_database(url)
    with db.begin() as conn:
        for table in ("explanation_scores", "feature_fragments", "interpret_runs"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    db.dispose()
    reader = StoreReader.from_url(url)
    assert all(e["scores"] == [] for e in reader.get_feature("relu-64", 0)["explanations"])
    assert all(d["runs"] == [] for d in reader.interpretability("blocks.0.mlp.hook_post"))
    reader.close()
