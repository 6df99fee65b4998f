"""Read endpoints against the real tiny atlas written by the precompute."""

from __future__ import annotations

import math

import pytest

from api_atlas import EXPLAINED_FEATURE, EXPLANATION, MLP_HOOK

API = "/api/v1"


def test_health_reports_ready_dictionaries_only(client):
    body = client.get(f"{API}/health").json()
    assert body["status"] == "ok"
    assert body["dictionaries"] == 2  # the `building` one is not counted


def test_models_list_the_tiny_model_with_its_shape(client):
    [model] = client.get(f"{API}/models").json()
    assert model["id"] == "tiny" and model["n_ctx"] == 32 and model["n_layers"] == 1 and model["d_model"] == 32
    assert model["d_vocab"] > 0


def test_dictionaries_show_metrics_and_provenance_and_hide_building_ones(client):
    items = client.get(f"{API}/dictionaries").json()
    assert {d["id"] for d in items} == {"mlp-sae", "resid-sae"}
    mlp = client.get(f"{API}/dictionaries/mlp-sae").json()
    assert mlp["hook_name"] == MLP_HOOK and mlp["d_sae"] == 64 and mlp["d_in"] == 128
    assert mlp["metrics"]["l0"] == 3.5
    assert mlp["provenance"]["corpus"] == "stdlib-heldout" and mlp["provenance"]["sae_weights_sha256"]
    assert "weights_path" not in mlp  # internal: not part of the API shape
    hidden = client.get(f"{API}/dictionaries/half-built")
    assert hidden.status_code == 404 and "half-built" in hidden.json()["error"]
    assert client.get(f"{API}/dictionaries/half-built/features/0").status_code == 404
    assert client.get(f"{API}/dictionaries/half-built/features").status_code == 404


def test_feature_list_paginates_and_counts_all_matches(client):
    page = client.get(f"{API}/dictionaries/mlp-sae/features", params={"offset": 10, "limit": 7}).json()
    assert page["total"] == 64 and page["offset"] == 10 and page["limit"] == 7
    assert [f["index"] for f in page["items"]] == list(range(10, 17))
    assert page["items"][0]["name"] == "L0M10"


def test_feature_list_sorts_by_density_and_max_activation(client):
    for key in ("density", "max_activation"):
        desc = client.get(f"{API}/dictionaries/mlp-sae/features", params={"sort": key, "order": "desc", "limit": 64}).json()
        values = [f[key] for f in desc["items"]]
        assert values == sorted(values, reverse=True) and len(values) == 64
        asc = client.get(f"{API}/dictionaries/mlp-sae/features", params={"sort": key, "order": "asc", "limit": 5}).json()
        assert [f[key] for f in asc["items"]] == sorted(values)[:5]


def test_feature_list_filters_by_density_range_and_dead_flag(client):
    page = client.get(
        f"{API}/dictionaries/mlp-sae/features", params={"min_density": 0.2, "max_density": 0.5, "limit": 500}
    ).json()
    assert page["total"] == len(page["items"])
    assert all(0.2 <= f["density"] <= 0.5 for f in page["items"])
    everything = client.get(f"{API}/dictionaries/mlp-sae/features", params={"limit": 500}).json()["items"]
    assert page["total"] == sum(1 for f in everything if 0.2 <= f["density"] <= 0.5)
    dead = client.get(f"{API}/dictionaries/mlp-sae/features", params={"dead": "true"}).json()
    live = client.get(f"{API}/dictionaries/mlp-sae/features", params={"dead": "false"}).json()
    assert dead["total"] + live["total"] == 64
    assert all(f["dead"] for f in dead["items"]) and not any(f["dead"] for f in live["items"])


FEATURES = f"{API}/dictionaries/mlp-sae/features"


@pytest.fixture
def scored_features(random_sae_atlas):
    """Gives even-indexed mlp-sae features a score (some negative), leaves odd ones null; restores after."""
    from sqlalchemy import select, update

    from saescope.store.database import create_database
    from saescope.store.schema import FeatureRow

    scores = {i: round((i % 7) / 7 - 0.25, 6) for i in range(0, 64, 2)}
    engine = create_database(random_sae_atlas.store_url)
    where = FeatureRow.dictionary_id == "mlp-sae"
    with engine.begin() as conn:
        before = dict(conn.execute(select(FeatureRow.index, FeatureRow.score).where(where)).all())
        assert all(v is None for v in before.values()), "the tiny atlas is expected to have no scores"
        for i, score in scores.items():
            conn.execute(update(FeatureRow).where(where, FeatureRow.index == i).values(score=score))
    try:
        yield scores
    finally:
        with engine.begin() as conn:
            for i, score in before.items():
                conn.execute(update(FeatureRow).where(where, FeatureRow.index == i).values(score=score))
        engine.dispose()


