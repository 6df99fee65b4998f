"""Fair sharing of the model: a queue per class of work, per-client limits, cheap refusals, options.

Latencies are asserted relative to each other (an inference request finishes before the queued
generations), never against wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
from api_atlas import EXPLAINED_FEATURE, make_settings
from saescope.api.errors import RequestTimeoutError

API = "/api/v1"
INFERENCE = {"text": "x = 1\n", "dictionary": "mlp-sae", "index": 0}


def _steer_body(n_tokens: int = 6) -> dict:
    return {
        "prompt": "import os\n",
        "interventions": [{"dictionary": "mlp-sae", "index": EXPLAINED_FEATURE, "mode": "add", "strength": 5.0}],
        "n_tokens": n_tokens,
        "temperature": 0.0,
        "seed": 0,
    }


def _client(atlas, **limits):
    from fastapi.testclient import TestClient
    from saescope.api.app import create_app

    app = create_app(make_settings(atlas, **limits))
    return app, TestClient(app, raise_server_exceptions=False)


def _hold(client, state, seconds: float, job_class: str = "inference") -> None:
    """Occupy the model thread for `seconds` with a job of `job_class`, from the app's event loop."""

    async def hold():
        with contextlib.suppress(RequestTimeoutError):  # its own time-out is irrelevant here
            await state.worker.run(time.sleep, seconds, job_class=job_class)

    client.portal.start_task_soon(hold)
    deadline = time.time() + 5
    while state.worker.pending == 0 and time.time() < deadline:
        time.sleep(0.01)


