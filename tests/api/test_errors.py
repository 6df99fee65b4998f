"""Bad input gets a 4xx JSON {"error", "field"} naming the field; a busy or slow model gets 503/504.

The bad-input battery runs on both stores: the SQLite atlas and the same atlas in PostgreSQL
(skipped when no server answers on 127.0.0.1:5432), whose driver raises on inputs SQLite takes."""

from __future__ import annotations

import threading
import time

import pytest

from api_atlas import make_settings

API = "/api/v1"
GOOD = {"text": "x = 1\n", "dictionary": "mlp-sae", "index": 0}


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])],
)
def store_atlas(request, random_sae_atlas):
    """The test atlas in each store back end."""
    return random_sae_atlas if request.param == "sqlite" else request.getfixturevalue("pg_atlas")


@pytest.fixture(scope="module")
def app(store_atlas):
    from saescope.api.app import create_app

    return create_app(make_settings(store_atlas))


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _err(res, status, field=None):
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error", "field"} and body["error"]
    if field is not None:
        assert body["field"] == field, body
    return body


@pytest.mark.parametrize(
    "payload, field",
    [
        ({**GOOD, "text": ""}, "body.text"),
        ({**GOOD, "text": "   \n "}, "body.text"),
        ({**GOOD, "text": "x" * 20_001}, "body.text"),
        ({**GOOD, "text": 12}, "body.text"),
        ({**GOOD, "index": -1}, "body.index"),
        ({**GOOD, "index": "three"}, "body.index"),
        ({**GOOD, "index": 2**40}, "body.index"),
        ({k: v for k, v in GOOD.items() if k != "dictionary"}, "body.dictionary"),
        ({**GOOD, "extra": 1}, "body.extra"),
    ],
)
def test_invalid_feature_requests_name_the_field(client, payload, field):
    _err(client.post(f"{API}/inference/feature", json=payload), 422, field)


def test_text_over_the_server_character_limit_is_rejected(client, app):
    limit = app.state.saescope.settings.limits.max_text_chars
    body = _err(client.post(f"{API}/inference/feature", json={**GOOD, "text": "a " * limit}), 422, "body.text")
    assert str(limit) in body["error"]


def test_text_with_more_tokens_than_the_model_context_is_rejected(client):
    body = _err(client.post(f"{API}/inference/feature", json={**GOOD, "text": "x = 1\n" * 100}), 422, "body.text")
    assert "tokens" in body["error"]


def test_unknown_dictionary_and_feature_are_404_with_the_field(client):
    _err(client.post(f"{API}/inference/feature", json={**GOOD, "dictionary": "nope"}), 404, "body.dictionary")
    _err(client.post(f"{API}/inference/feature", json={**GOOD, "index": 64}), 404, "body.index")
    _err(client.post(f"{API}/inference/activations", json={"text": "a", "dictionaries": ["mlp-sae", "nope"]}), 404,
         "body.dictionaries.1")
    _err(client.post(f"{API}/ablate", json={**GOOD, "dictionary": "half-built"}), 404, "body.dictionary")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"n_tokens": 0}, "body.n_tokens"),
        ({"n_tokens": 10_000}, "body.n_tokens"),
        ({"temperature": -1}, "body.temperature"),
        ({"seed": -5}, "body.seed"),
        ({"interventions": []}, "body.interventions"),
        ({"interventions": [{"dictionary": "mlp-sae", "index": 0, "mode": "boost", "strength": 1}]}, "body.interventions.0.mode"),
        ({"interventions": [{"dictionary": "mlp-sae", "index": 0, "strength": 1e9}]}, "body.interventions.0.strength"),
        ({"interventions": [{"dictionary": "mlp-sae", "index": 0, "strength": 5000}]}, "body.interventions.0.strength"),
        ({"interventions": [{"dictionary": "mlp-sae", "index": 99, "strength": 1}]}, "body.interventions.0.index"),
        ({"interventions": [{"dictionary": "x", "index": 0, "strength": 1}]}, "body.interventions.0.dictionary"),
    ],
)
def test_invalid_steering_requests_name_the_field(client, change, field):
    payload = {"prompt": "a = 1", "interventions": [{"dictionary": "mlp-sae", "index": 0, "strength": 1}], **change}
    res = client.post(f"{API}/steer", json=payload)
    assert res.status_code in (404, 422)
    _err(res, res.status_code, field)


