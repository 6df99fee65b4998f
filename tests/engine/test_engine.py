"""Engine behaviour on the tiny trained model and a random StandardSAE (real components)."""

from __future__ import annotations

import pytest
import torch

from saescope.engine.engine import Engine, FeatureIntervention
from saescope.errors import InputError, NotFoundError

HOOK = "blocks.0.mlp.hook_post"

TEXT = "def add(a, b):\n    return a + b\n"


@torch.no_grad()
def manual_features(model, sae, ids):
    _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=[HOOK])
    f = sae.encode(cache[HOOK])[0]
    f[0] = 0
    return f


def test_tokenize_prepends_bos_like_corpus_contexts(engine, tiny_lm):
    ids = engine.tokenize(TEXT)
    assert ids[0] == engine.bos_id
    body = tiny_lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert ids[1:] == body


def test_tokenize_rejects_empty_and_too_long_text_naming_the_field(engine):
    with pytest.raises(InputError) as err:
        engine.tokenize("   ", field="body.text")
    assert err.value.field == "body.text"
    with pytest.raises(InputError) as err:
        engine.tokenize("x = 1\n" * 200, field="body.text")
    assert "tokens" in str(err.value) and err.value.field == "body.text"


@pytest.mark.parametrize("as_tensor", [False, True])
def test_token_ids_outside_the_vocabulary_or_context_are_refused_as_lists_and_as_tensors(engine, as_tensor):
    ids = engine.tokenize(TEXT)
    wrap = (lambda x: torch.tensor(x)) if as_tensor else (lambda x: x)
    want = engine.feature_activations(torch.tensor(ids), ["sae"])["sae"]
    assert torch.equal(engine.feature_activations(wrap(ids), ["sae"])["sae"], want)
    assert torch.equal(engine.feature_activations(wrap([ids, ids]), ["sae"])["sae"][1], want[0])
    bad = [
        ("lie in", ids[:3] + [engine.d_vocab]),
        ("lie in", [ids, [-1] + ids[1:]]),
        ("exceed the model context", [ids[0]] * (engine.n_ctx + 1)),
        ("non-empty", []),
    ]
    for message, token_ids in bad:
        with pytest.raises(InputError, match=message) as err:
            engine.feature_activations(wrap(token_ids), ["sae"])
        assert err.value.field == "tokens"


def test_feature_activations_equal_a_manual_cache_and_encode_with_bos_zeroed(engine, tiny_lm, tiny_sae):
    ids = engine.tokenize(TEXT)
    got = engine.feature_activations(ids, ["sae"])["sae"][0]
    want = manual_features(tiny_lm, tiny_sae, ids)
    assert torch.allclose(got, want, atol=1e-5)
    assert float(got[0].abs().sum()) == 0.0
    assert float(got[1:].sum()) > 0


def test_several_dictionaries_are_read_in_one_forward(tiny_lm, tiny_sae):
    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.dictionaries.architectures.standard import StandardSAE

    eng = Engine(tiny_lm)
    eng.add_dictionary("mlp", tiny_sae)
    resid = StandardSAE(int(tiny_lm.cfg.d_model), 16, metadata=DictionaryMetadata(hook_name="blocks.0.hook_resid_pre"))
    eng.add_dictionary("resid", resid)
    calls = []
    tiny_lm.hook_dict["hook_embed"].add_hook(lambda act, hook: calls.append(1))
    try:
        out = eng.feature_activations(eng.tokenize(TEXT), ["mlp", "resid"])
    finally:
        tiny_lm.hook_dict["hook_embed"].remove_hooks()
    assert len(calls) == 1
    assert out["mlp"].shape[-1] == 64 and out["resid"].shape[-1] == 16


def test_the_forward_ends_right_after_the_last_hook_needed(engine, tiny_lm):
    """Nothing after the dictionary's hook point runs (here: the MLP's output projection and the
    unembedding), and the model's hooks are removed afterwards."""
    ran = []
    handles = [
        tiny_lm.blocks[0].mlp.hook_post.register_forward_hook(lambda *a: ran.append("mlp.hook_post")),
        tiny_lm.blocks[0].hook_mlp_out.register_forward_hook(lambda *a: ran.append("hook_mlp_out")),
        tiny_lm.unembed.register_forward_hook(lambda *a: ran.append("unembed")),
    ]
    try:
        engine.feature_activations(engine.tokenize(TEXT), ["sae"])
    finally:
        for handle in handles:
            handle.remove()
    assert ran == ["mlp.hook_post"]
    assert not any(hp.fwd_hooks for hp in tiny_lm.hook_dict.values())