def _wait_idle(state, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while state.worker.pending and time.time() < deadline:
        time.sleep(0.02)
    assert state.worker.pending == 0


def _assert_refusal(res, status: int, word: str) -> None:
    assert res.status_code == status, res.text
    assert res.headers["retry-after"] == "1"
    assert res.headers["content-type"] == "application/json"
    body = res.json()
    assert set(body) == {"error", "field"} and word in body["error"]


def test_a_full_queue_answers_503_with_retry_after_before_reading_the_body(random_sae_atlas):
    app, client = _client(random_sae_atlas, max_queue=1)
    with client:
        state = app.state.saescope
        _hold(client, state, 1.0)
        # not even parsed: a malformed body gets the same cheap refusal, not a 400
        res = client.post(f"{API}/inference/feature", content=b'{"text": ', headers={"Content-Type": "application/json"})
        _assert_refusal(res, 503, "busy")
        _assert_refusal(client.post(f"{API}/inference/activations", json={"text": "x"}), 503, "busy")
        _assert_refusal(client.post(f"{API}/ablate", json=INFERENCE), 503, "busy")
        assert client.get(f"{API}/dictionaries").status_code == 200  # reads never wait for the model
        _wait_idle(state)
        assert client.post(f"{API}/inference/feature", json=INFERENCE).status_code == 200


def test_a_full_steering_queue_refuses_steering_but_not_inference(random_sae_atlas):
    app, client = _client(random_sae_atlas, max_steer_queue=1)
    with client:
        state = app.state.saescope
        _hold(client, state, 1.0, job_class="steer")
        _assert_refusal(client.post(f"{API}/steer", json=_steer_body()), 503, "busy")
        assert client.post(f"{API}/inference/feature", json=INFERENCE).status_code == 200
        _wait_idle(state)


def test_a_client_over_its_limit_gets_429_with_retry_after(random_sae_atlas):
    app, client = _client(random_sae_atlas, max_client_requests=2, max_client_steers=1)
    with client:
        worker = app.state.saescope.worker
        steering = worker.admit("steer", "testclient")  # as if this client had a generation in flight
        _assert_refusal(client.post(f"{API}/steer", json=_steer_body()), 429, "too many")
        assert client.post(f"{API}/inference/feature", json=INFERENCE).status_code == 200
        other = worker.admit("inference", "testclient")
        _assert_refusal(client.post(f"{API}/inference/feature", json=INFERENCE), 429, "too many")
        assert worker.admit("inference", "another-address") is not None  # the limit is per address
        steering.release()
        other.release()
        assert client.post(f"{API}/steer", json=_steer_body()).status_code == 200


def test_refused_requests_leave_no_slot_behind(random_sae_atlas):
    app, client = _client(random_sae_atlas, max_queue=2)
    with client:
        state = app.state.saescope
        assert client.post(f"{API}/inference/feature", json={**INFERENCE, "text": ""}).status_code == 422
        assert client.post(f"{API}/inference/feature", json={**INFERENCE, "dictionary": "nope"}).status_code == 404
        assert client.post(f"{API}/inference/feature", json=INFERENCE).status_code == 200
        assert state.worker.pending == 0 and state.worker.admitted("inference") == 0


def test_inference_finishes_before_the_queued_steering_requests(random_sae_atlas):
    """Four generations queued and running: an inference request waits for the one running at most."""
    app, client = _client(random_sae_atlas, max_client_steers=8, max_client_requests=16)
    with client:
        state = app.state.saescope
        assert client.post(f"{API}/steer", json=_steer_body(2)).status_code == 200  # loads the engine
        finished: list[str] = []
        lock = threading.Lock()

        def call(name: str, path: str, body: dict) -> None:
            res = client.post(f"{API}{path}", json=body)
            with lock:
                finished.append(f"{name}:{res.status_code}")

        steers = [threading.Thread(target=call, args=(f"steer{i}", "/steer", _steer_body(120))) for i in range(4)]
        steer_runs = state.worker.jobs_run["steer"]
        for t in steers:
            t.start()
        deadline = time.time() + 20
        while (state.worker.admitted("steer") < 4 or state.worker.jobs_run["steer"] == steer_runs) and time.time() < deadline:
            time.sleep(0.005)
        assert state.worker.admitted("steer") == 4  # one running, three queued
        inference = threading.Thread(target=call, args=("inference", "/inference/feature", INFERENCE))
        inference.start()
        for t in [*steers, inference]:
            t.join(timeout=120)
        assert "inference:200" in finished and len(finished) == 5, finished
        assert all(entry.endswith(":200") for entry in finished), finished
        assert finished.index("inference:200") <= 1, finished  # behind the running generation at most


def test_generations_still_run_under_a_stream_of_inference():
    """A waiting generation runs after at most INFERENCE_BURST short jobs in a row."""
    from saescope.api.runtime import INFERENCE_BURST, ModelWorker

    worker = ModelWorker(max_queue=64, timeout_s=30)
    order: list[str] = []
    started, gate = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(5)

    async def main() -> None:
        first = asyncio.ensure_future(worker.run(hold))  # holds the model thread
        while not started.is_set():
            await asyncio.sleep(0.001)
        jobs = [worker.run(order.append, f"inference{i}") for i in range(3 * INFERENCE_BURST)]
        jobs.insert(1, worker.run(order.append, "steer", job_class="steer"))
        tasks = [asyncio.ensure_future(j) for j in jobs]
        await asyncio.sleep(0.05)  # every job queued
        gate.set()
        await asyncio.gather(first, *tasks)

    try:
        asyncio.run(main())
    finally:
        worker.shutdown()
    assert order.index("steer") == INFERENCE_BURST


def test_a_job_past_its_time_out_is_told_to_stop_and_frees_its_slot():
    from saescope.api.errors import RequestTimeoutError
    from saescope.api.runtime import JobAbandoned, ModelWorker

    worker = ModelWorker(max_queue=4, timeout_s=0.2)
    steps: list[int] = []
    outcome: list[str] = []

    def generation() -> None:
        try:
            for step in range(10_000):  # far longer than the time-out
                worker.raise_if_abandoned()
                steps.append(step)
                time.sleep(0.005)
        except JobAbandoned:
            outcome.append("stopped")
            raise

    async def main() -> None:
        with pytest.raises(RequestTimeoutError):
            await worker.run(generation, job_class="steer")
        deadline = time.time() + 5
        while worker.pending and time.time() < deadline:
            await asyncio.sleep(0.01)

    try:
        asyncio.run(main())
    finally:
        worker.shutdown()
    assert outcome == ["stopped"] and len(steps) < 10_000
    assert worker.pending == 0


def test_a_steering_request_past_its_time_out_stops_its_generation(random_sae_atlas):
    app, client = _client(random_sae_atlas, request_timeout_s=0.3, max_client_steers=4)
    with client:
        state = app.state.saescope
        assert client.post(f"{API}/steer", json=_steer_body(2)).status_code == 200  # loads the engine
        engine = state.holder.engine
        forwards: list[int] = []
        slow = [("hook_embed", lambda act, hook: (forwards.append(1), time.sleep(0.01))[0])]
        from saescope.engine.engine import temporary_hooks

        with temporary_hooks(engine.model, slow):  # 128 tokens x 2 continuations: far past 0.3 s
            res = client.post(f"{API}/steer", json=_steer_body(128))
            assert res.status_code == 504, res.text
            _wait_idle(state)
        assert len(forwards) < 2 * 128  # it stopped early
        assert client.post(f"{API}/steer", json=_steer_body(2)).status_code == 200


def _slowed(engine, seconds: float = 0.004):
    """Every forward of the engine's model made slower (a hook point run first in each forward)."""
    from saescope.engine.engine import temporary_hooks

    return temporary_hooks(engine.model, [("hook_embed", lambda act, hook: time.sleep(seconds))])


def test_inference_runs_between_two_tokens_of_a_running_generation_which_stays_the_same(random_sae_atlas):
    app, client = _client(random_sae_atlas, max_client_steers=4)
    with client:
        state = app.state.saescope
        body = {**_steer_body(100), "temperature": 0.9, "seed": 3}
        alone = client.post(f"{API}/steer", json=body)  # also loads the engine
        assert alone.status_code == 200
        expected_inference = client.post(f"{API}/inference/feature", json=INFERENCE).json()
        finished: list[tuple[str, object]] = []

        def call(name: str, path: str, payload: dict) -> None:
            res = client.post(f"{API}{path}", json=payload)
            finished.append((name, res.json() if res.status_code == 200 else res.status_code))

        with _slowed(state.holder.engine):  # 2 x 100 forwards: long enough to be caught running
            steer_runs = state.worker.jobs_run["steer"]
            steering = threading.Thread(target=call, args=("steer", "/steer", body))
            steering.start()
            while state.worker.jobs_run["steer"] == steer_runs:
                time.sleep(0.002)
            call("inference", "/inference/feature", INFERENCE)
            steering.join(timeout=120)
        assert [name for name, _ in finished] == ["inference", "steer"]  # did not wait for the generation
        assert finished[0][1] == expected_inference  # the interventions were set aside for it
        assert finished[1][1] == alone.json()  # and the generation is the same


def test_between_tokens_runs_with_no_intervention_on_the_model(tiny_lm):
    """Work lent the model between two generated tokens sees the clean model, and the generation
    is the same as without the callback."""
    import torch
    from saescope.engine.engine import temporary_hooks

    tokens = torch.tensor([[1, 5, 9, 4]])
    clean = tiny_lm(tokens)
    seen: list[bool] = []
    shift = [("blocks.0.hook_resid_post", lambda act, hook: act + 1.0)]
    with temporary_hooks(tiny_lm, shift):
        hooked = tiny_lm(tokens)
    assert not (hooked == clean).all()
    for point in tiny_lm.hook_dict.values():
        assert not point.fwd_hooks
    calls = []

    def between() -> None:
        calls.append(1)
        seen.append(bool((tiny_lm(tokens) == clean).all()))
        assert all(not p.fwd_hooks for p in tiny_lm.hook_dict.values())

    # the engine's sampler takes its hooks off before the callback and puts them back after it
    from saescope.engine import engine as engine_module

    sampler = engine_module.Engine._sample
    fake = type("E", (), {"model": tiny_lm, "device": torch.device("cpu"), "n_ctx": tiny_lm.cfg.n_ctx})()
    window = engine_module._Window()
    with torch.inference_mode():
        out = sampler(fake, tokens[:, :2], 4, 0.0, 0, shift, window, between)
        plain = sampler(fake, tokens[:, :2], 4, 0.0, 0, shift, window)
    assert len(calls) == 3 and all(seen)
    assert out.token_ids == plain.token_ids


def test_a_generation_lends_the_thread_about_as_long_as_it_keeps_it():
    """Short jobs always waiting: the generation still gets about half of the model thread."""
    from saescope.api.runtime import ModelWorker

    worker = ModelWorker(max_queue=8, timeout_s=30)
    own: list[float] = []  # the generation's own steps
    lent: list[float] = []  # the turns it lent the thread
    done = threading.Event()

    def generation() -> None:
        for _ in range(40):
            t0 = time.perf_counter()
            time.sleep(0.004)
            own.append(time.perf_counter() - t0)
            if worker.should_lend("inference"):
                t0 = time.perf_counter()
                worker.run_waiting("inference")
                lent.append(time.perf_counter() - t0)
        done.set()

    async def short_jobs() -> None:
        while not done.is_set():
            await worker.run(time.sleep, 0.01)

    async def main() -> None:
        await asyncio.gather(worker.run(generation, job_class="steer"), short_jobs(), short_jobs())

    try:
        asyncio.run(main())
    finally:
        worker.shutdown()
    assert len(lent) >= 2  # it lent the thread more than once
    assert sum(lent) <= sum(own) + max(lent) + 0.05  # but not more than it kept, plus one turn
