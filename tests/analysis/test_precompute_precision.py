"""The precompute's reduced precision: bf16 forwards and encodes, statistics still accumulated in fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saescope.analysis.config import PrecomputeConfig
from saescope.analysis.precompute import run_precompute
from saescope.errors import ConfigError

HOOK = "blocks.0.mlp.hook_post"


def _sae(model):
    from saescope.dictionaries.architectures.standard import StandardSAE
    from saescope.dictionaries.base import DictionaryMetadata

    sae = StandardSAE(int(model.cfg.d_mlp), 64, DictionaryMetadata(hook_name=HOOK, context_size=int(model.cfg.n_ctx)))
    sae.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.fill_(-0.5)
    return sae


def _tokens(model, n: int = 48, n_ctx: int = 24) -> np.ndarray:
    tokens = np.random.default_rng(0).integers(1, int(model.cfg.d_vocab), size=(n, n_ctx))
    tokens[:, 0] = 0
    return tokens


def test_bf16_precompute_on_cpu_keeps_fp32_statistics_close_to_the_fp32_run(tiny_lm) -> None:
    tokens = _tokens(tiny_lm)
    doc_ids = [str(i) for i in range(len(tokens))]
    config = PrecomputeConfig(device="cpu", progress=False, umap=False)
    full = run_precompute(tiny_lm, [("s", _sae(tiny_lm))], tokens, doc_ids, config)
    half = run_precompute(tiny_lm, [("s", _sae(tiny_lm))], tokens, doc_ids, config.model_copy(update={"precision": "bf16"}))
    a, b = full.analyses[0], half.analyses[0]
    assert b.stats.max_activation.dtype == torch.float32 and b.stats.mean_activation.dtype == torch.float64
    assert b.examples.activations.dtype == np.float32
    np.testing.assert_allclose(b.stats.density.numpy(), a.stats.density.numpy(), atol=0.05)
    np.testing.assert_allclose(b.stats.max_activation.numpy(), a.stats.max_activation.numpy(), rtol=0.05, atol=0.05)
    assert (a.stats.top.ctx[:, 0] == b.stats.top.ctx[:, 0]).float().mean() > 0.8


def test_fp16_on_cpu_is_refused_before_any_work(tiny_lm) -> None:
    tokens = _tokens(tiny_lm, n=4)
    config = PrecomputeConfig(device="cpu", progress=False, umap=False, precision="fp16")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        run_precompute(tiny_lm, [("s", _sae(tiny_lm))], tokens, [str(i) for i in range(4)], config)
