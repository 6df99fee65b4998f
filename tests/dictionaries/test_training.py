"""train_sae / train_saes on activation streams: shapes, history, sweeps, normalisation, validation."""

from __future__ import annotations

import math

import pytest
import torch

from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.architectures.gated import GatedSAE
from saescope.dictionaries.architectures.jumprelu import JumpReLUSAE
from saescope.dictionaries.architectures.standard import StandardSAE
from saescope.dictionaries.architectures.topk import TopKSAE
from saescope.dictionaries.training import SAETrainingConfig, geometric_median, lr_factor, train_sae, train_saes
from saescope.dictionaries.training_synthetic import PlantedDictionary
from saescope.errors import ConfigError, InputError

torch.set_num_threads(1)
PLANTED = PlantedDictionary.random(64, 16, p_active=0.05, seed=0, offset_norm=2.0)


def _batches(tokens: int = 20_000, batch: int = 1000, scale: float = 1.0):
    return (b * scale for b in PLANTED.batches(tokens, batch=batch, seed=4))


def _small(**kw) -> SAETrainingConfig:
    base = dict(d_sae=128, tokens=20_000, batch_size=256, seed=0, lr=3e-3, dead_tokens=5_000)
    base.update(kw)
    return SAETrainingConfig(**base)


def _fvu(d, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((d(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


@pytest.mark.parametrize(
    "architecture, cls",
    [("relu", StandardSAE), ("topk", TopKSAE), ("batchtopk", JumpReLUSAE), ("jumprelu", JumpReLUSAE), ("gated", GatedSAE)],
)
def test_train_sae_returns_a_unit_norm_dictionary_that_reconstructs(architecture: str, cls: type) -> None:
    meta = DictionaryMetadata(hook_name="blocks.0.mlp.hook_post", model_name="planted")
    result = train_sae(_small(architecture=architecture, k=4, l1=1.0 if architecture in ("relu", "gated") else None),
                       _batches(), meta, progress=False)
    d = result.dictionary
    assert isinstance(d, cls) and d.d_in == 16 and d.d_sae == 128
    assert d.metadata.hook_name == "blocks.0.mlp.hook_post"
    torch.testing.assert_close(d.W_dec.norm(dim=1), torch.ones(128), atol=1e-5, rtol=0)
    assert result.log10_density.shape == (128,)
    assert result.history and {"tokens", "loss", "mse", "fvu", "l0", "dead_fraction", "lr"} <= result.history[-1].keys()
    assert result.history[-1]["tokens"] == 20_000
    x = PLANTED.sample(2000, torch.Generator().manual_seed(9))
    assert _fvu(d, x) < 0.5
    assert d.hyperparameters()["trained_as"] == architecture


def test_topk_dictionary_uses_k_latents_per_token() -> None:
    result = train_sae(_small(architecture="topk", k=3), _batches(), progress=False)
    f = result.dictionary.encode(PLANTED.sample(500, torch.Generator().manual_seed(2)))
    assert int((f > 0).sum(1).max()) <= 3
    assert result.dictionary.hyperparameters()["k"] == 3


def test_a_sweep_trains_each_config_exactly_as_alone() -> None:
    configs = [_small(architecture="relu", l1=1.0), _small(architecture="topk", k=4, d_sae=64)]
    together = train_saes(configs, _batches(), progress=False)
    for cfg, res in zip(configs, together):
        alone = train_sae(cfg, _batches(), progress=False)
        for name, t in alone.dictionary.state_dict().items():
            assert torch.equal(t, res.dictionary.state_dict()[name]), name


def test_input_normalisation_is_folded_into_the_weights() -> None:
    x = PLANTED.sample(2000, torch.Generator().manual_seed(9))
    small = train_sae(_small(architecture="topk", k=4), _batches(), progress=False)
    big = train_sae(_small(architecture="topk", k=4), _batches(scale=1000.0), progress=False)
    assert big.normalization_scale == pytest.approx(small.normalization_scale / 1000.0, rel=1e-4)
    # the saved dictionary works in raw units: same quality at both scales
    assert _fvu(big.dictionary, 1000.0 * x) == pytest.approx(_fvu(small.dictionary, x), abs=0.02)
    with torch.no_grad():
        recon = big.dictionary(1000.0 * x)
    assert recon.norm(dim=1).mean() > 100.0


def test_stream_shorter_than_the_token_budget_stops_cleanly() -> None:
    result = train_sae(_small(tokens=50_000), _batches(tokens=8_000), progress=False)
    assert result.history[-1]["tokens"] == 8_000


def test_geometric_median_resists_outliers() -> None:
    pts = torch.cat([torch.zeros(99, 3), torch.full((1, 3), 1e6)])
    assert geometric_median(pts).norm() < 1.0
    assert pts.mean(0).norm() > 1e3


def test_lr_schedule_warms_up_holds_and_decays_to_zero() -> None:
    factors = [lr_factor(s, 100, 0.1, 0.2) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0
    assert factors[50] == 1.0 and factors[79] == 1.0
    assert factors[99] == pytest.approx(0.05) and all(a >= b for a, b in zip(factors[80:], factors[81:]))


def test_sparsity_coefficient_ramps_up() -> None:
    from saescope.dictionaries.training import SAETrainer

    t = SAETrainer(_small(l1=2.0, sparsity_warmup_fraction=0.5), 16, 1.0, None)
    assert t.sparsity_coefficient() == pytest.approx(2.0 / 40)  # 79 steps, 40 of warm-up
    t.step_index = 100
    assert t.sparsity_coefficient() == 2.0


def test_default_learning_rate_follows_dictionary_size() -> None:
    assert SAETrainingConfig(d_sae=4096).resolved_lr > SAETrainingConfig(d_sae=32768).resolved_lr
    assert math.isclose(SAETrainingConfig(d_sae=4096, lr=1e-3).resolved_lr, 1e-3)


def test_k_larger_than_d_sae_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="k=64 exceeds d_sae=32"):
        SAETrainingConfig(architecture="topk", d_sae=32, k=64)


@pytest.mark.parametrize(
    "batches, message",
    [
        ([torch.full((10, 4), float("nan"))], "NaN"),
        ([torch.zeros(2, 3, 4)], r"\[batch, d_in\]"),
        ([torch.ones(10, 4), torch.ones(10, 5)], "d_in=5"),
        ([], "empty"),
        ([torch.ones(10, 4, dtype=torch.int64)], "floating point"),
    ],
)
def test_bad_activation_batches_raise_input_errors(batches: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        train_sae(SAETrainingConfig(d_sae=8, tokens=100, batch_size=10), batches, progress=False)


def test_dead_latents_are_resampled_towards_badly_reconstructed_inputs() -> None:
    from saescope.dictionaries.training import SAETrainer

    cfg = _small(architecture="relu", l1=1.0, dead_tokens=512, resample_dead_every_tokens=1024, tokens=4096)
    trainer = SAETrainer(cfg, 16, 1.0, None)
    with torch.no_grad():
        trainer.params.b_enc[:64] = -1e4  # half the latents can never fire
    x = PLANTED.sample(256, torch.Generator().manual_seed(3))
    for _ in range(3):
        trainer.step(x)
    dead = trainer.tokens_since_fired >= cfg.dead_tokens
    assert int(dead[:64].sum()) == 64
    assert trainer.resample_dead(x) == int(dead.sum())
    assert float(trainer.params.b_enc.detach()[:64].abs().max()) == 0.0
    stats = trainer.step(x)
    assert int((stats.counts[:64] > 0).sum()) > 32, "resampled latents fire again"


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu", "gated"])
def test_the_autograd_step_trains_every_architecture(architecture: str) -> None:
    """accelerated=False takes each architecture's plain autograd loss; it trains as well."""
    cfg = _small(architecture=architecture, k=4, l1=1.0 if architecture in ("relu", "gated") else None, accelerated=False)
    result = train_sae(cfg, _batches(), progress=False)
    x = PLANTED.sample(2000, torch.Generator().manual_seed(9))
    assert _fvu(result.dictionary, x) < 0.5


def test_architecture_options_are_validated_by_the_architecture() -> None:
    assert _small(architecture="topk", architecture_options={"aux_k": 8}).options.aux_k == 8
    with pytest.raises(ConfigError, match="topk options"):
        _small(architecture="topk", architecture_options={"bandwidth": 0.1})
    with pytest.raises(ConfigError, match="unknown architecture 'matryoshka'"):
        _small(architecture="matryoshka")
