"""Read endpoints against the real tiny atlas written by the precompute."""

from __future__ import annotations

import math

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
