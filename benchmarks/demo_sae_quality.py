"""Benchmark: quality of the built-in atlas's TopK SAE (dead features, L0, explained variance, CE
recovered on held-out text) under candidate training settings, and structure of the atlas's map.

Two modes:

* `train` (default): loads (or builds) the built-in model, streams `--tokens` activation rows of the
  demo's hook point into memory once, trains the demo's TopK SAE (d_sae 4096, k 16) once per candidate
  setting on those rows (candidates sharing a batch size train together in one pass) and evaluates
  each on the demo's held-out contexts with `evaluate_dictionary`. Prints one table row per candidate
  and writes them as JSON (`--out`).
* `map`: reads a built atlas (`--atlas`, e.g. one `saescope demo` built) and measures its map: for
  every mapped SAE feature, whether its nearest neighbour on the 2-D map shares one of its top tokens,
  against the same rate for random pairs of mapped features. It measures the map as stored and the map
  the previous default drew (every dictionary co-embedded, dead features included), recomputed here.

Usage:
  nice -n 10 .venv/bin/python benchmarks/demo_sae_quality.py train --model /tmp/I-atlas/model --tokens 1000000
  nice -n 10 .venv/bin/python benchmarks/demo_sae_quality.py map --atlas /tmp/I-atlas
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

warnings.filterwarnings("ignore")

# Candidate settings of the TopK SAE: name -> SAETrainingConfig overrides. `base` is the demo's
# previous setting (the trainer's defaults).
CANDIDATES: dict[str, dict[str, Any]] = {
    "base": {},
    "dead50k": {"dead_tokens": 50_000},
    "dead50k-aux1/8": {"dead_tokens": 50_000, "architecture_options": {"aux_coefficient": 0.125}},
    "dead20k-aux1/8": {"dead_tokens": 20_000, "architecture_options": {"aux_coefficient": 0.125}},
    "dead50k-aux1/2": {"dead_tokens": 50_000, "architecture_options": {"aux_coefficient": 0.5}},
    "aux1/2": {"architecture_options": {"aux_coefficient": 0.5}},
    "dead50k-aux1": {"dead_tokens": 50_000, "architecture_options": {"aux_coefficient": 1.0}},
    "dead50k-aux2": {"dead_tokens": 50_000, "architecture_options": {"aux_coefficient": 2.0}},
    "dead50k-auxk512-aux1/8": {"dead_tokens": 50_000,
                               "architecture_options": {"aux_k": 512, "aux_coefficient": 0.125}},
    "lr5e-4-dead50k-aux1/8": {"lr": 5e-4, "dead_tokens": 50_000, "architecture_options": {"aux_coefficient": 0.125}},
    "b1024-dead50k-aux1/8": {"batch_size": 1024, "dead_tokens": 50_000,
                             "architecture_options": {"aux_coefficient": 0.125}},
}


def load_or_build_model(model_dir: Path) -> Any:
    """The built-in model of the demo's config at `model_dir` (built there when missing)."""
    from saescope.lm.builtin import build_builtin_lm
    from saescope.lm.loading import load_lm
    from saescope.pipeline.build_config import builtin_preset

    config = builtin_preset()
    if not (model_dir / "config.json").is_file():
        build_builtin_lm(config.model.builtin.model_copy(update={"seed": config.seed}), model_dir)
    return load_lm(model_dir, device="cpu")


def training_activations(model: Any, n_tokens: int) -> torch.Tensor:
    """`[n_tokens, d_in]` activation rows of the demo's hook point over shuffled training contexts."""
    from saescope.pipeline.contexts import (
        builtin_contexts,
        contexts_for_tokens,
        training_rows,
    )
    from saescope.pipeline.build_config import builtin_preset
    from saescope.pipeline.dictionaries import activation_rows

    c = builtin_preset()
    n_ctx = c.model.builtin.n_ctx
    train = builtin_contexts("train", c.model.builtin, model.tokenizer, contexts_for_tokens(n_tokens, n_ctx) + 1, c.seed)
    rows = training_rows(train.tokens, n_ctx, n_tokens, c.seed)
    return activation_rows(model, rows, c.hooks[0].name, n_tokens)


def heldout_tokens(model: Any, n: int) -> np.ndarray:
    from saescope.pipeline.contexts import builtin_contexts
    from saescope.pipeline.build_config import builtin_preset

    c = builtin_preset()
    return builtin_contexts("heldout", c.model.builtin, model.tokenizer, n, c.seed).tokens


