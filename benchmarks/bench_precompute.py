"""Benchmark: saescope's streaming precompute vs SAEDashboard's SaeVisRunner, same SAE, same tokens.

Model: a 1-layer HookedTransformer shaped like the built-in model (d_model 128, d_mlp 512, 4 heads,
n_ctx 128, vocab 4096) with random weights (same compute as the trained one; training it takes
minutes). SAE: 4096 features on `blocks.0.mlp.hook_post`, random unit decoder, encoder tied to it, and
per-feature encoder biases set so each feature fires on about `--density` of tokens (like a trained
SAE; a random SAE with zero bias fires on half of all tokens, which no trained SAE does).
Tokens: random ids (compute does not depend on them).

Prints: tokens/s and feature-tokens/s of the whole `precompute_and_publish` (stream, examples, logit
effects, neighbours, labels, SQLite writes; UMAP timed separately, off by default), seconds per 1k
features, peak RSS, and the share of time in model forward vs SAE encode vs bookkeeping vs store.
Then runs SaeVisRunner on `--dash-features` features over `--dash-tokens` tokens (the same SAE and
token prefix) and prints its feature-tokens/s and the ratio.

    .venv/bin/python benchmarks/bench_precompute.py --tokens 1000000

On a busy shared machine, `--threads 1` gives steadier figures for both tools: with 2 threads, OpenMP
threads contend with other processes and small ops (transformer_lens forward, sae-dashboard's
per-feature work) slow down many times over.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class Packed:
    tokens: np.ndarray
    doc_ids: list[str]
    offsets: np.ndarray


def build_model(seed: int = 0):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=1, d_model=128, d_mlp=512, n_heads=4, d_head=32, n_ctx=128,
                                  d_vocab=4096, act_fn="gelu", normalization_type="LN", seed=seed, device="cpu")
    return HookedTransformer(cfg).eval()


def build_sae(model, tokens: np.ndarray, d_sae: int, density: float, hook: str, seed: int = 0):
    from saescope.activations.stream import hook_activations
    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.dictionaries.architectures.standard import StandardSAE

    sae = StandardSAE(512, d_sae, DictionaryMetadata(model_name="bench-1l", hook_name=hook, context_size=128))
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        x = hook_activations(model, torch.as_tensor(tokens[:16]), hook)[:, 1:].reshape(-1, 512)
        pre = sae.pre_activations(x)  # [tokens, d_sae]
        sae.b_enc.copy_(-torch.quantile(pre, 1.0 - density, dim=0))
    return sae


def run_saescope(model, sae, packed: Packed, args) -> dict:
    from saescope.analysis.config import PrecomputeConfig
    from saescope.pipeline.publish import DictionaryEntry, ModelRecord, precompute_and_publish

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/atlas.db"
        cfg = PrecomputeConfig(contexts_per_batch=args.batch, device="cpu", umap=args.umap, progress=not args.quiet)
        t0, c0 = time.perf_counter(), time.process_time()
        report = precompute_and_publish(url, model, ModelRecord(id="bench-1l"), [DictionaryEntry("sae", sae)],
                                        packed, cfg, work_dir=Path(tmp) / "work")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        db_mib = Path(f"{tmp}/atlas.db").stat().st_size / 2**20
    return {"wall": wall, "cpu": cpu, "report": report, "db_mib": db_mib}


def run_sae_dashboard(model, sae, tokens: np.ndarray, n_features: int, args) -> dict:
    try:
        from sae_dashboard.sae_vis_data import SaeVisConfig
        from sae_dashboard.sae_vis_runner import SaeVisRunner
        from sae_lens import SAE, HookedSAETransformer
    except Exception as exc:  # noqa: BLE001 - report any import failure
        return {"error": f"sae-dashboard could not be imported: {type(exc).__name__}: {exc}"}
    from saescope.dictionaries.saelens_format import save_dictionary

    with tempfile.TemporaryDirectory() as tmp:
        save_dictionary(sae, Path(tmp) / "sae")
        sl_sae = SAE.load_from_disk(str(Path(tmp) / "sae"), device="cpu")
    hooked = HookedSAETransformer(model.cfg)
    hooked.load_state_dict(model.state_dict(), strict=False)
    hooked.eval()
    cfg = SaeVisConfig(hook_point=sae.metadata.hook_name, features=list(range(n_features)),
                       minibatch_size_features=min(256, n_features), minibatch_size_tokens=64, device="cpu",
                       verbose=False)
    t0, c0 = time.perf_counter(), time.process_time()
    SaeVisRunner(cfg).run(encoder=sl_sae, model=hooked, tokens=torch.as_tensor(tokens))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": wall, "cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=1_000_000, help="corpus tokens for saescope (n_ctx 128)")
    ap.add_argument("--features", type=int, default=4096, help="SAE features")
    ap.add_argument("--density", type=float, default=0.01, help="firing density per feature")
    ap.add_argument("--batch", type=int, default=32, help="contexts per batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--umap", action="store_true", help="include UMAP in the saescope run")
    ap.add_argument("--dash-features", type=int, default=256, help="features SaeVisRunner processes")
    ap.add_argument("--dash-tokens", type=int, default=65_536, help="tokens SaeVisRunner processes")
    ap.add_argument("--skip-dashboard", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    hook = "blocks.0.mlp.hook_post"
    n_ctx = 128
    n = max(1, args.tokens // n_ctx)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 4096, size=(n, n_ctx)).astype(np.int64)
    tokens[:, 0] = 0  # BOS
    packed = Packed(tokens, [f"doc{i // 8}" for i in range(n)], (np.arange(n) % 8) * (n_ctx - 1))
    model = build_model()
    sae = build_sae(model, tokens, args.features, args.density, hook)
    rss0 = rss_mib()
    res = run_saescope(model, sae, packed, args)
    rss1 = rss_mib()
    rep = res["report"]
    t = rep.timings
    fwd = t["forward"] + t["gather_forward"]
    enc = t["encode"] + t["gather_encode"]
    book = t["bookkeeping"] + t["gather_bookkeeping"] + t["checkpoint"] + t["analysis"]
    store = t["store"]
    total = res["wall"]
    other = max(0.0, total - fwd - enc - book - store)
    n_tok = n * n_ctx
    ft = n_tok * args.features
    print(f"saescope precompute_and_publish: {n} contexts x {n_ctx} = {n_tok:,} tokens, {args.features} features, "
          f"density {args.density}")
    print(f"  wall {total:.1f} s | {n_tok / total:,.0f} tokens/s | {ft / total / 1e6:,.1f}M feature-tokens/s | "
          f"{total / args.features * 1000:.2f} s per 1k features")
    print(f"  CPU time {res['cpu']:.1f} s ({ft / res['cpu'] / 1e6:,.1f}M feature-tokens per CPU-second; the machine "
          f"is shared, so CPU time is the steadier figure)")
    print(f"  peak RSS {rss1:.0f} MiB (before precompute {rss0:.0f} MiB); store {res['db_mib']:.0f} MiB, "
          f"{rep.n_examples:,} examples")
    for name, v in (("model forward", fwd), ("SAE encode", enc), ("bookkeeping (stream+gather+analysis)", book),
                    ("store writes", store), ("other", other)):
        print(f"  {name:38s} {v:8.1f} s  {100 * v / total:5.1f}%")
    print(f"    of which: stream forward {t['forward']:.1f}, gather forward {t['gather_forward']:.1f}, stream encode "
          f"{t['encode']:.1f}, gather encode {t['gather_encode']:.1f}, stream bookkeeping {t['bookkeeping']:.1f}, "
          f"analysis {t['analysis']:.1f}")
    bar1 = book + store < fwd + enc
    print(f"  bar: bookkeeping + store ({book + store:.1f} s) < forward + encode ({fwd + enc:.1f} s): "
          f"{'PASS' if bar1 else 'FAIL'}")
    if args.skip_dashboard:
        return 0
    gc.collect()
    nd = max(1, min(n, args.dash_tokens // n_ctx))
    dres = run_sae_dashboard(model, sae, tokens[:nd], args.dash_features, args)
    if "error" in dres:
        print(f"sae-dashboard: {dres['error']}")
        return 0
    dft = nd * n_ctx * args.dash_features / dres["wall"]
    print(f"sae-dashboard SaeVisRunner: {args.dash_features} features x {nd * n_ctx:,} tokens in {dres['wall']:.1f} s "
          f"= {dft / 1e6:.2f}M feature-tokens/s (HTML not saved)")
    dft_cpu = nd * n_ctx * args.dash_features / dres["cpu"]
    print(f"  CPU time {dres['cpu']:.1f} s = {dft_cpu / 1e6:.2f}M feature-tokens per CPU-second")
    ratio = (ft / total) / dft
    ratio_cpu = (ft / res["cpu"]) / dft_cpu
    print(f"  ratio saescope / sae-dashboard feature-tokens/s: wall {ratio:.1f}x, CPU time {ratio_cpu:.1f}x  "
          f"(bar >= 20x: {'PASS' if min(ratio, ratio_cpu) >= 20 else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
