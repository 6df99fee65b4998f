"""Benchmark: activation streaming, the on-disk activation cache, and dictionary evaluation.

Model: a random HookedTransformer with `--layers` layers (d_model 128, d_mlp 512, 4 heads, n_ctx 128,
vocab 4096); hook `blocks.{L}.mlp.hook_post` with L = layers - 2 (a hook in the middle, so the
saving of running only the blocks that are needed shows). Tokens: random ids.

Prints, all measured in this run (ratios are the figures to quote):
- streaming tokens/s: `iter_activation_batches` (hook + stop_at_layer) vs `run_with_cache` of the
  whole model with a names filter (the common way), and the ratio;
- cache: seconds to build, rows/s of ordered and shuffled `ChunkedBatches` reads, vs re-streaming;
- evaluation: tokens/s of `evaluate_dictionary` vs a naive implementation that runs four full
  forwards per batch (clean, spliced, zero, mean), and the ratio.

    .venv/bin/python benchmarks/bench_activations_eval.py --contexts 256
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, repeats: int = 3) -> float:
    """Median wall seconds of `fn()` over `repeats` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--contexts", type=int, default=128)
    parser.add_argument("--d-sae", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from saescope.activations.batches import ChunkedBatches, IterableChunks
    from saescope.activations.cache import ActivationCache
    from saescope.activations.stream import iter_activation_batches
    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.dictionaries.evaluation import _loss_per_context, evaluate_dictionary
    from saescope.dictionaries.architectures.standard import StandardSAE

    cfg = HookedTransformerConfig(
        n_layers=args.layers, d_model=128, d_head=32, n_heads=4, d_mlp=512, d_vocab=4096, n_ctx=128,
        act_fn="gelu", seed=0, device="cpu",
    )
    model = HookedTransformer(cfg).eval()
    layer = max(args.layers - 2, 0)
    hook = f"blocks.{layer}.mlp.hook_post"
    tokens = np.random.default_rng(0).integers(1, 4096, size=(args.contexts, 128))
    tokens[:, 0] = 0
    n_tokens = tokens.size
    print(f"model: {args.layers} layers, hook {hook}, {args.contexts} contexts x 128 = {n_tokens} tokens, "
          f"{args.threads} threads")

    # --- streaming --------------------------------------------------------------------------
    def ours() -> None:
        for _ in iter_activation_batches(model, tokens, hook, contexts_per_batch=32):
            pass

    def full_cache() -> None:
        t = torch.as_tensor(tokens)
        with torch.no_grad():
            for i in range(0, t.shape[0], 32):
                _, cache = model.run_with_cache(t[i : i + 32], names_filter=hook)
                cache[hook][:, 1:].reshape(-1, 512)

    t_ours = timed(ours, args.repeats)
    t_full = timed(full_cache, args.repeats)
    print(f"streaming: iter_activation_batches {n_tokens / t_ours:,.0f} tok/s; run_with_cache (full model) "
          f"{n_tokens / t_full:,.0f} tok/s; ratio {t_full / t_ours:.2f}x")

    # --- cache --------------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = ActivationCache.build(model, tokens, hook, Path(tmp) / "cache", shard_tokens=1 << 15, reuse=False)
        t_build = time.perf_counter() - t0

        def read_ordered() -> None:
            for _ in ChunkedBatches(cache, 4096):
                pass

        def read_shuffled() -> None:
            shards = (cache.chunk(i) for i in range(cache.n_chunks))
            for _ in ChunkedBatches(IterableChunks(shards, 1 << 16, seed=0), 4096):
                pass

        t_ord = timed(read_ordered, args.repeats)
        t_shuf = timed(read_shuffled, args.repeats)
        rows = cache.n_tokens
        print(f"cache: build {t_build:.2f} s ({rows:,} rows, {len(cache.manifest.shards)} shards); read ordered "
              f"{rows / t_ord:,.0f} rows/s, shuffled {rows / t_shuf:,.0f} rows/s; ordered read vs re-streaming "
              f"{t_ours / t_ord:.1f}x faster")

    # --- evaluation ---------------------------------------------------------------------------
    g = torch.Generator().manual_seed(0)
    sae = StandardSAE(512, args.d_sae, DictionaryMetadata(hook_name=hook))
    sae.reset_parameters(g)
    with torch.no_grad():
        sae.b_enc.fill_(-0.05)
    eval_tokens = tokens[: max(args.contexts // 2, 1)]

    def ours_eval() -> None:
        evaluate_dictionary(model, sae, eval_tokens, batch_size=32)

    def naive_eval() -> None:
        t = torch.as_tensor(eval_tokens)
        mean = torch.zeros(512)
        with torch.no_grad():
            for i in range(0, t.shape[0], 32):
                b = t[i : i + 32]

                def splice(act, hook):
                    out = act.clone()
                    out[:, 1:] = sae(act[:, 1:])
                    return out

                def zero(act, hook):
                    out = act.clone()
                    out[:, 1:] = 0
                    return out

                def mean_abl(act, hook):
                    out = act.clone()
                    out[:, 1:] = mean
                    return out

                for fn in (None, splice, zero, mean_abl):
                    hooks = [] if fn is None else [(hook, fn)]
                    logits = model.run_with_hooks(b, fwd_hooks=hooks)
                    _loss_per_context(logits, b)

    t_eval = timed(ours_eval, max(args.repeats - 1, 1))
    t_naive = timed(naive_eval, max(args.repeats - 1, 1))
    n_eval = eval_tokens.size
    print(f"evaluation (d_sae {args.d_sae}): evaluate_dictionary {n_eval / t_eval:,.0f} tok/s (all metrics); "
          f"naive 4 full forwards {n_eval / t_naive:,.0f} tok/s (losses only); ratio {t_naive / t_eval:.2f}x")


if __name__ == "__main__":
    main()