def candidate_config(overrides: dict[str, Any], tokens: int, d_sae: int, k: int) -> Any:
    from saescope.dictionaries.training import SAETrainingConfig
    from saescope.pipeline.build_config import builtin_preset

    c = builtin_preset()
    values: dict[str, Any] = dict(architecture="topk", d_sae=d_sae, k=k, tokens=tokens, batch_size=c.sae_batch_size,
                                  seed=c.seed, shuffle_buffer_tokens=c.sae_shuffle_buffer_tokens)
    values.update(overrides)
    return SAETrainingConfig(**values)


def run_training(args: argparse.Namespace) -> None:
    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.dictionaries.evaluation import evaluate_dictionary
    from saescope.dictionaries.training import train_saes
    from saescope.pipeline.build_config import builtin_preset

    torch.set_num_threads(args.threads)
    hook = builtin_preset().hooks[0].name
    model = load_or_build_model(Path(args.model))
    t0 = time.perf_counter()
    rows = training_activations(model, args.tokens)
    print(f"activations: {tuple(rows.shape)} in {time.perf_counter() - t0:.0f} s", flush=True)
    heldout = heldout_tokens(model, args.eval_contexts)
    metadata = DictionaryMetadata(model_name="builtin", hook_name=hook, context_size=int(model.cfg.n_ctx),
                                  prepend_bos=True)
    names = args.candidates or list(CANDIDATES)
    configs = {n: candidate_config(CANDIDATES[n], args.tokens, args.d_sae, args.k) for n in names}
    groups: dict[int, list[str]] = {}
    for n, cfg in configs.items():
        groups.setdefault(cfg.batch_size, []).append(n)
    results = []
    trained_by_name: dict[str, Any] = {}
    print(f"{'candidate':<26}{'L0':>7}{'expl.var':>10}{'CE rec.':>9}{'dead':>7}{'train s':>9}", flush=True)
    for group in groups.values():
        t0 = time.perf_counter()
        trained = train_saes([configs[n] for n in group], list(rows.split(65_536)), metadata, progress=False)
        seconds = (time.perf_counter() - t0) / len(group)
        for n, r in zip(group, trained):
            trained_by_name[n] = r
            m = evaluate_dictionary(model, r.dictionary, heldout, hook)
            row = {"candidate": n, "overrides": CANDIDATES[n], "l0": m.l0, "explained_variance": m.explained_variance,
                   "ce_recovered": m.ce_recovered, "dead": m.dead, "d_sae": args.d_sae, "tokens": args.tokens,
                   "train_seconds_each": seconds}
            results.append(row)
            print(f"{n:<26}{m.l0:>7.1f}{m.explained_variance:>10.3f}{m.ce_recovered:>9.3f}{m.dead:>7}{seconds:>9.0f}",
                  flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    if args.map_atlas:
        chosen = {n: trained_by_name[n].dictionary for n in (args.map_candidates or [best_candidate(results)])}
        publish_for_map(model, chosen, rows, Path(args.map_atlas), args.map_contexts)
        run_map(argparse.Namespace(atlas=args.map_atlas, top_tokens=5, tune=args.tune))


def best_candidate(results: list[dict[str, Any]]) -> str:
    """The candidate with the fewest dead features among those whose CE recovered is at least the
    first candidate's (within 0.002)."""
    floor = results[0]["ce_recovered"] - 0.002
    ok = [r for r in results if r["ce_recovered"] >= floor] or results
    return min(ok, key=lambda r: (r["dead"], -r["ce_recovered"]))["candidate"]


def publish_for_map(model: Any, saes: dict[str, Any], rows: torch.Tensor, atlas: Path, n_contexts: int) -> None:
    """Publish `saes` with the demo's neuron and PCA baselines into `atlas` with the demo's precompute
    settings (its map options included), over `n_contexts` training contexts."""
    from saescope.dictionaries.baselines import fit_baseline
    from saescope.dictionaries.saelens_format import save_dictionary
    from saescope.pipeline.contexts import builtin_contexts
    from saescope.pipeline.build_config import builtin_preset
    from saescope.pipeline.publish import (
        DictionaryEntry,
        ModelRecord,
        precompute_and_publish,
    )

    c = builtin_preset()
    fit = rows[: c.baseline_fit_tokens]
    dictionaries = dict(saes)
    for kind in c.baselines:
        dictionaries[kind] = fit_baseline(kind, fit, seed=c.seed, metadata=next(iter(saes.values())).metadata)
    entries = []
    for name, d in dictionaries.items():
        safe = name.replace("/", "_")
        save_dictionary(d.cpu(), atlas / "dictionaries" / safe)
        entries.append(DictionaryEntry(safe, d, weights_path=f"dictionaries/{safe}"))
    contexts = builtin_contexts("train", c.model.builtin, model.tokenizer, n_contexts, c.seed + 2)
    t0 = time.perf_counter()
    precompute_and_publish(f"sqlite:///{atlas / 'atlas.db'}", model, ModelRecord(id="builtin"), entries, contexts,
                           c.precompute.model_copy(update={"device": "cpu", "feature_pages": False}),
                           atlas_root=atlas)
    print(f"published {list(dictionaries)} over {n_contexts} contexts in {time.perf_counter() - t0:.0f} s", flush=True)


# --------------------------------------------------------------------------- map structure


def share_rate(coords: np.ndarray, tokens: list[set[str]], rng: np.random.Generator, n_random: int = 20_000
               ) -> tuple[float, float]:
    """(nearest-neighbour share rate, random-pair share rate): how often a feature and its nearest
    other point on the map (resp. a random other point) have a top token in common."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=2).fit(coords)
    _, idx = nn.kneighbors(coords)
    near = np.mean([bool(tokens[i] & tokens[j]) for i, j in enumerate(idx[:, 1])])
    a = rng.integers(0, len(tokens), n_random)
    b = (a + rng.integers(1, len(tokens), n_random)) % len(tokens)
    rand = np.mean([bool(tokens[i] & tokens[j]) for i, j in zip(a, b)])
    return float(near), float(rand)


def stored_features(atlas: Path) -> dict[str, dict[str, Any]]:
    """Per dictionary: kind, and per feature its top tokens, dead flag and stored map coordinates."""
    from saescope.store.database import create_database
    from saescope.store.schema import DictionaryRow, FeatureRow
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    eng = create_database(f"sqlite:///{atlas / 'atlas.db'}")
    out: dict[str, dict[str, Any]] = {}
    with Session(eng) as s:
        for d in s.scalars(select(DictionaryRow).where(DictionaryRow.status == "ready")):
            out[d.id] = {"kind": d.kind, "weights_path": d.weights_path, "features": {}}
        for f in s.execute(select(FeatureRow.dictionary_id, FeatureRow.index, FeatureRow.top_tokens, FeatureRow.dead,
                                  FeatureRow.umap_x, FeatureRow.umap_y)):
            if f.dictionary_id in out:
                out[f.dictionary_id]["features"][f.index] = f
    eng.dispose()
    return out


def _label_tokens(text: str, n: int) -> set[str]:
    return set(text.split()[:n])


def run_map(args: argparse.Namespace) -> None:
    from saescope.analysis.geometry import umap_layout
    from saescope.dictionaries.saelens_format import load_dictionary

    atlas = Path(args.atlas)
    rng = np.random.default_rng(0)
    stored = stored_features(atlas)
    saes = [k for k, v in stored.items() if v["kind"] == "sae"]
    # features measured: alive SAE features with top tokens
    keys = [(d, i) for d in saes for i, f in sorted(stored[d]["features"].items()) if not f.dead and f.top_tokens]
    tokens = [_label_tokens(stored[d]["features"][i].top_tokens, args.top_tokens) for d, i in keys]

    mapped = [(k, t) for k, t in zip(keys, tokens) if stored[k[0]]["features"][k[1]].umap_x is not None]
    coords = np.array([[stored[d]["features"][i].umap_x, stored[d]["features"][i].umap_y] for (d, i), _ in mapped])
    near, rand = share_rate(coords, [t for _, t in mapped], rng)
    total = sum(len(v["features"]) for v in stored.values())
    for n_neighbors, min_dist in (args.tune or []):
        t0 = time.perf_counter()
        alive = {d: np.array([i in stored[d]["features"] and not stored[d]["features"][i].dead
                              for i in range(len(stored[d]["features"]))]) for d in saes}
        decs = [load_dictionary(atlas / stored[d]["weights_path"]).W_dec.detach() for d in saes]
        from saescope.analysis.geometry import masked_umap_layout

        lay = dict(zip(saes, masked_umap_layout(decs, [alive[d] for d in saes], n_neighbors=int(n_neighbors),
                                                min_dist=float(min_dist))))
        pts = np.array([lay[d][i] for d, i in keys])
        tn, tr = share_rate(pts, tokens, rng)
        print(f"n_neighbors {int(n_neighbors)} min_dist {min_dist}: nearest shares {tn:.3f}, random {tr:.3f} "
              f"({tn / max(tr, 1e-9):.1f}x) [{time.perf_counter() - t0:.0f} s]", flush=True)
    print(f"stored map: {len(coords)} points of {total} features; nearest neighbour shares a top token "
          f"{near:.3f}, random pair {rand:.3f} ({near / max(rand, 1e-9):.1f}x)")

    # the previous default: every dictionary and every feature in one plane
    ids = list(stored)
    decoders = [load_dictionary(atlas / stored[d]["weights_path"]).W_dec.detach() for d in ids]
    t0 = time.perf_counter()
    layouts = dict(zip(ids, umap_layout(decoders, seed=0, n_neighbors=15, min_dist=0.1)))
    seconds = time.perf_counter() - t0
    all_points = sum(len(c) for c in layouts.values())
    # neighbours among every point of the old plane; measured on the same alive SAE features
    every = np.concatenate([layouts[d] for d in ids])
    owner = [(d, i) for d in ids for i in range(len(layouts[d]))]
    every_tokens = [
        _label_tokens(stored[d]["features"][i].top_tokens, args.top_tokens) if d in stored and i in stored[d]["features"]
        else set() for d, i in owner
    ]
    from sklearn.neighbors import NearestNeighbors

    _, idx = NearestNeighbors(n_neighbors=2).fit(every).kneighbors(every)
    pos = {k: n for n, k in enumerate(owner)}
    sel = [pos[k] for k in keys]
    old_near = float(np.mean([bool(every_tokens[p] & every_tokens[idx[p, 1]]) for p in sel]))
    print(f"previous map (all {len(ids)} dictionaries, dead included, {all_points} points, UMAP {seconds:.0f} s): "
          f"nearest neighbour shares a top token {old_near:.3f}, random pair {rand:.3f} "
          f"({old_near / max(rand, 1e-9):.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    t = sub.add_parser("train", help="train the candidate TopK SAEs and evaluate them on held-out text")
    t.add_argument("--model", default="/tmp/I-atlas/model", help="built-in model folder (built when missing)")
    t.add_argument("--tokens", type=int, default=1_000_000, help="training tokens per candidate")
    t.add_argument("--eval-contexts", type=int, default=256, help="held-out contexts for the metrics")
    t.add_argument("--d-sae", type=int, default=4096)
    t.add_argument("--k", type=int, default=16)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--candidates", nargs="*", help=f"names among {', '.join(CANDIDATES)} (default: all)")
    t.add_argument("--out", help="write the results as JSON here")
    t.add_argument("--map-atlas", help="also publish the chosen candidates and the baselines here and measure the map")
    t.add_argument("--map-candidates", nargs="*", help="candidates published for the map (default: the best one, see best_candidate)")
    t.add_argument("--map-contexts", type=int, default=1024, help="contexts scanned for the map's top tokens")
    t.add_argument("--tune", type=float, nargs=2, action="append", metavar=("N_NEIGHBORS", "MIN_DIST"),
                   help="also measure the map of the live SAE features with these UMAP settings (repeatable)")
    m = sub.add_parser("map", help="measure the structure of a built atlas's map")
    m.add_argument("--atlas", required=True, help="a built atlas folder (atlas.db + dictionaries/)")
    m.add_argument("--top-tokens", type=int, default=5, help="top tokens of a feature compared")
    m.add_argument("--tune", type=float, nargs=2, action="append", metavar=("N_NEIGHBORS", "MIN_DIST"),
                   help="also measure the map of the live SAE features with these UMAP settings (repeatable)")
    args = parser.parse_args()
    if args.mode == "map":
        run_map(args)
    else:
        if args.mode is None:
            args = t.parse_args([])
        run_training(args)


if __name__ == "__main__":
    main()
