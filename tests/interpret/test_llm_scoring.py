"""The LLM explainer and scorers against a local fake OpenAI-compatible server with planted features:
exact scores, per-feature handling of malformed and wrong-length answers, retries on 429/5xx and
time-outs, the answer cache and resume."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest

from fake_llm import FakeLLM
from planted import VOCAB, planted_dictionary
from saescope.interpret.config import ExplainConfig, LLMConfig
from saescope.interpret.llm import OpenAIChat
from saescope.interpret.prompts import expected_digits
from saescope.interpret.run import Interpreter, ResultLog, interpret_dictionary

RULES = [" alpha", "beta-after-gamma", " MALFORMED", " SHORT"]


def _config(fake: FakeLLM, cache: Path | None, **llm: object) -> ExplainConfig:
    settings = {"base_url": fake.base_url, "model": "fake", "cache_dir": str(cache) if cache else "",
                "backoff_s": 0.01, "max_retries": 4, "timeout_s": 5.0, "concurrency": 2, **llm}
    return ExplainConfig(llm=LLMConfig(**settings), llm_scoring_top=5, llm_scoring_random=5,
                         llm_detection_items=5, progress=False)


def _run(fake: FakeLLM, cache: Path | None = None, log: Path | None = None, **llm: object):
    frags = planted_dictionary(RULES)
    config = _config(fake, cache, **llm)
    backend = OpenAIChat(config.llm)
    interpreter = Interpreter("openai", ["simulation", "detection", "fuzzing"], VOCAB, frags.token_counts,
                              config, backend)
    try:
        return frags, interpret_dictionary(frags, interpreter, ResultLog(log), progress=False), backend
    finally:
        backend.close()


def _expected_simulation(feature, word: str) -> float:
    frags = feature.scoring[:5] + feature.random[:5]
    truth = np.concatenate([f.activations for f in frags])
    pred = np.concatenate([(f.tokens == VOCAB.index(word)) * 10.0 for f in frags])
    return float(np.corrcoef(truth, pred)[0, 1])


def test_planted_features_get_exactly_the_expected_explanations_and_scores() -> None:
    with FakeLLM() as fake:
        frags, results, _ = _run(fake)
    alpha, beta = results[0], results[1]
    assert alpha.explanation == 'Fires on " alpha".' and alpha.explainer == "openai:fake"
    assert alpha.score("simulation", "top_and_random") == pytest.approx(1.0, abs=1e-12)
    assert alpha.score("detection", "balanced_accuracy") == 1.0
    assert alpha.score("fuzzing", "balanced_accuracy") == 1.0
    assert beta.explanation == 'Fires on " beta".'
    expected = _expected_simulation(frags.features[1], " beta")
    assert 0 < expected < 1
    assert beta.score("simulation", "top_and_random") == pytest.approx(expected, abs=1e-12)
    versions = {(s.scorer, s.version) for s in alpha.scores}
    assert versions == {("simulation", "simulation-llm/1"), ("detection", "detection-llm/1"),
                        ("fuzzing", "fuzzing-llm/1")}


def test_a_malformed_answer_fails_only_that_features_scores() -> None:
    with FakeLLM() as fake:
        _, results, backend = _run(fake)
    broken = results[2]
    assert broken.explanation == 'Fires on " MALFORMED".'
    assert {s.scorer for s in broken.scores if s.failed} == {"simulation", "detection", "fuzzing"}
    assert all(s.value is None and "not a JSON object" in s.note for s in broken.scores)
    assert results[0].score("simulation", "top") is not None  # the batch went on
    assert backend.stats.failures == 0  # the requests themselves succeeded


def test_an_answer_with_the_wrong_number_of_activations_fails_that_simulation() -> None:
    with FakeLLM() as fake:
        _, results, _ = _run(fake)
    short = results[3]
    sims = [s for s in short.scores if s.scorer == "simulation"]
    assert sims and all(s.failed and "values for" in s.note for s in sims)
    assert short.score("detection", "balanced_accuracy") is not None


def test_429_and_5xx_answers_are_retried_and_change_nothing(tmp_path: Path) -> None:
    with FakeLLM() as fake:
        _, clean, _ = _run(fake)
    with FakeLLM() as fake:
        fake.statuses.extend([429, 500, 503])
        _, retried, backend = _run(fake)
    assert backend.stats.retries == 3
    assert [r.scores for r in retried] == [r.scores for r in clean]


def test_a_timed_out_request_is_retried() -> None:
    with FakeLLM() as fake:
        fake.delays.append(1.5)
        _, results, backend = _run(fake, timeout_s=0.5, concurrency=1)
    assert backend.stats.retries >= 1
    assert results[0].score("simulation", "top_and_random") == pytest.approx(1.0)


def test_a_request_failing_every_retry_fails_the_feature_not_the_run() -> None:
    with FakeLLM() as fake:
        fake.statuses.extend([500] * 3)
        _, results, backend = _run(fake, max_retries=2, concurrency=1)
    assert backend.stats.failures == 1
    first = results[0]
    assert first.error.startswith("explanation failed") and all(s.failed for s in first.scores)
    assert results[1].score("simulation", "top_and_random") is not None


def test_a_rerun_with_the_cache_makes_no_call(tmp_path: Path) -> None:
    with FakeLLM() as fake:
        _, first, backend1 = _run(fake, cache=tmp_path / "cache")
        calls = fake.calls
        _, second, backend2 = _run(fake, cache=tmp_path / "cache")
        assert calls > 0 and fake.calls == calls
    assert backend2.stats.calls == 0 and backend2.stats.cache_hits == backend1.stats.calls
    assert [r.scores for r in second] == [r.scores for r in first]


def test_an_interrupted_run_resumes_from_its_log(tmp_path: Path) -> None:
    frags = planted_dictionary([" alpha", "beta-after-gamma", " gamma", " delta"])
    log = ResultLog(tmp_path / "run.jsonl")
    with FakeLLM() as fake:
        config = _config(fake, None, concurrency=1)
        backend = OpenAIChat(config.llm)
        interpreter = Interpreter("openai", ["simulation"], VOCAB, frags.token_counts, config, backend)

        def stop_after_two(result):
            if result.index == 1:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            interpret_dictionary(frags, interpreter, log, progress=False, on_result=stop_after_two)
        assert sorted(log.load()) == [0, 1]
        before = fake.calls
        results = interpret_dictionary(frags, interpreter, log, progress=False)
        per_feature = 1 + 10  # one explanation, ten simulated fragments
        assert fake.calls - before == 2 * per_feature
        backend.close()
    assert [r.index for r in results] == [0, 1, 2, 3]


def test_logprob_mode_weights_each_digit_by_its_probability() -> None:
    content = [{"token": "10", "top_logprobs": [{"token": "10", "logprob": np.log(0.8)},
                                                {"token": "5", "logprob": np.log(0.2)}]},
               {"token": ",", "top_logprobs": []},
               {"token": "0", "top_logprobs": [{"token": "0", "logprob": 0.0}]}]
    assert expected_digits(content, 2) == pytest.approx([9.0, 0.0])
    assert expected_digits(content, 3) is None


def test_the_simulator_asks_for_logprobs_when_configured() -> None:
    with FakeLLM() as fake:
        fake.with_logprobs = True
        _, results, _ = _run(fake, logprobs=True)
        assert any(b.get("logprobs") for b in fake.bodies)
    assert results[0].score("simulation", "top_and_random") == pytest.approx(1.0)
