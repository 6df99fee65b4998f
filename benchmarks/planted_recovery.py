"""Full-size quality check: do saescope's SAEs recover a planted dictionary?

4096 random unit directions in R^512, each active on a token with probability p (default 8/4096,
about 8 active per token) with exponential magnitudes; SAEs with d_sae latents trained on N tokens
(default 2M) with saescope's default settings. Reports, per architecture: the fraction of planted
directions matched by a learned decoder row at cosine > 0.9 (and > 0.8), L0 and FVU on held-out
tokens, dead fraction, and wall time. All SAEs are trained in one pass (a sweep), so each sees the
same batches.

Usage: nice -n 10 .venv/bin/python benchmarks/planted_recovery.py [--quick] [--tokens N]
       [--architectures relu,topk] [--d-sae 4096] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from saescope.dictionaries.training import SAETrainingConfig, train_saes
from saescope.dictionaries.training_synthetic import PlantedDictionary, max_cosines

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512 directions in R^64, 300k tokens")
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--features", type=int, default=None, help="planted directions (default 4096)")
    parser.add_argument("--d-in", type=int, default=None)
    parser.add_argument("--d-sae", type=int, default=None)
    parser.add_argument("--l0", type=float, default=8.0, help="expected active planted directions per token")
    parser.add_argument("--architectures", default="relu,topk")
    parser.add_argument("--k", type=int, default=None, help="k for topk/batchtopk (default: 2 x --l0)")
    parser.add_argument("--l1", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_feat = args.features or (512 if args.quick else 4096)
    d_in = args.d_in or (64 if args.quick else 512)
    d_sae = args.d_sae or (1024 if args.quick else 4096)
    tokens = args.tokens or (300_000 if args.quick else 2_000_000)
    planted = PlantedDictionary.random(n_feat, d_in, p_active=args.l0 / n_feat, seed=0)
    k = args.k or int(round(2 * args.l0))
    configs = []
    for arch in args.architectures.split(","):
        extra: dict = {}
        if args.batch_size:
            extra["batch_size"] = args.batch_size
        configs.append(
            SAETrainingConfig(
                architecture=arch, d_sae=d_sae, tokens=tokens, seed=0,
                k=k if arch in ("topk", "batchtopk") else None,
                l1=args.l1 if arch in ("relu", "jumprelu") else None, **extra,
            )
        )
    print(f"planted: {n_feat} directions in R^{d_in}, ~{args.l0:g} active per token; d_sae {d_sae}; "
          f"{tokens:,} tokens; {torch.get_num_threads()} threads")
    t0 = time.perf_counter()
    results = train_saes(configs, planted.batches(tokens, batch=4096, seed=1), progress=True)
    seconds = time.perf_counter() - t0
    x = planted.sample(8192, torch.Generator().manual_seed(123))
    figures = []
    for cfg, res in zip(configs, results):
        d = res.dictionary
        with torch.no_grad():
            f = d.encode(x)
            fvu = float((d.decode(f) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
            l0 = float((f > 0).float().sum(1).mean())
        cos = max_cosines(planted.directions, d.W_dec.detach())
        row = {
            "architecture": cfg.architecture,
            "k": cfg.resolved_k if cfg.architecture in ("topk", "batchtopk") else None,
            "sparsity_coefficient": cfg.sparsity_for(d_in) if cfg.architecture in ("relu", "jumprelu") else None,
            "recovered_cos>0.9": float((cos > 0.9).float().mean()),
            "recovered_cos>0.8": float((cos > 0.8).float().mean()),
            "mean_max_cos": float(cos.mean()),
            "heldout_l0": l0,
            "heldout_fvu": fvu,
            "dead_fraction": res.final.get("dead_fraction"),
        }
        figures.append(row)
        print(json.dumps(row))
    print(f"wall time for the sweep: {seconds:.0f} s ({tokens / seconds:,.0f} tokens/s for all SAEs together)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seconds": seconds, "tokens": tokens, "results": figures}, fh, indent=1)


if __name__ == "__main__":
    main()
