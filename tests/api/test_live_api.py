"""Live inference, steering and ablation through the API on the tiny atlas (real model and SAEs)."""

from __future__ import annotations

import pytest
import torch

from api_atlas import EXPLAINED_FEATURE
from saescope.api.schemas import ActivationsResponse

API = "/api/v1"
TEXT = "def main():\n    print('hello')\n"


def test_activations_for_all_dictionaries_come_from_one_request(client):
    res = client.post(f"{API}/inference/activations", json={"text": TEXT, "top_k": 3})
    assert res.status_code == 200, res.text
    body = res.json()
    n = len(body["tokens"])
    assert n == len(body["token_ids"]) >= 3
    assert {r["dictionary_id"] for r in body["results"]} == {"mlp-sae", "resid-sae"}
    for result in body["results"]:
        assert len(result["per_token"]) == len(result["token_totals"]) == n
        assert result["per_token"][0] == [] and result["token_totals"][0] == 0.0
        for row in result["per_token"]:
            assert len(row) <= 3
            acts = [f["activation"] for f in row]
            assert acts == sorted(acts, reverse=True) and all(a > 0 for a in acts)
        assert any(row and row[0]["label"] for row in result["per_token"])


def test_activations_top_k_and_dictionary_choice_are_respected(client):
    body = client.post(
        f"{API}/inference/activations", json={"text": TEXT, "dictionaries": ["resid-sae"], "top_k": 1}
    ).json()
    assert [r["dictionary_id"] for r in body["results"]] == ["resid-sae"]
    assert all(len(row) <= 1 for row in body["results"][0]["per_token"])


def test_feature_endpoint_agrees_with_the_activations_endpoint(client):
    acts = client.post(f"{API}/inference/activations", json={"text": TEXT, "dictionaries": ["mlp-sae"], "top_k": 1}).json()
    per_token = acts["results"][0]["per_token"]
    pos, top = next((i, row[0]) for i, row in enumerate(per_token) if row)
    feat = client.post(f"{API}/inference/feature", json={"text": TEXT, "dictionary": "mlp-sae", "index": top["index"]}).json()
    assert feat["tokens"] == acts["tokens"] and feat["activations"][0] == 0.0
    assert feat["activations"][pos] == pytest.approx(top["activation"], abs=1e-6)
    assert feat["max_activation"] == max(feat["activations"])


def _stored_examples(client, dictionary_id, index):
    return client.get(f"{API}/dictionaries/{dictionary_id}/features/{index}/examples").json()


def test_engine_reproduces_the_precomputed_example_activations(client, app):
    """Tokens of stored contexts run through the live engine give the stored activations (BOS = 0)."""
    state = app.state.saescope
    for dictionary_id in ("mlp-sae", "resid-sae"):
        info = state.reader.get_dictionary(dictionary_id)
        engine = state.holder.engine_for([info])
        checked = 0
        for index in (0, EXPLAINED_FEATURE, 7):
            for ex in _stored_examples(client, dictionary_id, index):
                live = engine.feature_activations(ex["token_ids"], [dictionary_id])[dictionary_id][0, :, index]
                assert live[0].item() == 0.0 and ex["activations"][0] == 0.0
                assert live.tolist() == pytest.approx(ex["activations"], abs=2e-4)
                checked += 1
        assert checked > 0


def test_pasted_text_of_a_stored_context_gives_its_stored_activations(client, tiny_lm):
    """Through HTTP: decode a stored context to text; where it re-tokenises to the same ids, the
    /inference/feature numbers equal the stored example's."""
    tried = 0
    for ex in _stored_examples(client, "mlp-sae", EXPLAINED_FEATURE):
        text = tiny_lm.tokenizer.decode(ex["token_ids"][1:])
        if tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"] != ex["token_ids"][1:]:
            continue
        res = client.post(f"{API}/inference/feature", json={"text": text, "dictionary": "mlp-sae", "index": EXPLAINED_FEATURE})
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["token_ids"] == ex["token_ids"]
        assert body["activations"] == pytest.approx(ex["activations"], abs=2e-4)
        tried += 1
    assert tried > 0


