"""Baselines: exactness of the linear ones, ReLU variants, ICA recovery, save/load identity,
evaluation through the same code path as SAEs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saescope.activations.stream import iter_activation_batches
from saescope.dictionaries.baselines import (
    BaselineDictionary,
    fit_baseline,
    fit_ica,
    fit_neuron_basis,
    fit_pca,
    fit_random_directions,
)
from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.evaluation import evaluate_dictionary
from saescope.dictionaries.saelens_format import load_dictionary, read_config, save_dictionary
from saescope.dictionaries.architectures.standard import StandardSAE
from saescope.errors import ConfigError, InputError

META = DictionaryMetadata(hook_name="blocks.0.mlp.hook_post", model_name="tiny")


@pytest.fixture(scope="module")
def acts() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(500, 8, generator=g) @ torch.randn(8, 8, generator=g) + 3.0


def test_linear_neurons_and_full_pca_reconstruct_exactly(acts):
    for d in (fit_neuron_basis(acts, metadata=META), fit_pca(acts, metadata=META)):
        assert torch.allclose(d(acts), acts, atol=1e-4)
    assert torch.equal(fit_neuron_basis(acts).encode(acts), acts)


def test_pca_components_are_unit_orthogonal_and_sorted_by_variance(acts):
    d = fit_pca(acts)
    w = d.W_dec.detach().double()
    assert torch.allclose(w @ w.T, torch.eye(8, dtype=torch.float64), atol=1e-5)
    variances = d.encode(acts).var(0)
    assert torch.all(variances[:-1] >= variances[1:] - 1e-4)
    assert torch.allclose(d.encode(acts).mean(0), torch.zeros(8), atol=1e-3)  # centred projection


def test_random_directions_are_seeded_unit_vectors(acts):
    a, b, c = fit_random_directions(acts, 16, seed=1), fit_random_directions(acts, 16, seed=1), fit_random_directions(acts, 16, seed=2)
    assert torch.equal(a.W_dec, b.W_dec) and not torch.equal(a.W_dec, c.W_dec)
    assert torch.allclose(a.W_dec.norm(dim=1), torch.ones(16), atol=1e-6)
    assert torch.allclose(a.encode(acts), (acts - acts.mean(0)) @ a.W_dec.T, atol=1e-4)


def test_ica_recovers_independent_sources():
    g = np.random.default_rng(0)
    sources = g.laplace(size=(3000, 3))
    mixing = np.array([[1.0, 0.5, 0.0], [0.2, 1.0, 0.3], [0.0, 0.4, 1.0]])
    x = torch.from_numpy(sources @ mixing.T).float()
    d = fit_ica(x, seed=0)
    f = d.encode(x).detach().numpy()
    corr = np.abs(np.corrcoef(f.T, sources.T)[:3, 3:])
    assert (corr.max(axis=1) > 0.95).all()
    assert torch.allclose(d(x), x, atol=1e-3)
    assert torch.allclose(d.W_dec.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(fit_ica(x, seed=0).W_enc, d.W_enc)


def test_relu_variant_fires_above_a_proportional_negative_bias(acts):
    d = fit_neuron_basis(acts, relu=True, bias_scale=1.0)
    f = d.encode(acts)
    assert (f >= 0).all()
    assert torch.allclose(d.b_enc, -acts.double().std(0).float(), atol=1e-4)
    density = (f > 0).float().mean(0)
    assert (density < 0.3).all() and (density > 0.05).all()  # roughly "one std above the mean"


@pytest.mark.parametrize("kind", ["neurons", "random", "pca", "ica"])
@pytest.mark.parametrize("relu", [False, True])
def test_baselines_save_and_load_as_themselves(tmp_path, acts, kind, relu):
    d = fit_baseline(kind, acts, relu=relu, seed=0, metadata=META)
    save_dictionary(d, tmp_path)
    cfg = read_config(tmp_path)
    assert cfg["metadata"]["saescope_kind"] == kind
    loaded = load_dictionary(tmp_path)
    assert isinstance(loaded, BaselineDictionary) and loaded.kind == kind
    assert loaded.activation == ("relu" if relu else "identity")
    assert torch.equal(loaded.encode(acts), d.encode(acts))


def test_sae_without_encoder_bias_zeroes_b_enc_only(tmp_path, acts):
    sae = StandardSAE(8, 32, META)
    with torch.no_grad():
        sae.b_enc.normal_()
    control = fit_baseline("sae", sae=sae)
    assert torch.all(control.b_enc == 0) and torch.equal(control.W_enc, sae.W_enc)
    assert not torch.all(sae.b_enc == 0)  # original untouched
    save_dictionary(control, tmp_path)
    loaded = load_dictionary(tmp_path)
    assert loaded.kind == "sae" and loaded.metadata.model_dump()["saescope_variant"] == "no_encoder_bias"
    assert torch.equal(loaded.encode(acts), control.encode(acts))


def test_bad_baseline_requests_raise():
    with pytest.raises(ConfigError):
        fit_baseline("umap", torch.zeros(5, 3))  # type: ignore[arg-type]
    with pytest.raises(InputError):
        fit_pca(torch.zeros(1, 3))
    with pytest.raises(ConfigError):
        fit_pca(torch.randn(10, 3), d_sae=4)
    with pytest.raises(ConfigError):
        fit_baseline("sae")


@pytest.mark.slow
def test_baselines_evaluate_through_the_same_code_path():
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, d_head=4, n_heads=4, d_mlp=32, d_vocab=100, n_ctx=16, act_fn="gelu", seed=0, device="cpu")
    lm = HookedTransformer(cfg).eval()
    tokens = np.random.default_rng(0).integers(1, 100, size=(8, 16))
    tokens[:, 0] = 0
    x = torch.cat(list(iter_activation_batches(lm, tokens, META.hook_name)))
    exact = evaluate_dictionary(lm, fit_pca(x, metadata=META), tokens)
    assert exact.explained_variance == pytest.approx(1.0, abs=1e-4)
    assert exact.ce_recovered == pytest.approx(1.0, abs=1e-3)
    truncated = evaluate_dictionary(lm, fit_pca(x, d_sae=4, metadata=META), tokens)
    assert 0 < truncated.explained_variance < exact.explained_variance
    relu = evaluate_dictionary(lm, fit_neuron_basis(x, relu=True, metadata=META), tokens)
    assert relu.l0 < 32 and relu.dead < 32


def test_pca_fits_many_rows_without_building_an_n_by_n_matrix() -> None:
    """100k rows: an SVD with full_matrices=True would try to allocate a 100k x 100k U (40 GB)."""
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05])
    x = torch.randn(100_000, 8, generator=generator) * scales + 1.0
    pca = fit_pca(x)
    assert pca.d_sae == 8
    # Components come out in decreasing variance, aligned with the axes of the planted scales.
    assert torch.allclose(pca.W_dec.abs().argmax(dim=1), torch.arange(8))
    assert torch.allclose(pca.decode(pca.encode(x[:100])), x[:100], atol=1e-4)
