"""Pruning and decoder fine-tuning (OpenMOSS) on planted synthetic data."""

from __future__ import annotations

import pytest
import torch

from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.postprocess import (
    FinetuneConfig,
    PruneConfig,
    apply_prune_mask,
    feature_statistics,
    finetune_decoder,
    load_prune_result,
    prune_dictionary,
    prune_mask,
    reconstruction_metrics,
    save_prune_result,
)
from saescope.dictionaries.saelens_format import load_dictionary, save_dictionary
from saescope.dictionaries.architectures.standard import StandardSAE

D_IN, N_DIR = 32, 48


def _planted(n: int = 4000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(N_DIR, D_IN, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    active = torch.rand(n, N_DIR, generator=g) < 3 / N_DIR
    codes = active * (1 + 2 * torch.rand(n, N_DIR, generator=g))
    return codes @ directions, directions


def _planted_sae(directions: torch.Tensor, encoder_gain: float = 1.0) -> StandardSAE:
    sae = StandardSAE(D_IN, N_DIR, DictionaryMetadata(hook_name="blocks.0.hook_resid_post"))
    with torch.no_grad():
        sae.W_dec.copy_(directions)
        sae.W_enc.copy_(directions.T * encoder_gain)
        sae.b_enc.fill_(-0.6 * encoder_gain)
        sae.b_dec.zero_()
    return sae


@pytest.mark.slow
def test_finetuning_undoes_feature_suppression():
    x, directions = _planted(2000)
    suppressed = _planted_sae(directions, encoder_gain=0.6)
    tuned, result = finetune_decoder(suppressed, x, FinetuneConfig(lr=5e-2, epochs=4, batch_size=256))
    assert result.before.norm_ratio < 0.7
    assert result.after.norm_ratio > result.before.norm_ratio + 0.2  # OpenMOSS: 0.775 -> 0.899
    assert result.after.mse < 0.6 * result.before.mse
    assert result.after.explained_variance > result.before.explained_variance
    # encoder frozen: the same features fire; decoder rows stay unit norm (scale folded into encoder)
    assert torch.equal(tuned.encode(x) > 0, suppressed.encode(x) > 0)
    assert torch.allclose(tuned.W_dec.norm(dim=1), torch.ones(N_DIR), atol=1e-5)
    assert result.after == reconstruction_metrics(tuned, x)


def test_finetuned_dictionary_saves_and_loads_with_identical_encodings(tmp_path):
    x, directions = _planted(1000)
    tuned, _ = finetune_decoder(_planted_sae(directions, 0.6), x, FinetuneConfig(lr=1e-2, batch_size=256, fold_scale_into="decoder"))
    save_dictionary(tuned, tmp_path)
    loaded = load_dictionary(tmp_path)
    assert torch.allclose(loaded(x), tuned(x), atol=1e-5)


def test_pruning_flags_each_criterion():
    x, directions = _planted(2000)
    sae = _planted_sae(directions)
    with torch.no_grad():
        sae.b_enc[0] = -100.0  # never fires -> low density and low max activation
        sae.W_enc[:, 1] *= 0.05  # fires weakly -> low max activation
        sae.W_dec[2] *= 0.5  # short decoder row
    stats = feature_statistics(sae, x)
    assert stats.density[0] == 0 and stats.max_activation[1] < 1 and stats.decoder_norm[2] == pytest.approx(0.5)
    result = prune_mask(stats)
    assert result.pruned[:3] == [True, True, True]
    assert result.n_low_density >= 1 and result.n_low_decoder_norm == 1 and result.n_low_max_activation >= 2
    assert result.n_pruned == sum(result.pruned) < N_DIR
    loose = prune_mask(stats, PruneConfig(min_max_activation=0.0, min_decoder_norm=0.0, min_density=0.0))
    assert loose.n_pruned == 0


def test_pruned_dictionary_disables_or_removes_features(tmp_path):
    x, directions = _planted(1000)
    sae = _planted_sae(directions)
    mask = torch.zeros(N_DIR, dtype=torch.bool)
    mask[[3, 7]] = True
    disabled = apply_prune_mask(sae, mask)
    f_full, f_dis = sae.encode(x), disabled.encode(x)
    assert disabled.d_sae == N_DIR and (f_dis[:, mask] == 0).all()
    assert torch.equal(f_dis[:, ~mask], f_full[:, ~mask])
    removed = apply_prune_mask(sae, mask, remove=True)
    assert removed.d_sae == N_DIR - 2 and removed.W_enc.shape == (D_IN, N_DIR - 2)
    assert torch.allclose(removed.encode(x), f_full[:, ~mask])
    assert torch.allclose(removed(x), disabled(x), atol=1e-5)
    save_dictionary(removed, tmp_path / "removed")
    assert load_dictionary(tmp_path / "removed").d_sae == N_DIR - 2
    pruned, result = prune_dictionary(sae, x)
    save_prune_result(result, tmp_path)
    assert load_prune_result(tmp_path) == result and pruned.d_sae == N_DIR