def test_feature_list_filters_by_max_activation_range_inclusively(client):
    everything = client.get(FEATURES, params={"limit": 500}).json()["items"]
    values = sorted(f["max_activation"] for f in everything)
    low, high = values[16], values[47]  # stored values: the bounds must be inclusive
    expected = {f["index"] for f in everything if low <= f["max_activation"] <= high}
    assert 0 < len(expected) < 64
    page = client.get(FEATURES, params={"min_max_activation": low, "max_max_activation": high, "limit": 500}).json()
    assert {f["index"] for f in page["items"]} == expected and page["total"] == len(expected)
    assert all(low <= f["max_activation"] <= high for f in page["items"])
    small = client.get(FEATURES, params={"min_max_activation": low, "max_max_activation": high, "limit": 3}).json()
    assert small["total"] == len(expected) and len(small["items"]) == 3  # total counts every page
    only_min = client.get(FEATURES, params={"min_max_activation": low, "limit": 500}).json()
    assert only_min["total"] == sum(1 for v in values if v >= low)
    only_max = client.get(FEATURES, params={"max_max_activation": high, "limit": 500}).json()
    assert only_max["total"] == sum(1 for v in values if v <= high)


def test_feature_list_filters_by_score_and_leaves_out_unscored_features(client, scored_features):
    everything = client.get(FEATURES, params={"limit": 500}).json()["items"]
    assert {f["index"]: f["score"] for f in everything if f["score"] is not None} == scored_features
    # a bound that every score passes still drops the 32 features without a score
    for params in ({"min_score": -1000}, {"max_score": 1000}):
        page = client.get(FEATURES, params={**params, "limit": 500}).json()
        assert page["total"] == len(scored_features) == 32
        assert {f["index"] for f in page["items"]} == set(scored_features)
    low, high = sorted(set(scored_features.values()))[1], sorted(set(scored_features.values()))[-2]
    expected = {i for i, s in scored_features.items() if low <= s <= high}
    assert 0 < len(expected) < 32
    page = client.get(
        FEATURES, params={"min_score": low, "max_score": high, "sort": "score", "order": "desc", "limit": 500}
    ).json()
    assert {f["index"] for f in page["items"]} == expected and page["total"] == len(expected)
    shown = [f["score"] for f in page["items"]]
    assert all(low <= s <= high for s in shown) and shown == sorted(shown, reverse=True)
    negative = client.get(FEATURES, params={"max_score": -0.01, "limit": 500}).json()
    assert negative["total"] == sum(1 for s in scored_features.values() if s <= -0.01) > 0


@pytest.mark.parametrize(
    "params, field",
    [
        ({"min_max_activation": 2.0, "max_max_activation": 1.0}, "query.min_max_activation"),
        ({"min_score": 0.5, "max_score": -0.5}, "query.min_score"),
        ({"min_max_activation": -1.0}, "query.min_max_activation"),
        ({"max_max_activation": -1.0}, "query.max_max_activation"),
        ({"min_score": "nan"}, "query.min_score"),
        ({"max_score": "abc"}, "query.max_score"),
    ],
)
def test_bad_max_activation_and_score_bounds_are_422_naming_the_field(client, params, field):
    res = client.get(FEATURES, params=params)
    assert res.status_code == 422, res.text
    body = res.json()
    assert set(body) == {"error", "field"} and body["field"] == field and body["error"]


def test_max_activation_and_score_filters_are_documented_in_openapi(client):
    # the dashboard looks for these exact query parameter names to filter on the server
    spec = client.get("/openapi.json").json()
    route = spec["paths"][f"{API}/dictionaries/{{dictionary_id}}/features"]["get"]
    params = {p["name"]: p for p in route["parameters"] if p["in"] == "query"}
    for name in ("min_max_activation", "max_max_activation", "min_score", "max_score"):
        assert name in params and params[name].get("description"), name