def _steer(client, **overrides):
    body = {
        "prompt": "import os\n",
        "interventions": [{"dictionary": "mlp-sae", "index": EXPLAINED_FEATURE, "mode": "add", "strength": 0.0}],
        "n_tokens": 6,
        "temperature": 0.8,
        "seed": 1,
    }
    body.update(overrides)
    res = client.post(f"{API}/steer", json=body)
    assert res.status_code == 200, res.text
    return res.json()


def test_steering_is_deterministic_for_a_seed_and_zero_strength_changes_nothing(client):
    first, second = _steer(client), _steer(client)
    assert first == second
    assert first["default"]["tokens"] == first["steered"]["tokens"]
    assert first["prompt_tokens"][1:] and len(first["default"]["tokens"]) == 6
    assert all(t["logprob"] <= 0 for t in first["default"]["tokens"])


def test_strong_steering_changes_the_continuation(client):
    body = _steer(
        client,
        temperature=0.0,
        n_tokens=8,
        interventions=[{"dictionary": "mlp-sae", "index": EXPLAINED_FEATURE, "mode": "add", "strength": 300.0}],
    )
    assert [t["token_id"] for t in body["default"]["tokens"]] != [t["token_id"] for t in body["steered"]["tokens"]]
    clamp = _steer(
        client,
        temperature=0.0,
        interventions=[{"dictionary": "resid-sae", "index": 2, "mode": "clamp", "strength": 50.0}],
    )
    assert clamp["default"]["text"] != clamp["steered"]["text"] or clamp["default"]["tokens"] != clamp["steered"]["tokens"]


def test_steering_may_generate_past_the_model_context(client):
    body = _steer(client, n_tokens=40, temperature=0.0)
    assert len(body["steered"]["tokens"]) == 40


def test_ablation_reports_aligned_deltas_and_moved_tokens(client):
    acts = client.post(f"{API}/inference/feature", json={"text": TEXT, "dictionary": "mlp-sae", "index": EXPLAINED_FEATURE}).json()
    res = client.post(f"{API}/ablate", json={"text": TEXT, "dictionary": "mlp-sae", "index": EXPLAINED_FEATURE})
    assert res.status_code == 200, res.text
    body = res.json()
    assert len(body["delta_logprob"]) == len(body["tokens"]) == len(body["activations"])
    assert body["delta_logprob"][0] == 0.0
    assert body["activations"] == pytest.approx(acts["activations"], abs=1e-5)
    if max(acts["activations"]) > 0:
        assert 0 < len(body["top_moved"]) <= 10
        deltas = [abs(t["delta"]) for t in body["top_moved"]]
        assert deltas == sorted(deltas, reverse=True)
    else:
        assert body["top_moved"] == []


def test_engine_is_loaded_once_and_health_shows_it(client):
    client.post(f"{API}/inference/feature", json={"text": TEXT, "dictionary": "mlp-sae", "index": 0})
    body = client.get(f"{API}/health").json()
    assert body["engine_loaded"] and body["model_id"] == "tiny" and body["device"] == "cpu"
    assert torch.get_num_threads() >= 1