def test_nan_strength_is_rejected(client):
    raw = b'{"prompt": "a", "interventions": [{"dictionary": "mlp-sae", "index": 0, "strength": NaN}]}'
    res = client.post(f"{API}/steer", content=raw, headers={"content-type": "application/json"})
    assert res.status_code in (400, 422) and res.json()["error"]


@pytest.mark.parametrize("top_k, status", [(0, 422), (-3, 422), (51, 422), (10**6, 422)])
def test_top_k_out_of_range_is_rejected(client, top_k, status):
    _err(client.post(f"{API}/inference/activations", json={"text": "a", "top_k": top_k}), status, "body.top_k")


def test_malformed_json_and_invalid_utf8_are_400(client):
    headers = {"content-type": "application/json"}
    _err(client.post(f"{API}/inference/feature", content=b'{"text": "a",', headers=headers), 400, "body")
    _err(client.post(f"{API}/inference/feature", content=b'{"text": "\xff\xfe"}', headers=headers), 400, "body")
    _err(client.post(f"{API}/inference/feature", content=b"\xc3\x28", headers=headers), 400, "body")
    res = client.post(f"{API}/inference/feature", content=b"[1, 2]", headers=headers)
    assert res.status_code == 422 and res.json()["error"]
    res = client.post(f"{API}/inference/feature", content=b"text=a", headers={"content-type": "text/plain"})
    assert 400 <= res.status_code < 500 and res.json()["error"]


def test_request_bodies_over_the_size_limit_are_413_before_being_read(client, app):
    limit = app.state.saescope.settings.limits.max_body_bytes
    big = b'{"text": "' + b"x" * limit + b'"}'
    headers = {"content-type": "application/json"}
    for path in ("/inference/activations", "/inference/feature", "/steer"):
        body = _err(client.post(f"{API}{path}", content=big, headers=headers), 413, "body")
        assert str(limit) in body["error"]

    def chunked(data: bytes, size: int = 65536):
        for start in range(0, len(data), size):
            yield data[start : start + size]

    # sent without a length (chunked): refused as soon as the limit is passed
    _err(client.post(f"{API}/inference/activations", content=chunked(big), headers=headers), 413, "body")
    # a chunked body under the limit goes through unchanged, on both inference paths
    small = b'{"text": "def f():\\n    return 1\\n", "top_k": 2}'
    res = client.post(f"{API}/inference/activations", content=chunked(small, 7), headers=headers)
    assert res.status_code == 200 and res.json()["results"], res.text
    res = client.post(f"{API}/inference/feature", content=chunked(b'{"text": "x = 1", "dictionary": "mlp-sae", "index": 0}', 5),
                      headers=headers)
    assert res.status_code == 200 and res.json()["activations"][0] == 0.0, res.text


@pytest.mark.parametrize(
    "path, field",
    [
        ("/dictionaries/mlp-sae/features?limit=0", "query.limit"),
        ("/dictionaries/mlp-sae/features?limit=100000", "query.limit"),
        ("/dictionaries/mlp-sae/features?offset=-1", "query.offset"),
        ("/dictionaries/mlp-sae/features?sort=colour", "query.sort"),
        ("/dictionaries/mlp-sae/features?min_density=2", "query.min_density"),
        ("/dictionaries/mlp-sae/features?dead=maybe", "query.dead"),
        ("/dictionaries/mlp-sae/features/-1", "path.index"),
        ("/dictionaries/mlp-sae/features/99999999999999999999", "path.index"),
        ("/dictionaries/mlp-sae/features/abc/examples", "path.index"),
    ],
)
def test_invalid_query_and_path_parameters_name_the_field(client, path, field):
    _err(client.get(API + path), 422, field)


def test_unknown_routes_and_methods_are_json(client):
    _err(client.get(f"{API}/no/such/thing"), 404)
    _err(client.get(f"{API}/steer"), 405)


NUL = "mlp\x00sae"
STEER = {"prompt": "a = 1", "n_tokens": 2}


