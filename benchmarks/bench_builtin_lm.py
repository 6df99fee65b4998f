"""Benchmark: the built-in language model's build (tokenizer, corpus packing, training steps).

Prints, all measured in this run:
- BPE training seconds on `--tokenizer-mb` MB of standard-library text, and tokenisation rate;
- tokens/s of one training step (forward + backward + AdamW, the loop `build_builtin_lm` runs) of
  the default architecture (1 layer, d_model 128, d_mlp 512, n_ctx 128, vocab 4096, batch 32x128),
  against the forward-only tokens/s measured in the same run (the ratio is the figure to quote), and
  the projected training time of the default `train_tokens`;
- with `--full`: one complete default `build_builtin_lm` into a temporary folder (about 4-6 minutes
  on 2 free cores), its seconds and held-out loss vs the unigram baseline.

    nice .venv/bin/python benchmarks/bench_builtin_lm.py --threads 2 [--full]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokenizer-mb", type=float, default=8.0)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--full", action="store_true", help="also run one full default build")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from saescope.corpus.packing import pack_documents
    from saescope.corpus.stdlib import stdlib_documents
    from saescope.lm.builtin import BuiltinLMConfig, build_builtin_lm, hooked_transformer_kwargs
    from saescope.lm.tokenizer import train_bpe_tokenizer

    config = BuiltinLMConfig()
    docs = stdlib_documents("train")
    texts, total = [], 0
    for d in docs:
        if total >= args.tokenizer_mb * 1e6:
            break
        texts.append(d.text)
        total += len(d.text)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        tokenizer = train_bpe_tokenizer(texts, config.d_vocab, Path(tmp) / "tok")
        t_tok = time.perf_counter() - t
        t = time.perf_counter()
        packed = pack_documents(docs[:400], tokenizer, config.n_ctx)
        t_pack = time.perf_counter() - t
        n_chars = sum(len(d.text) for d in docs[:400])
        print(f"threads {args.threads}")
        print(f"BPE training: {total / 1e6:.1f} MB in {t_tok:.2f} s")
        print(f"tokenise+pack: {n_chars / t_pack / 1e6:.2f} MB/s ({len(packed)} contexts of {config.n_ctx})")

        cfg = HookedTransformerConfig(**hooked_transformer_kwargs(config, len(tokenizer)), device="cpu")
        torch.manual_seed(0)
        model = HookedTransformer(cfg, tokenizer=tokenizer)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batch = torch.from_numpy(packed.tokens[: config.batch_size])
        n_tok = batch.numel()

        def step() -> None:
            loss = model(batch, return_type="loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

        def forward() -> None:
            with torch.no_grad():
                model(batch, return_type="loss")

        for fn in (step, forward):
            fn()  # warm-up
        step_times, fwd_times = [], []
        for _ in range(args.steps):
            t = time.perf_counter(); step(); step_times.append(time.perf_counter() - t)
            t = time.perf_counter(); forward(); fwd_times.append(time.perf_counter() - t)
        step_rate = n_tok / statistics.median(step_times)
        fwd_rate = n_tok / statistics.median(fwd_times)
        print(f"training step: {step_rate:,.0f} tokens/s (median of {args.steps})")
        print(f"forward only:  {fwd_rate:,.0f} tokens/s  -> step/forward ratio {step_rate / fwd_rate:.2f}")
        print(f"projected training time of the default {config.train_tokens:,} tokens: "
              f"{config.train_tokens / step_rate:.0f} s")

        if args.full:
            t = time.perf_counter()
            report = build_builtin_lm(config, Path(tmp) / "model", progress=False)
            print(f"full default build: {time.perf_counter() - t:.0f} s wall")
            print(report.summary())
            print(f"  tokenizer {report.seconds_tokenizer:.1f} s, data {report.seconds_data:.1f} s, "
                  f"training {report.seconds_training:.1f} s "
                  f"({report.train_tokens / report.seconds_training:,.0f} tokens/s)")


if __name__ == "__main__":
    main()