def test_queued_inference_requests_are_micro_batched_with_the_same_answers(client, app):
    import threading
    import time

    state = app.state.saescope
    texts = ["import os\n", "def f(x):\n    return x\n", "a = [1, 2, 3]\n", "x" * 3, "class A:\n    pass\n"]
    payloads = [{"text": t, "dictionaries": ["mlp-sae", "resid-sae"], "top_k": 1 + i % 3} for i, t in enumerate(texts)]
    payloads.append({"text": "x = 1\n" * 100, "dictionaries": ["mlp-sae", "resid-sae"], "top_k": 2})  # too long
    sequential = [client.post(f"{API}/inference/activations", json=p) for p in payloads]
    assert [r.status_code for r in sequential] == [200] * len(texts) + [422]

    async def hold():
        await state.worker.run(time.sleep, 0.8)

    client.portal.start_task_soon(hold)
    while state.worker.pending == 0:
        time.sleep(0.01)
    before = (state.worker.batches_run, state.worker.batched_items_run)
    results = [None] * len(payloads)

    def call(i):
        results[i] = client.post(f"{API}/inference/activations", json=payloads[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    batches = state.worker.batches_run - before[0]
    items = state.worker.batched_items_run - before[1]
    assert items == len(payloads) and batches < items  # they shared forwards
    for got, want in zip(results, sequential):
        assert got.status_code == want.status_code
        if want.status_code != 200:
            assert got.json()["field"] == "body.text"
            continue
        g, w = got.json(), want.json()
        assert g["tokens"] == w["tokens"]
        for rg, rw in zip(g["results"], w["results"]):
            assert [[f["index"] for f in row] for row in rg["per_token"]] == [[f["index"] for f in row] for row in rw["per_token"]]
            assert rg["token_totals"] == pytest.approx(rw["token_totals"], abs=1e-4)


_JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("headers", "body", "status", "field"),
    [
        (_JSON, '{"text": "def main():\\n    print(1)\\n", "top_k": 3}', 200, None),
        (_JSON, '{"text": "import os\\n", "dictionaries": ["resid-sae", "mlp-sae", "resid-sae"], "top_k": 2}', 200, None),
        ({"Content-Type": "application/json; charset=utf-8"}, '{"text": "x = 1\\n"}', 200, None),
        (_JSON, '{"text": "x = 1\\n", "dictionaries": ["nope"]}', 404, "body.dictionaries.0"),
        (_JSON, '{"text": "x = 1\\n" , "dictionaries": ["half-built"]}', 404, "body.dictionaries.0"),
        (_JSON, '{"text": "' + "x = 1\\n" * 100 + '"}', 422, "body.text"),  # too many tokens (raised on the model thread)
        (_JSON, '{"text": "   "}', 422, "body.text"),
        (_JSON, '{"text": "x", "top_k": 0}', 422, "body.top_k"),
        (_JSON, '{"text": "x", "top_k": 100000}', 422, "body.top_k"),
        (_JSON, '{"text": "x", "extra": 1}', 422, "body.extra"),
        (_JSON, '{"top_k": 3}', 422, "body.text"),
        (_JSON, '{"text": 5}', 422, "body.text"),
        (_JSON, '[1, 2]', 422, "body"),
        (_JSON, '{"text": "x",', 400, "body"),
        (_JSON, b'{"text": "\xff"}', 400, "body"),
        (_JSON, "", 422, "body"),
        ({"Content-Type": "text/plain"}, '{"text": "x = 1\\n"}', 422, "body"),
        ({}, '{"text": "x = 1\\n"}', 422, "body"),
    ],
)
def test_inference_answers_every_request_with_json_naming_the_field(client, headers, body, status, field):
    """Valid requests get the response model; bad ones a JSON error naming the field, never a 500."""
    content = body if isinstance(body, bytes) else body.encode()
    res = client.post(f"{API}/inference/activations", content=content, headers=headers)
    assert (res.status_code, res.headers.get("content-type")) == (status, "application/json"), res.text
    if status == 200:
        assert ActivationsResponse.model_validate(res.json()).results
    else:
        assert res.json()["field"] == field and res.json()["error"]


def test_objects_built_at_start_up_and_by_the_model_load_are_kept_out_of_gc_passes(random_sae_atlas):
    """After start-up, and again after the engine loads lazily, the objects the server holds are
    frozen (`gc.freeze`), so full collections do not walk the imported libraries and the model."""
    import gc

    from fastapi.testclient import TestClient

    from api_atlas import make_settings
    from saescope.api.app import create_app

    gc.unfreeze()
    app = create_app(make_settings(random_sae_atlas).model_copy(update={"preload_engine": False}))
    with TestClient(app, raise_server_exceptions=False) as c:
        after_start = gc.get_freeze_count()
        assert after_start > 10_000  # the imported libraries at least
        assert not app.state.saescope.holder.loaded
        assert c.post(f"{API}/inference/activations", json={"text": TEXT}).status_code == 200
        assert gc.get_freeze_count() > after_start  # the model loaded since