def test_text_search_matches_explanations_case_insensitively(client):
    page = client.get(f"{API}/dictionaries/mlp-sae/features", params={"q": "zEbRa"}).json()
    assert [f["index"] for f in page["items"]] == [EXPLAINED_FEATURE]


def test_text_search_matches_top_tokens_and_treats_wildcards_literally(client):
    items = client.get(f"{API}/dictionaries/mlp-sae/features", params={"limit": 500}).json()["items"]
    token = next(t for f in items for t in f["top_tokens"].split() if t.isalpha() and len(t) >= 2)
    page = client.get(f"{API}/dictionaries/mlp-sae/features", params={"q": token.upper(), "limit": 500}).json()
    expected = {
        f["index"] for f in items if token.lower() in (f["top_tokens"] + f["label"]).lower()
    }
    assert {f["index"] for f in page["items"]} >= expected and page["total"] >= 1
    none = client.get(f"{API}/dictionaries/mlp-sae/features", params={"q": "_%_no such thing%"}).json()
    assert none["total"] == 0


def test_feature_detail_holds_the_whole_record(client):
    body = client.get(f"{API}/dictionaries/mlp-sae/features/{EXPLAINED_FEATURE}").json()
    assert body["index"] == EXPLAINED_FEATURE and body["name"] == f"L0M{EXPLAINED_FEATURE}"
    assert body["explanations"][0]["text"] == EXPLANATION
    assert len(body["histogram"]["edges"]) == len(body["histogram"]["counts"]) + 1
    assert body["logits_top"] and body["logits_bottom"]
    assert body["logits_top"][0]["value"] >= body["logits_bottom"][0]["value"]
    assert body["neighbours"] and all(0 <= n["index"] < 64 for n in body["neighbours"])
    assert body["umap_x"] is not None and math.isfinite(body["umap_x"])
    groups = [g["group"] for g in body["example_groups"]]
    assert groups[0] == "top" and all(g["count"] > 0 for g in body["example_groups"])


def test_unknown_feature_is_404_and_names_the_dictionary(client):
    res = client.get(f"{API}/dictionaries/mlp-sae/features/64")
    assert res.status_code == 404 and "64" in res.json()["error"]
    assert client.get(f"{API}/dictionaries/nope/features/1").status_code == 404


def test_examples_have_token_strings_and_bos_at_zero(client, tiny_lm):
    examples = client.get(f"{API}/dictionaries/mlp-sae/features/{EXPLAINED_FEATURE}/examples").json()
    assert examples and examples[0]["group"] == "top"
    bos = tiny_lm.tokenizer.bos_token_id
    for ex in examples:
        assert len(ex["tokens"]) == len(ex["token_ids"]) == len(ex["activations"]) == 32
        assert ex["token_ids"][0] == bos and ex["activations"][0] == 0.0
        assert ex["max_activation"] == max(ex["activations"])
    top = [ex for ex in examples if ex["group"] == "top"]
    assert [ex["rank"] for ex in top] == list(range(len(top)))
    maxes = [ex["max_activation"] for ex in top]
    assert maxes == sorted(maxes, reverse=True)
    ids = top[0]["token_ids"]
    assert top[0]["tokens"][1:] == [str(s) for s in tiny_lm.to_str_tokens(__import__("torch").tensor(ids[1:]), prepend_bos=False)]


def test_examples_filter_by_group(client):
    base = f"{API}/dictionaries/mlp-sae/features/{EXPLAINED_FEATURE}/examples"
    top = client.get(base, params={"group": "top"}).json()
    assert top and all(ex["group"] == "top" for ex in top)
    assert client.get(base, params={"group": "no_such_group"}).json() == []


def test_density_histogram_counts_every_feature(client):
    body = client.get(f"{API}/dictionaries/mlp-sae/density_histogram").json()
    assert sum(body["counts"]) + body["dead"] == 64
    assert len(body["edges"]) == len(body["counts"]) + 1 and body["edges"][-1] <= 0.0 + 1e-9


def test_maps_of_a_dictionary_and_of_a_hook_point(client):
    one = client.get(f"{API}/dictionaries/mlp-sae/map").json()
    assert one["hook_name"] == MLP_HOOK and len(one["points"]) == 64
    joint = client.get(f"{API}/map", params={"hook_name": MLP_HOOK}).json()
    assert {p["dictionary_id"] for p in joint["points"]} == {"mlp-sae"}  # not the building one
    assert client.get(f"{API}/map", params={"hook_name": "blocks.9.hook_resid_post"}).status_code == 404


