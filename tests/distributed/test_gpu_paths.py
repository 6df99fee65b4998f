"""The CUDA paths: SAE training, precompute in bf16 with fp32 statistics, the live engine.

Marked `gpu`: skipped on a machine without CUDA (tests/distributed/conftest.py); run them with
`pytest -m gpu tests/distributed` where a GPU is present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saescope.analysis.config import PrecomputeConfig
from saescope.analysis.precompute import run_precompute
from saescope.dictionaries.training import SAETrainingConfig
from saescope.dictionaries.training_file import train_sae_from_file

pytestmark = pytest.mark.gpu
HOOK = "blocks.0.mlp.hook_post"


def _config(architecture: str, device: str) -> SAETrainingConfig:
    return SAETrainingConfig(architecture=architecture, d_sae=64, k=4, tokens=128 * 30, batch_size=128, seed=3,
                             dead_tokens=1000, shuffle_buffer_tokens=512, device=device)


@pytest.mark.parametrize("architecture", ["relu", "topk", "batchtopk", "jumprelu"])
def test_sae_training_on_cuda_follows_the_cpu_run(tmp_path: Path, activation_matrix: Path, architecture: str) -> None:
    cpu = train_sae_from_file(activation_matrix, _config(architecture, "cpu"), tmp_path / "cpu", progress=False)
    gpu = train_sae_from_file(activation_matrix, _config(architecture, "cuda"), tmp_path / "gpu", progress=False)
    assert next(gpu.dictionary.parameters()).device.type == "cuda"
    w_cpu, w_gpu = load_file(str(tmp_path / "cpu" / "sae_weights.safetensors")), load_file(
        str(tmp_path / "gpu" / "sae_weights.safetensors"))
    for name in w_cpu:
        assert torch.isfinite(w_gpu[name]).all(), name
    # TF32 and other reduction orders: the runs drift apart slowly, the fit stays the same
    assert abs(gpu.final["fvu"] - cpu.final["fvu"]) < 0.05
    assert abs(gpu.final["l0"] - cpu.final["l0"]) < 0.25 * max(cpu.final["l0"], 1.0)


def _sae(tiny_lm):
    from saescope.dictionaries.architectures.standard import StandardSAE
    from saescope.dictionaries.base import DictionaryMetadata

    d_in = int(tiny_lm.cfg.d_mlp)
    sae = StandardSAE(d_in, 64, DictionaryMetadata(hook_name=HOOK, context_size=int(tiny_lm.cfg.n_ctx)))
    sae.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.fill_(-0.5)
    return sae


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_precompute_on_cuda_matches_the_cpu_statistics(tiny_lm_dir: Path, precision: str) -> None:
    from saescope.lm.loading import load_lm

    rng = np.random.default_rng(0)
    cpu_model = load_lm(tiny_lm_dir, device="cpu")
    tokens = rng.integers(1, int(cpu_model.cfg.d_vocab), size=(64, 32))
    tokens[:, 0] = 0
    doc_ids = [str(i) for i in range(64)]
    sae = _sae(cpu_model)
    base = PrecomputeConfig(progress=False, umap=False)
    cpu = run_precompute(cpu_model, [("s", sae)], tokens, doc_ids, base.model_copy(update={"device": "cpu"}))
    gpu_model = load_lm(tiny_lm_dir, device="cuda")
    gpu = run_precompute(gpu_model, [("s", _sae(cpu_model))], tokens, doc_ids,
                         base.model_copy(update={"device": "cuda", "precision": precision}))
    a, b = cpu.analyses[0].stats, gpu.analyses[0].stats
    tol = 1e-3 if precision == "fp32" else 5e-2
    np.testing.assert_allclose(b.density.numpy(), a.density.numpy(), atol=tol)
    np.testing.assert_allclose(b.max_activation.numpy(), a.max_activation.numpy(), rtol=tol, atol=tol)
    assert b.max_activation.dtype == torch.float32 and b.mean_activation.dtype == torch.float64
    agree = (a.top.ctx[:, 0] == b.top.ctx[:, 0]).float().mean()
    assert agree > (0.99 if precision == "fp32" else 0.8)


def test_the_engine_on_cuda_gives_the_cpu_top_features(tiny_lm_dir: Path, tiny_lm) -> None:
    from saescope.engine.engine import Engine

    cpu = Engine(tiny_lm, model_id="tiny")
    cpu.add_dictionary("s", _sae(tiny_lm))
    gpu = Engine.load(tiny_lm_dir, device="cuda", model_id="tiny")
    gpu.add_dictionary("s", _sae(tiny_lm))
    tokens = cpu.tokenize("def add(a, b):\n    return a + b\n")
    on_cpu = cpu.feature_activations(tokens, ["s"])["s"]
    on_gpu = gpu.feature_activations(tokens, ["s"])["s"]
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-3)


def test_a_sweep_trains_its_saes_on_different_gpus(tmp_path: Path, activation_matrix: Path) -> None:
    from saescope.dictionaries.training_file import train_saes_from_file

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    configs = [_config("topk", "cuda:0"), _config("relu", "cuda:1")]
    results = train_saes_from_file(activation_matrix, configs, [tmp_path / "a", tmp_path / "b"], progress=False)
    assert [next(r.dictionary.parameters()).device.index for r in results] == [0, 1]
    assert all(r.final["fvu"] < 1.0 for r in results)