def test_engine_removes_only_its_own_hooks(engine, tiny_lm, monkeypatch):
    """Hooks that other code put on the model (here one on the hook point the engine uses and one
    elsewhere) stay registered and keep running through the engine's calls; the engine's are gone,
    removed one by one (never by walking every hook point of the model, which costs more the larger the model)."""

    def walk_all(*args, **kwargs):
        raise AssertionError("reset_hooks walked every hook point")

    monkeypatch.setattr(tiny_lm, "reset_hooks", walk_all)
    seen = []
    same_point = tiny_lm.hook_dict["blocks.0.mlp.hook_post"]
    elsewhere = tiny_lm.hook_dict["blocks.0.hook_resid_pre"]
    same_point.add_hook(lambda act, hook: seen.append("same"))
    elsewhere.add_hook(lambda act, hook: seen.append("elsewhere"))
    try:
        ids = engine.tokenize(TEXT)
        engine.feature_activations(ids, ["sae"])
        engine.generate(ids, 2, 0.0, 0, [FeatureIntervention("sae", 1, "add", 1.0)])
        engine.ablate(ids, "sae", 1)
        assert len(same_point.fwd_hooks) == 1 and len(elsewhere.fwd_hooks) == 1
        assert seen.count("same") >= 1 and seen.count("elsewhere") >= 1
    finally:
        same_point.remove_hooks()
        elsewhere.remove_hooks()
        monkeypatch.undo()
    assert not any(hp.fwd_hooks for hp in tiny_lm.hook_dict.values())


def test_top_features_are_sorted_positive_and_empty_at_bos(engine):
    ids = engine.tokenize(TEXT)
    top = engine.top_features(ids, ["sae"], top_k=3)["sae"]
    assert top.indices[0] == [] and top.totals[0] == 0.0 and top.l0[0] == 0
    for values in top.values[1:]:
        assert values == sorted(values, reverse=True)
        assert all(v > 0 for v in values) and len(values) <= 3


def test_feature_activation_rejects_an_index_beyond_d_sae(engine):
    with pytest.raises(NotFoundError):
        engine.feature_activation(engine.tokenize(TEXT), "sae", 64)


def test_generation_is_deterministic_for_a_seed_and_greedy_at_temperature_zero(engine, tiny_lm):
    ids = engine.tokenize("import os\n")
    a, _ = engine.generate(ids, 8, 0.9, seed=3)
    b, _ = engine.generate(ids, 8, 0.9, seed=3)
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs
    greedy, _ = engine.generate(ids, 4, 0.0, seed=0)
    seq = list(ids)
    for token in greedy.token_ids:
        logits = tiny_lm(torch.tensor([seq]))[0, -1]
        assert token == int(logits.argmax())
        seq.append(token)
    assert all(lp <= 0 for lp in greedy.logprobs)


def _greedy_by_full_forwards(model, ids, n_tokens, n_ctx, hooks=()):
    """Greedy continuation recomputing the whole (windowed) sequence each step, without a cache."""
    seq, tokens, logprobs = list(ids), [], []
    for _ in range(n_tokens):
        window = seq if len(seq) <= n_ctx else seq[:1] + seq[-(n_ctx - 1) :]
        with torch.inference_mode(), model.hooks(fwd_hooks=list(hooks)):
            logits = model(torch.tensor([window]))[0, -1].float()
        token = int(logits.argmax())
        tokens.append(token)
        logprobs.append(float(torch.log_softmax(logits, -1)[token]))
        seq.append(token)
    return tokens, logprobs


def test_cached_generation_equals_full_forwards_inside_and_past_the_context(engine, tiny_lm):
    n_ctx = int(tiny_lm.cfg.n_ctx)
    ids = engine.tokenize("import os\n")
    got, _ = engine.generate(ids, 6, 0.0, seed=0)
    want_tokens, want_logprobs = _greedy_by_full_forwards(tiny_lm, ids, 6, n_ctx)
    assert got.token_ids == want_tokens
    assert got.logprobs == pytest.approx(want_logprobs, abs=1e-4)
    long_ids = engine.tokenize("x = 1\n" * 3)
    long_ids = (long_ids + long_ids[1:] * n_ctx)[: n_ctx - 3]  # crosses n_ctx while generating
    got, _ = engine.generate(long_ids, 8, 0.0, seed=0)
    want_tokens, want_logprobs = _greedy_by_full_forwards(tiny_lm, long_ids, 8, n_ctx)
    assert got.token_ids == want_tokens
    assert got.logprobs == pytest.approx(want_logprobs, abs=1e-4)


def test_steered_cached_generation_equals_steered_full_forwards(engine, tiny_lm):
    ids = engine.tokenize("import os\n")
    intervention = FeatureIntervention("sae", 5, "add", 40.0)
    _, steered = engine.generate(ids, 6, 0.0, 0, [intervention])
    # a full forward always starts at BOS, so the hooks' window start stays 0
    hooks = engine._intervention_hooks([intervention])
    want_tokens, want_logprobs = _greedy_by_full_forwards(tiny_lm, ids, 6, int(tiny_lm.cfg.n_ctx), hooks)
    assert steered.token_ids == want_tokens
    assert steered.logprobs == pytest.approx(want_logprobs, abs=1e-4)