def test_plotly_and_openapi_are_served(client):
    assert client.get("/vendor/plotly.min.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/api/v1/steer" in spec["paths"] and "/api/v1/dictionaries/{dictionary_id}/features/{index}" in spec["paths"]


def test_density_range_with_min_above_max_is_422_naming_the_field(client) -> None:
    r = client.get("/api/v1/dictionaries/mlp-sae/features", params={"min_density": 0.5, "max_density": 0.2})
    assert r.status_code == 422
    assert r.json()["field"] == "query.min_density"


def test_feature_page_is_the_record_and_every_example_in_one_response(client):
    """The pre-rendered page equals detail + examples fetched separately, gzip or not."""
    import gzip

    base = f"{API}/dictionaries/mlp-sae/features"
    for index in (0, EXPLAINED_FEATURE, 63):
        detail = client.get(f"{base}/{index}").json()
        examples = client.get(f"{base}/{index}/examples").json()
        zipped = client.get(f"{base}/{index}/page", headers={"Accept-Encoding": "gzip"})
        assert zipped.status_code == 200 and zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["vary"] == "Accept-Encoding"
        assert zipped.json() == {"feature": detail, "examples": examples}  # the client un-gzips it
        plain = client.get(f"{base}/{index}/page", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.json() == {"feature": detail, "examples": examples}
    # the stored bytes are sent as they are: smaller than the JSON they hold
    raw = client.get(f"{base}/{EXPLAINED_FEATURE}/page", headers={"Accept-Encoding": "gzip"})
    assert raw.json()["feature"]["explanations"][0]["text"] == EXPLANATION  # added after publish: re-rendered
    assert len(gzip.compress(raw.content)) < len(raw.content)


def test_feature_page_of_unknown_or_hidden_features_is_404(client):
    assert client.get(f"{API}/dictionaries/mlp-sae/features/64/page").status_code == 404
    assert client.get(f"{API}/dictionaries/nope/features/0/page").status_code == 404
    assert client.get(f"{API}/dictionaries/half-built/features/0/page").status_code == 404


@pytest.mark.parametrize(
    ("header", "expected"),
    [("gzip", True), ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.8", True), ("*", True),
     ("gzip;q=0", False), ("identity", False), ("", False), ("deflate", False)],
)
def test_accept_encoding_parsing(header, expected):
    from saescope.api.routers.features import accepts_gzip

    assert accepts_gzip(header) is expected


def _page_answer(response):
    headers = {k: response.headers.get(k) for k in ("content-type", "content-encoding", "vary", "content-length")}
    return response.status_code, headers, response.content


@pytest.mark.parametrize(
    "path",
    [
        "mlp-sae/features/0/page", f"mlp-sae/features/{EXPLAINED_FEATURE}/page", "mlp-sae/features/63/page",
        # not answered by the fast path: the route validates, renders or reports the error
        "mlp-sae/features/007/page", "mlp-sae/features/64/page", "mlp-sae/features/99999999999/page",
        "mlp-sae/features/-1/page", "nope/features/0/page", "half-built/features/0/page",
        "x" * 200 + "/features/0/page",
    ],
)
@pytest.mark.parametrize("encoding", ["gzip", "identity", None])
def test_page_fast_path_answers_exactly_like_the_route(client, client_without_fast_path, path, encoding):
    """Status, headers and body bytes are the same with the lean ASGI path as through FastAPI."""
    headers = {"Accept-Encoding": encoding} if encoding else {"Accept-Encoding": ""}
    url = f"{API}/dictionaries/{path}"
    fast = client.get(url, headers=headers)
    routed = client_without_fast_path.get(url, headers=headers)
    assert _page_answer(fast) == _page_answer(routed)


def test_page_fast_path_serves_stored_pages_without_the_route(client, monkeypatch):
    """A stored page never reaches FastAPI's route (else the fast path would be dead code)."""
    from saescope.api.routers import features

    def fail(*args, **kwargs):
        raise AssertionError("the route ran")

    monkeypatch.setattr(features, "accepts_gzip", fail)  # used by the route only, after the fast path imported it
    res = client.get(f"{API}/dictionaries/mlp-sae/features/5/page", headers={"Accept-Encoding": "gzip"})
    assert res.status_code == 200 and res.headers["content-encoding"] == "gzip"
