"""evaluate_dictionary on a tiny random model: metric definitions and sanity relations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saescope.activations.stream import iter_activation_batches
from saescope.dictionaries.base import Dictionary, DictionaryMetadata
from saescope.dictionaries.evaluation import DictionaryMetrics, evaluate_dictionary, load_metrics, save_metrics
from saescope.dictionaries.architectures.standard import StandardSAE

HOOK = "blocks.0.mlp.hook_post"


@pytest.fixture(scope="module")
def lm() -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=16, d_head=4, n_heads=4, d_mlp=32, d_vocab=100, n_ctx=16,
        act_fn="gelu", normalization_type="LN", seed=0, device="cpu",
    )
    return HookedTransformer(cfg).eval()


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    t = np.random.default_rng(1).integers(1, 100, size=(12, 16), dtype=np.int64)
    t[:, 0] = 0
    return t


class IdentityDictionary(Dictionary):
    """Perfect reconstruction: features = activations, decoder = identity."""

    kind = "neurons"
    architecture = "identity"

    def __init__(self, d: int, hook: str) -> None:
        super().__init__(d, d, DictionaryMetadata(hook_name=hook))
        self.W_dec = torch.nn.Parameter(torch.eye(d))
        self.b_dec = torch.nn.Parameter(torch.zeros(d))

    def encode(self, x):
        return x @ self.W_dec.T


class ScaledDictionary(IdentityDictionary):
    """Reconstruction = 0.5 * x (suppressed norm)."""

    def encode(self, x):
        return 0.5 * x


def test_perfect_reconstruction_recovers_all_loss(lm, tokens):
    m = evaluate_dictionary(lm, IdentityDictionary(32, HOOK), tokens, batch_size=5)
    assert m.n_tokens == 12 * 15 and m.n_contexts == 12
    assert m.mse < 1e-10 and m.explained_variance == pytest.approx(1.0)
    assert m.cosine == pytest.approx(1.0, abs=1e-6) and m.norm_ratio == pytest.approx(1.0, abs=1e-6)
    assert m.ce_spliced == pytest.approx(m.ce_clean, abs=1e-5)
    assert m.ce_recovered == pytest.approx(1.0, abs=1e-4)
    assert m.kl == pytest.approx(0.0, abs=1e-6)


def test_explained_variance_is_measured_against_the_mean(lm, tokens):
    x = torch.cat(list(iter_activation_batches(lm, tokens, HOOK))).double()
    m = evaluate_dictionary(lm, ScaledDictionary(32, HOOK), tokens)
    sse = ((x - 0.5 * x) ** 2).sum()
    sst = ((x - x.mean(0)) ** 2).sum()
    assert m.explained_variance == pytest.approx(float(1 - sse / sst), rel=1e-6)
    assert m.explained_variance_vs_zero == pytest.approx(float(1 - sse / (x**2).sum()), rel=1e-6)
    assert m.norm_ratio == pytest.approx(0.5, abs=1e-6)
    assert m.mse == pytest.approx(float(sse / x.numel()), rel=1e-6)


def test_zero_ablation_and_random_sae_have_consistent_scores(lm, tokens):
    torch.manual_seed(0)
    sae = StandardSAE(32, 64, DictionaryMetadata(hook_name=HOOK))
    m = evaluate_dictionary(lm, sae, tokens)
    assert m.ce_zero_ablation != pytest.approx(m.ce_clean)
    expected = (m.ce_zero_ablation - m.ce_spliced) / (m.ce_zero_ablation - m.ce_clean)
    assert m.ce_recovered == pytest.approx(expected)
    assert m.kl > 0
    assert m.dead + (np.array(m.feature_density) > 0).sum() == 64
    assert sum(m.density_histogram.counts) == 64 - m.dead
    assert m.dense == int((np.array(m.feature_density) > 0.1).sum())


def test_dead_features_are_counted(lm, tokens):
    sae = StandardSAE(32, 8, DictionaryMetadata(hook_name=HOOK))
    with torch.no_grad():
        sae.b_enc[:3] = -1e6
    m = evaluate_dictionary(lm, sae, tokens)
    assert m.dead >= 3
    assert m.feature_density[:3] == [0.0, 0.0, 0.0]


def test_metrics_round_trip_through_metrics_json(lm, tokens, tmp_path):
    m = evaluate_dictionary(lm, IdentityDictionary(32, HOOK), tokens)
    path = save_metrics(m, tmp_path)
    data = json.loads(path.read_text())
    assert "feature_density" not in data and data["l0"] == pytest.approx(m.l0)
    loaded = load_metrics(tmp_path)
    assert isinstance(loaded, DictionaryMetrics) and loaded.ce_clean == pytest.approx(m.ce_clean)


def test_per_head_splice_replaces_only_the_selected_head(lm, tokens):
    m = evaluate_dictionary(lm, IdentityDictionary(4, "blocks.0.attn.hook_z"), tokens, hook_head_index=1)
    assert m.hook_head_index == 1 and m.explained_variance == pytest.approx(1.0)
    assert m.ce_spliced == pytest.approx(m.ce_clean, abs=1e-5)
    assert m.ce_zero_ablation != pytest.approx(m.ce_clean, abs=1e-6)


def test_dimension_mismatch_is_a_config_error(lm, tokens):
    from saescope.errors import ConfigError

    with pytest.raises(ConfigError, match="d_in=16"):
        evaluate_dictionary(lm, IdentityDictionary(16, HOOK), tokens)


@pytest.mark.slow
def test_trained_tiny_lm_on_stdlib_text_orders_the_losses(tiny_lm):
    """On the real tiny model and held-out stdlib contexts: zero ablation hurts, a PCA-8 splice
    sits in between with KL > 0, mean ablation is no worse than zero ablation, and full PCA
    recovers everything."""
    from saescope.corpus.packing import pack_documents
    from saescope.corpus.stdlib import stdlib_documents
    from saescope.dictionaries.baselines import fit_pca

    docs = stdlib_documents("heldout", max_files=20)
    packed = pack_documents(docs, tiny_lm.tokenizer, n_ctx=32, max_contexts=24, seed=0)
    fit, held = packed.tokens[:12], packed.tokens[12:]
    x = torch.cat(list(iter_activation_batches(tiny_lm, fit, HOOK)))
    meta = DictionaryMetadata(hook_name=HOOK)
    full = evaluate_dictionary(tiny_lm, fit_pca(x, metadata=meta), held)
    assert full.ce_recovered == pytest.approx(1.0, abs=1e-3) and full.kl < 1e-6
    part = evaluate_dictionary(tiny_lm, fit_pca(x, d_sae=8, metadata=meta), held)
    assert part.ce_clean < part.ce_zero_ablation and part.ce_spliced < part.ce_zero_ablation
    assert part.ce_recovered > 0 and part.kl > 0 and part.explained_variance < 1
    assert part.ce_mean_ablation <= part.ce_zero_ablation + 1e-6


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_pre", "blocks.1.mlp.hook_post", "hook_embed"])
def test_losses_match_direct_full_forward_computation(tokens, hook):
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, d_head=4, n_heads=4, d_mlp=32, d_vocab=100, n_ctx=16,
        act_fn="gelu", seed=3, device="cpu",
    )
    lm2 = HookedTransformer(cfg).eval()
    d = 32 if "mlp" in hook else 16
    m = evaluate_dictionary(lm2, ScaledDictionary(d, hook), tokens, batch_size=5)
    t = torch.as_tensor(tokens)

    def half(act, hook):
        act = act.clone()
        act[:, 1:] = 0.5 * act[:, 1:]
        return act

    def zero(act, hook):
        act = act.clone()
        act[:, 1:] = 0
        return act

    with torch.no_grad():
        assert m.ce_clean == pytest.approx(float(lm2(t, return_type="loss")), rel=1e-5)
        spliced = lm2.run_with_hooks(t, return_type="loss", fwd_hooks=[(hook, half)])
        zeroed = lm2.run_with_hooks(t, return_type="loss", fwd_hooks=[(hook, zero)])
    assert m.ce_spliced == pytest.approx(float(spliced), rel=1e-5)
    assert m.ce_zero_ablation == pytest.approx(float(zeroed), rel=1e-5)


def test_all_heads_hook_z_splice_is_exact_for_identity(lm, tokens):
    m = evaluate_dictionary(lm, IdentityDictionary(16, "blocks.0.attn.hook_z"), tokens)
    assert m.ce_spliced == pytest.approx(m.ce_clean, abs=1e-5) and m.mse < 1e-10


def test_topk_sae_l0_is_bounded_by_k(lm, tokens):
    from saescope.dictionaries.architectures.topk import TopKSAE

    torch.manual_seed(0)
    sae = TopKSAE(32, 64, k=4, metadata=DictionaryMetadata(hook_name=HOOK))
    m = evaluate_dictionary(lm, sae, tokens)
    assert 0 < m.l0 <= 4
    assert 0 <= m.dead < 64


def test_evaluating_several_dictionaries_together_equals_evaluating_each(tiny_lm) -> None:
    import numpy as np
    import torch

    from saescope.dictionaries.architectures.standard import StandardSAE
    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.dictionaries.evaluation import evaluate_dictionaries, evaluate_dictionary

    hook = "blocks.0.mlp.hook_post"
    torch.manual_seed(0)
    saes = []
    for d_sae in (16, 40):
        sae = StandardSAE(int(tiny_lm.cfg.d_mlp), d_sae, metadata=DictionaryMetadata(hook_name=hook))
        with torch.no_grad():
            sae.W_enc.normal_(0, 0.2)
            sae.W_dec.copy_(sae.W_enc.T)
        saes.append(sae)
    tokens = np.random.default_rng(0).integers(1, int(tiny_lm.cfg.d_vocab), size=(6, 24))
    together = evaluate_dictionaries(tiny_lm, saes, tokens, hook, batch_size=4)
    for sae, metrics in zip(saes, together):
        alone = evaluate_dictionary(tiny_lm, sae, tokens, hook, batch_size=4)
        a, b = metrics.model_dump(), alone.model_dump()
        assert a.pop("density_histogram") == b.pop("density_histogram")
        assert a.pop("feature_density", None) == b.pop("feature_density", None)
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9)
    assert together[0].ce_spliced != together[1].ce_spliced
