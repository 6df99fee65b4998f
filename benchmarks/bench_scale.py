"""Benchmark: SAE training and precompute throughput on 1 and N processes (torch.distributed, gloo),
and on a CUDA device the "moonshot" shape, with the projected time for 1B tokens.

CPU part (always), every figure measured in this run, both process counts started the same way
(spawned ranks; one process uses every core, N processes share them evenly):
  * SAE training tokens/s: TopK (k 32) SAE, d_in 256, d_sae 2048, batch 2048, from a random activation
    matrix, timed between the first and the last optimiser step on rank 0 (initialisation excluded);
  * precompute feature-tokens/s: a random-weight 1-layer model shaped like the built-in one
    (d_model 128, d_mlp 512), a ReLU SAE of 1024 features on blocks.0.mlp.hook_post firing on ~1% of
    tokens, `run_precompute` over 192 random token contexts of 128 tokens (stream, rank merge, example
    gather), timed on rank 0 from a barrier after set-up to its return;
  * a third candidate, one process on one thread (each of the N ranks also runs one thread on a
    2-core machine), so the ratios separate "more processes" from "fewer threads per process";
  * the ratio N processes / 1 process, and hours for 1B tokens at each rate.
CUDA part (only when a GPU is present): the OpenMOSS GPT-2-small setup, 24 TopK SAEs of 24,576 features
(one per attention and MLP output of a 12-layer d_model 768 model, random weights): LM forward
tokens/s (bf16 autocast, the 24 hooks captured), one SAE's training tokens/s (fp32, batch 4096) and one
SAE's precompute feature-tokens/s (bf16 encode, fp32 statistics), and the projected hours for 1B
tokens through all 24 (training: forward + 24 SAE steps; precompute: forward + 24 encodes + statistics).

    .venv/bin/python benchmarks/bench_scale.py [--nproc 2] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BILLION = 1_000_000_000


# ------------------------------------------------------------------------------------------- ranks


def _train_rank(data: str, config_json: str, out: str, result: str, threads: int | None) -> None:
    from saescope.dictionaries.training import SAETrainingConfig
    from saescope.dictionaries.training_file import train_sae_from_file
    from saescope.ranks import current_ranks

    if threads is not None:
        torch.set_num_threads(threads)
    ranks = current_ranks()
    config = SAETrainingConfig.model_validate_json(config_json)
    times: list[float] = []
    train_sae_from_file(data, config, out, checkpoint_every=None, progress=False,
                        callback=lambda step: times.append(time.perf_counter()))
    if ranks.is_main:
        steps = len(times) - 1
        Path(result).write_text(json.dumps({"seconds": times[-1] - times[0], "tokens": steps * config.batch_size}))


def _precompute_model(seed: int = 0):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=1, d_model=128, d_mlp=512, n_heads=4, d_head=32, n_ctx=128,
                                  d_vocab=4096, act_fn="gelu", normalization_type="LN", seed=seed, device="cpu")
    return HookedTransformer(cfg).eval()


def _precompute_sae(model, tokens: np.ndarray, d_sae: int, hook: str, density: float = 0.01):
    from saescope.activations.stream import hook_activations
    from saescope.dictionaries.architectures.standard import StandardSAE
    from saescope.dictionaries.base import DictionaryMetadata

    sae = StandardSAE(512, d_sae, DictionaryMetadata(model_name="bench", hook_name=hook, context_size=128))
    sae.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = hook_activations(model, torch.as_tensor(tokens[:16]), hook)[:, 1:].reshape(-1, 512)
        sae.b_enc.copy_(-torch.quantile(sae.pre_activations(x), 1.0 - density, dim=0))
    return sae


def _precompute_rank(n_contexts: int, d_sae: int, result: str, threads: int | None) -> None:
    from saescope.analysis.config import PrecomputeConfig
    from saescope.analysis.precompute import run_precompute
    from saescope.ranks import current_ranks

    if threads is not None:
        torch.set_num_threads(threads)
    ranks = current_ranks()
    hook = "blocks.0.mlp.hook_post"
    model = _precompute_model()
    tokens = np.random.default_rng(0).integers(1, 4096, size=(n_contexts, 128))
    tokens[:, 0] = 0
    sae = _precompute_sae(model, tokens, d_sae, hook)
    config = PrecomputeConfig(device="cpu", progress=False, umap=False, bookkeeping_threads=0)
    ranks.barrier()
    t0 = time.perf_counter()
    out = run_precompute(model, [("sae", sae)], tokens, [str(i) for i in range(n_contexts)], config=config)
    if ranks.is_main:
        assert out is not None
        Path(result).write_text(json.dumps({"seconds": time.perf_counter() - t0,
                                            "feature_tokens": out.n_tokens * d_sae}))


# ------------------------------------------------------------------------------------------- CPU


def cpu_training(nproc: int, tmp: Path, steps: int, threads: int | None = None) -> float:
    """Training tokens/s on `nproc` ranks (each with `threads` torch threads; default: the cores shared)."""
    from saescope.dictionaries.training import SAETrainingConfig
    from saescope.ranks import run_on_ranks

    d_in, batch = 256, 2048
    data = tmp / "acts.npy"
    if not data.exists():
        g = np.random.default_rng(0)
        np.save(data, (g.standard_normal((batch * 8, d_in)) * g.exponential(1.0, (batch * 8, 1))).astype(np.float32))
    config = SAETrainingConfig(architecture="topk", d_sae=2048, k=32, tokens=batch * steps, batch_size=batch,
                               init_tokens=batch, b_dec_init="mean", shuffle_buffer_tokens=batch * 4)
    result = tmp / f"train-{nproc}.json"
    run_on_ranks(nproc, _train_rank, str(data), config.model_dump_json(), str(tmp / f"sae-{nproc}"), str(result),
                 threads)
    figures = json.loads(result.read_text())
    return figures["tokens"] / figures["seconds"]


def cpu_precompute(nproc: int, tmp: Path, n_contexts: int, d_sae: int, threads: int | None = None) -> float:
    """Precompute feature-tokens/s on `nproc` ranks (each with `threads` torch threads)."""
    from saescope.ranks import run_on_ranks

    result = tmp / f"precompute-{nproc}.json"
    run_on_ranks(nproc, _precompute_rank, n_contexts, d_sae, str(result), threads)
    figures = json.loads(result.read_text())
    return figures["feature_tokens"] / figures["seconds"]


# ------------------------------------------------------------------------------------------- CUDA


def _cuda_time(fn, repeats: int) -> float:
    """Seconds per call of `fn` on the GPU (after two warm-up calls)."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def moonshot(repeats: int) -> dict[str, float]:
    """GPT-2-small shape, 24 hook points, SAEs of 24,576 features: the rates and 1B-token projections."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from saescope.analysis.precompute import multi_hook_activations
    from saescope.analysis.streaming import FeatureStream
    from saescope.dictionaries.architectures.topk import TopKSAE
    from saescope.dictionaries.training import SAETrainer, SAETrainingConfig

    dev = torch.device("cuda")
    d_model, d_sae, n_ctx, contexts = 768, 24_576, 128, 64
    cfg = HookedTransformerConfig(n_layers=12, d_model=d_model, d_mlp=4 * d_model, n_heads=12, d_head=64, n_ctx=1024,
                                  d_vocab=50_257, act_fn="gelu_new", normalization_type="LN", seed=0, device="cuda")
    model = HookedTransformer(cfg).eval()
    hooks = [f"blocks.{layer}.{name}" for layer in range(12) for name in ("hook_attn_out", "hook_mlp_out")]
    tokens = torch.randint(0, 50_257, (contexts, n_ctx), device=dev)

    def forward() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            multi_hook_activations(model, tokens, hooks)

    lm_rate = contexts * n_ctx / _cuda_time(forward, repeats)

    batch = 4096
    trainer = SAETrainer(SAETrainingConfig(architecture="topk", d_sae=d_sae, k=32, tokens=BILLION, batch_size=batch,
                                           lr_warmup_fraction=0.0, device="cuda"), d_model, 1.0, None)
    x = torch.randn(batch, d_model, device=dev)
    train_rate = batch / _cuda_time(lambda: trainer.step(x), repeats)
    del trainer

    sae = TopKSAE(d_model, d_sae, 32).to(dev)
    stream = FeatureStream(d_sae, device=dev)
    acts = torch.randn(contexts // 4, n_ctx, d_model, device=dev)
    ctx_ids = torch.arange(contexts // 4, device=dev)
    keys = torch.rand(contexts // 4, dtype=torch.float64, device=dev)

    def encode_and_fold() -> None:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            f = sae.encode(acts)
        stream.update(f.float(), ctx_ids, ctx_ids, keys)

    per_sae_tokens = (contexts // 4) * n_ctx / _cuda_time(encode_and_fold, repeats)
    n_sae = len(hooks)
    train_s = BILLION * (1 / lm_rate + n_sae / train_rate)
    precompute_s = BILLION * (1 / lm_rate + n_sae / per_sae_tokens)
    return {
        "device": torch.cuda.get_device_name(0),
        "lm_forward_tokens_per_s": lm_rate,
        "sae_train_tokens_per_s": train_rate,
        "sae_precompute_feature_tokens_per_s": per_sae_tokens * d_sae,
        "train_1b_tokens_24_saes_hours": train_s / 3600,
        "precompute_1b_tokens_24_saes_hours": precompute_s / 3600,
    }


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nproc", type=int, default=2, help="processes to compare with one (default 2)")
    ap.add_argument("--quick", action="store_true", help="fewer steps and contexts (a smoke run)")
    ap.add_argument("--no-cpu", action="store_true", help="only the CUDA part")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of 1 and N processes (medians)")
    args = ap.parse_args(argv)
    steps = 6 if args.quick else 24
    n_contexts, d_sae = (64, 512) if args.quick else (192, 1024)
    print(f"cores: {os.cpu_count()}, torch {torch.__version__}, CUDA: {torch.cuda.is_available()}")
    if not args.no_cpu:
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            for label, measure in (
                ("SAE training tokens/s", lambda n, t=None: cpu_training(n, Path(tmp), steps, t)),
                ("precompute feature-tokens/s", lambda n, t=None: cpu_precompute(n, Path(tmp), n_contexts, d_sae, t)),
            ):
                # alternate the candidates round by round: a change in machine load hits all alike
                ones, singles, manys = [], [], []
                for _ in range(args.rounds):
                    ones.append(measure(1))
                    singles.append(measure(1, 1))
                    manys.append(measure(args.nproc))
                rows.append((label, *(statistics.median(x) for x in (ones, singles, manys))))
            print(f"{'CPU (gloo)':<30}{'1 proc, all':>13}{'1 proc, 1 thr':>15}{f'{args.nproc} procs':>11}"
                  f"{'N / 1 all':>11}{'N / 1 thr':>11}{'1B tokens, h (1 all / N)':>27}")
            for label, one, single, many in rows:
                per_token = d_sae if "feature" in label else 1
                hours = f"{BILLION * per_token / one / 3600:,.0f} / {BILLION * per_token / many / 3600:,.0f}"
                print(f"{label:<30}{one:>13,.0f}{single:>15,.0f}{many:>11,.0f}{many / one:>11.2f}"
                      f"{many / single:>11.2f}{hours:>27}")
    if torch.cuda.is_available():
        figures = moonshot(repeats=3 if args.quick else 10)
        print(json.dumps(figures, indent=1))
    else:
        print("no CUDA device: the moonshot shape (24 SAEs x 24,576 features, GPT-2 small) was not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