def test_steering_with_zero_add_changes_nothing_and_strong_add_changes_the_text(engine):
    ids = engine.tokenize("import os\n")
    default, steered = engine.generate(ids, 10, 0.0, 0, [FeatureIntervention("sae", 5, "add", 0.0)])
    assert default.token_ids == steered.token_ids
    assert default.logprobs == steered.logprobs  # bit-identical: each continuation is its own forward
    default, steered = engine.generate(ids, 10, 0.0, 0, [FeatureIntervention("sae", 5, "add", 200.0)])
    assert default.token_ids != steered.token_ids


def test_add_intervention_moves_the_hook_activation_by_strength_times_decoder_row(engine, tiny_lm, tiny_sae):
    ids = torch.tensor([engine.tokenize(TEXT)])
    hooks = engine._intervention_hooks([FeatureIntervention("sae", 7, "add", 2.5)])
    seen = {}
    with tiny_lm.hooks(fwd_hooks=hooks + [(HOOK, lambda act, hook: seen.setdefault("x", act.clone()))]):
        tiny_lm(ids, stop_at_layer=1)
    _, cache = tiny_lm.run_with_cache(ids, names_filter=[HOOK])
    delta = seen["x"] - cache[HOOK]
    assert torch.allclose(delta[0, 0], torch.zeros_like(delta[0, 0]))  # BOS untouched
    assert torch.allclose(delta[0, 1:], (2.5 * tiny_sae.W_dec[7]).expand_as(delta[0, 1:]), atol=1e-5)


def test_clamping_to_the_current_activation_is_a_no_op_and_clamp_sets_the_activation(engine, tiny_lm, tiny_sae):
    ids = torch.tensor([engine.tokenize(TEXT)])
    f = manual_features(tiny_lm, tiny_sae, ids[0].tolist())
    index = int(f[1:].sum(0).argmax())
    hooks = engine._intervention_hooks([FeatureIntervention("sae", index, "clamp", 3.0)])
    seen = {}
    with tiny_lm.hooks(fwd_hooks=hooks + [(HOOK, lambda act, hook: seen.setdefault("x", act.clone()))]):
        tiny_lm(ids, stop_at_layer=1)
    _, cache = tiny_lm.run_with_cache(ids, names_filter=[HOOK])
    expected = cache[HOOK][0, 1:] + (3.0 - f[1:, index]).unsqueeze(-1) * tiny_sae.W_dec[index]
    assert torch.allclose(seen["x"][0, 1:], expected, atol=1e-5)


def test_ablating_a_silent_feature_changes_nothing(engine, tiny_lm, tiny_sae):
    ids = engine.tokenize(TEXT)
    f = manual_features(tiny_lm, tiny_sae, ids)
    silent = [i for i in range(64) if float(f[:, i].max()) == 0.0]
    if not silent:
        pytest.skip("every random feature fires on this text")
    result = engine.ablate(ids, "sae", silent[0])
    assert result.firing_positions == []
    assert max(abs(d) for d in result.delta_logprob) < 1e-5


def test_ablation_delta_matches_a_manual_run_without_the_feature(engine, tiny_lm, tiny_sae):
    ids = engine.tokenize(TEXT)
    f = manual_features(tiny_lm, tiny_sae, ids)
    index = int(f.sum(0).argmax())
    result = engine.ablate(ids, "sae", index)
    assert result.delta_logprob[0] == 0.0
    assert result.activations == pytest.approx(f[:, index].tolist(), abs=1e-5)
    tokens = torch.tensor([ids])

    def remove(act, hook):
        out = act.clone()
        out[0, 1:] -= f[1:, index].unsqueeze(-1) * tiny_sae.W_dec[index]
        return out

    clean = torch.log_softmax(tiny_lm(tokens)[0], -1)
    ablated = torch.log_softmax(tiny_lm.run_with_hooks(tokens, fwd_hooks=[(HOOK, remove)])[0], -1)
    want = [0.0] + [float(ablated[i - 1, ids[i]] - clean[i - 1, ids[i]]) for i in range(1, len(ids))]
    assert result.delta_logprob == pytest.approx(want, abs=1e-4)
    assert any(abs(d) > 1e-6 for d in want)
    assert result.firing_positions and all(f[p, index] > 0 for p in result.firing_positions)


def test_batched_top_features_equal_one_sequence_at_a_time(engine):
    texts = ["import os\n", "def add(a, b):\n    return a + b\n", "x"]
    seqs = [engine.tokenize(t) for t in texts]
    batched = engine.top_features_batch(seqs, ["sae"], top_k=4)
    for seq, got in zip(seqs, batched):
        want = engine.top_features(seq, ["sae"], top_k=4)["sae"]
        assert got["sae"].indices == want.indices and got["sae"].l0 == want.l0
        assert len(got["sae"].totals) == len(seq)
        for a, b in zip(got["sae"].values, want.values):
            assert a == pytest.approx(b, abs=1e-5)