@pytest.mark.parametrize(
    "path, status",
    [
        ("/dictionaries/mlp%00sae", 404),
        ("/dictionaries/mlp-sae%00/features", 404),
        ("/dictionaries/%00/features/3", 404),
        ("/dictionaries/mlp%00sae/features/3/page", 404),
        ("/dictionaries/mlp-sae/features/3/examples%00", 404),
        ("/dictionaries/mlp%00sae/map", 404),
        ("/dictionaries?hook_name=blocks.0%00", 422),
        ("/dictionaries?hook_name=%00", 422),
        ("/dictionaries/mlp-sae/features?q=a%00b", 422),
        ("/dictionaries/mlp-sae/features/3/examples?group=top%00", 422),
        ("/map?hook_name=blocks.0.mlp.hook_post%00", 422),
    ],
)
def test_a_nul_in_a_path_or_query_parameter_is_a_json_4xx(client, path, status):
    _err(client.get(API + path), status)


@pytest.mark.parametrize(
    "path, payload, field",
    [
        ("/inference/feature", {**GOOD, "dictionary": NUL}, "body.dictionary"),
        ("/inference/activations", {"text": "a", "dictionaries": ["mlp-sae", NUL]}, "body.dictionaries.1"),
        ("/ablate", {**GOOD, "dictionary": NUL}, "body.dictionary"),
        ("/steer", {**STEER, "interventions": [{"dictionary": NUL, "index": 0, "strength": 1}]},
         "body.interventions.0.dictionary"),
    ],
)
def test_a_nul_in_a_dictionary_id_of_a_body_is_404(client, path, payload, field):
    res = client.post(API + path, json=payload)
    assert res.status_code in (404, 422), res.text
    _err(res, res.status_code)


def test_a_nul_in_the_text_of_a_live_request_is_not_a_server_error(client):
    res = client.post(f"{API}/inference/feature", json={**GOOD, "text": "x = 1\x00\n"})
    assert res.status_code < 500, res.text


def _hold_worker(client, state, seconds):
    """Occupy the model thread for `seconds` from the app's event loop (as a request would)."""

    async def hold():
        try:
            await state.worker.run(time.sleep, seconds)
        except Exception:  # its own time-out is irrelevant here
            pass

    client.portal.start_task_soon(hold)
    deadline = time.time() + 5
    while state.worker.pending == 0 and time.time() < deadline:
        time.sleep(0.01)


# both live endpoints: /inference/activations is answered by the lean ASGI path, /inference/feature by its route
LIVE = [("/inference/feature", GOOD), ("/inference/activations", {"text": "x = 1\n", "dictionaries": ["mlp-sae"]})]


@pytest.mark.parametrize("path, payload", LIVE)
def test_full_model_queue_answers_503_then_recovers(random_sae_atlas, path, payload):
    from fastapi.testclient import TestClient

    from saescope.api.app import create_app

    app = create_app(make_settings(random_sae_atlas, max_queue=1, request_timeout_s=5))
    with TestClient(app, raise_server_exceptions=False) as c:
        state = app.state.saescope
        _hold_worker(c, state, 1.0)
        res = c.post(f"{API}{path}", json=payload)
        body = _err(res, 503)
        assert "busy" in body["error"] and res.headers["retry-after"] == "1"
        deadline = time.time() + 10
        while state.worker.pending and time.time() < deadline:
            time.sleep(0.05)
        assert c.post(f"{API}{path}", json=payload).status_code == 200
        # read endpoints never wait for the model
        assert c.get(f"{API}/dictionaries").status_code == 200


@pytest.mark.parametrize("path, payload", LIVE)
def test_slow_model_work_answers_504_and_the_worker_stays_usable(random_sae_atlas, path, payload):
    from fastapi.testclient import TestClient

    from saescope.api.app import create_app

    app = create_app(make_settings(random_sae_atlas, max_queue=4, request_timeout_s=0.5))
    with TestClient(app, raise_server_exceptions=False) as c:
        state = app.state.saescope
        assert c.post(f"{API}{path}", json=payload).status_code == 200  # loads the engine
        _hold_worker(c, state, 1.2)
        started = time.time()
        body = _err(c.post(f"{API}{path}", json=payload), 504)
        assert "0.5" in body["error"] and time.time() - started < 1.1
        deadline = time.time() + 10
        while state.worker.pending and time.time() < deadline:
            time.sleep(0.05)
        assert state.worker.pending == 0  # the timed-out job was dropped, not left hanging
        assert c.post(f"{API}{path}", json=payload).status_code == 200


def test_concurrent_requests_all_get_answers(client):
    results = []

    def call(i):
        results.append(client.post(f"{API}/inference/feature", json={**GOOD, "index": i % 64}).status_code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == [200] * 12
