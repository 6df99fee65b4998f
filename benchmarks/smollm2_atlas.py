"""Benchmark: the SmolLM2 preset end to end (`saescope demo --preset smollm2 --no-serve`), measured.

Builds (or resumes) the preset's atlas, then prints what the closing note of a real-model build needs:
wall-clock time per stage, the model's held-out loss, every dictionary's metrics (L0, explained
variance, CE recovered, dead features), the number of massive-activation rows left out of training,
and, for a few live features of the middle-layer TopK SAE, their top tokens and top example windows —
so a reader can judge whether the features look like features. `--tokens`/`--precompute-contexts`
shrink the build for a smoke run. Writes everything as JSON to `--out`.

Usage:
  nice -n 5 .venv/bin/python benchmarks/smollm2_atlas.py --atlas /tmp/smollm2-atlas --out /tmp/smollm2.json
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path
from typing import Any


def example_features(atlas: Path, dictionary: str, n: int) -> list[dict[str, Any]]:
    """`n` live features of `dictionary` spread over its density range: label, density, top windows."""
    db = sqlite3.connect(atlas / "atlas.db")
    (vocab_json,) = db.execute("select m.vocab from models m join dictionaries d on d.model_id = m.id "
                               "where d.id = ?", (dictionary,)).fetchone()
    vocab = json.loads(vocab_json)
    rows = db.execute(
        'select "index", label, density, max_activation from features where dictionary_id = ? '
        "and max_activation > 0 order by density", (dictionary,)).fetchall()
    picked = [rows[int(i * (len(rows) - 1) / max(1, n - 1))] for i in range(n)] if rows else []
    out = []
    for index, label, density, max_act in picked:
        examples = db.execute(
            'select c.tokens, e.activations from examples e join contexts c on c.id = e.context_id '
            'where e.dictionary_id = ? and e.feature_index = ? and e."group" = \'top\' order by e.rank limit 3',
            (dictionary, index)).fetchall()
        windows = []
        for tokens_json, acts_json in examples:
            tokens = [vocab[t] for t in json.loads(tokens_json)]
            acts = json.loads(acts_json)
            peak = max(range(len(acts)), key=lambda i: acts[i])
            lo, hi = max(1, peak - 10), min(len(tokens), peak + 4)
            windows.append("".join(tokens[lo:peak]) + "[[" + tokens[peak] + "]]" + "".join(tokens[peak + 1:hi]))
        out.append({"index": index, "label": label, "density": density, "max_activation": max_act,
                    "top_windows": windows})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, default=Path("/tmp/smollm2-atlas"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=None, help="SAE training tokens (default: the preset's)")
    parser.add_argument("--precompute-contexts", type=int, default=None)
    parser.add_argument("--examples", type=int, default=6, help="features quoted per dictionary")
    args = parser.parse_args()

    from saescope.pipeline.build import build_atlas
    from saescope.pipeline.build_config import smollm2_preset

    overrides: dict[str, Any] = {}
    if args.tokens is not None:
        overrides["sae_tokens"] = args.tokens
    if args.precompute_contexts is not None:
        overrides["precompute_contexts"] = args.precompute_contexts
    config = smollm2_preset(**overrides)
    t0 = time.perf_counter()
    report = build_atlas(args.atlas, config)
    wall = time.perf_counter() - t0
    print(report.summary())
    print(f"wall clock: {wall:.0f} s")
    quoted = {}
    for d in report.dictionaries:
        if d.kind == "sae" and d.id in ("L10R-topk-4608", "L10R-relu-4608", "L10M-topk-4608"):
            quoted[d.id] = example_features(args.atlas, d.id, args.examples)
    for name, feats in quoted.items():
        print(f"\n== {name}")
        for f in feats:
            print(f"  #{f['index']} density {f['density']:.2e} label {f['label']!r}")
            for w in f["top_windows"]:
                print("     ", w.replace("\n", "\\n"))
    training = {}
    for d in report.dictionaries:
        notes = Path(d.folder) / "training.json"
        if notes.is_file():
            training[d.id] = {k: v for k, v in json.loads(notes.read_text()).items() if k in (
                "massive_rows_excluded", "max_norm_ratio", "seconds_training_shared")}
    if args.out is not None:
        args.out.write_text(json.dumps({"wall_seconds": wall, "report": json.loads(report.model_dump_json()),
                                        "training": training, "examples": quoted}, indent=2, default=str))


if __name__ == "__main__":
    main()
