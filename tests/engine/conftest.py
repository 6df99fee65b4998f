"""Fixtures for engine tests: a random StandardSAE on the tiny model's MLP hook, wrapped in an Engine."""

from __future__ import annotations

import pytest
import torch

HOOK = "blocks.0.mlp.hook_post"


@pytest.fixture(scope="module")
def tiny_sae(tiny_lm):
    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.dictionaries.architectures.standard import StandardSAE

    torch.manual_seed(0)
    d_in = int(tiny_lm.cfg.d_mlp)
    sae = StandardSAE(d_in, 64, metadata=DictionaryMetadata(hook_name=HOOK, context_size=int(tiny_lm.cfg.n_ctx)))
    with torch.no_grad():
        sae.W_enc.normal_(0, 1.0 / d_in**0.5)
        sae.W_dec.copy_(sae.W_enc.T / sae.W_enc.T.norm(dim=-1, keepdim=True))
        sae.b_enc.fill_(0.0)
    return sae


@pytest.fixture(scope="module")
def engine(tiny_lm, tiny_sae):
    from saescope.engine.engine import Engine

    eng = Engine(tiny_lm, model_id="tiny")
    eng.add_dictionary("sae", tiny_sae)
    return eng
