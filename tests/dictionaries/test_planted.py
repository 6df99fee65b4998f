"""Quality bar: SAEs recover the directions of a planted sparse dictionary.

512 random unit directions in R^64, each active on a token with probability 1% (about 5 active per
token) with exponential magnitudes. A planted direction counts as recovered when some learned
decoder row has cosine > 0.9 with it. The full-size check (4096 directions in R^512, 2M tokens)
is benchmarks/planted_recovery.py.
"""

from __future__ import annotations

import pytest
import torch

from saescope.dictionaries.training import SAETrainingConfig, train_sae
from saescope.dictionaries.training_synthetic import PlantedDictionary, max_cosines, recovery

PLANTED = PlantedDictionary.random(512, 64, p_active=0.01, seed=0)


def _train(**kw):
    torch.set_num_threads(1)
    config = SAETrainingConfig(d_sae=1024, tokens=300_000, batch_size=512, seed=0, **kw)
    return train_sae(config, PLANTED.batches(config.tokens, batch=4096, seed=1), progress=False)


@pytest.mark.slow
def test_relu_l1_with_default_settings_recovers_planted_directions() -> None:
    result = _train(architecture="relu")
    assert recovery(PLANTED.directions, result.dictionary.W_dec, 0.9) >= 0.9
    assert result.final["l0"] < 64  # sparse: true L0 is ~5


@pytest.mark.slow
def test_topk_recovers_planted_directions() -> None:
    result = _train(architecture="topk", k=8)
    cos = max_cosines(PLANTED.directions, result.dictionary.W_dec)
    assert float((cos > 0.9).float().mean()) >= 0.9
    x = PLANTED.sample(2048, torch.Generator().manual_seed(7))
    with torch.no_grad():
        fvu = (result.dictionary(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert fvu < 0.3
