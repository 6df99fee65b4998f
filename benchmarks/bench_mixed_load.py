"""Benchmark: steering, inference and feature pages at once against a real uvicorn server on 127.0.0.1.

Atlas: bench_api.py's benchmark atlas (`--model-shape builtin`: the built-in model shape, one
StandardSAE of `--d-sae` features on `blocks.0.mlp.hook_post`), built once under `--work` and
reused, or any atlas given with `--atlas` (and `--dictionary`). The server runs `create_app` with
the default `ApiLimits` of `saescope serve` (queues per class of work, per-client limits), one
uvicorn worker, `--threads` torch threads.

Each simulated client has a connection of its own from an address of its own (127.0.1.N), as
distinct users would, so per-client limits see one user each. Phases of `--seconds` each, in one run:
- `inference alone`: `--inference-clients` clients posting /inference/activations on texts of
  `--text-tokens` tokens, back to back.
- `steer alone`: one client steering at the limit (below), back to back: one generation's length.
- `mixed`: the same inference clients, plus `--steer-clients` clients steering at the limit
  (`--prompt-tokens` prompt, 8 interventions, `--n-tokens` new tokens) and `--page-clients` clients
  loading feature pages (GET .../page, gzip), all at once.
- `overload`: `--overload-clients` inference clients that retry at once on 503 (ignoring
  Retry-After, as a careless client would): served requests/s against `inference alone`, and the
  number of refusals.
Printed per phase and class: requests served, p50/p99 latency of the served ones, served requests/s,
refusals (503/429) and other errors.

    .venv/bin/python benchmarks/bench_mixed_load.py                # builds the atlas the first time
    .venv/bin/python benchmarks/bench_mixed_load.py --seconds 10 --steer-clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_api import DICT_ID, SHAPES, Request, _exchange, build_atlas, free_port, run

LAUNCHER = """
import sys, uvicorn
from saescope.api.app import create_app
from saescope.api.settings import ApiSettings
settings = ApiSettings.model_validate_json(sys.argv[1])
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


@dataclass
class ClassStats:
    """What one class of requests got in one phase."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    clients: int = 0

    def row(self, seconds: float) -> dict[str, Any]:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([float("nan")])
        refused = self.statuses.get(503, 0) + self.statuses.get(429, 0)
        return {
            "clients": self.clients,
            "served": len(self.latencies),
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "served_per_s": len(self.latencies) / seconds,
            "refused": refused,
            "errors": sum(n for s, n in self.statuses.items() if s not in (200, 429, 503)),
        }


def start_server(root: Path, threads: int) -> tuple[subprocess.Popen, int]:
    """`create_app` on the atlas at `root` with the default serve limits, in a subprocess; (process, port)."""
    from saescope.api.settings import ApiSettings

    settings = ApiSettings(
        store_url=f"sqlite:///{root}/atlas.db", atlas_root=root, device="cpu", torch_threads=threads, preload_engine=True
    )
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", LAUNCHER, settings.model_dump_json(), str(port)])
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).read()
            return server, port
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("server did not start")
            time.sleep(0.2)


def texts_of(root: Path, n: int, n_tokens: int) -> list[str]:
    """`n` texts of standard-library code that tokenise to exactly `n_tokens` tokens (without BOS)."""
    from saescope.corpus.stdlib import stdlib_documents
    from saescope.lm.tokenizer import load_tokenizer

    tok = load_tokenizer(root / "model" / "tokenizer")
    out = []
    for doc in stdlib_documents("heldout", max_files=200):
        ids = tok(doc.text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids) - 2 * n_tokens, 3 * n_tokens):
            text = tok.decode(ids[start : start + n_tokens])
            if len(tok(text, add_special_tokens=False)["input_ids"]) == n_tokens:
                out.append(text)
            if len(out) >= n:
                return out
    return out


async def client_loop(
    port: int, address: str, make: Callable[[int], Request], stop_at: float, stats: ClassStats, polite: bool
) -> None:
    """One client: requests back to back on its own keep-alive connection until `stop_at`.
    A refused request is retried at once, or after its Retry-After when `polite`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    stats.clients += 1
    i = random.randrange(1 << 20)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            status, _ = await _exchange(reader, writer, make(i))
            stats.statuses[status] += 1
            if status == 200:
                stats.latencies.append(time.perf_counter() - t0)
            elif polite and status in (429, 503):
                await asyncio.sleep(1.0)
            i += 1
    finally:
        writer.close()


async def run_phase(
    port: int, seconds: float, loads: dict[str, tuple[int, Callable[[int], Request], bool]]
) -> dict[str, ClassStats]:
    """Every class of `loads` (name -> clients, request maker, polite) at once for `seconds`."""
    stop_at = time.perf_counter() + seconds
    stats = {name: ClassStats() for name in loads}
    tasks = []
    address = 0
    for name, (clients, make, polite) in loads.items():
        for _ in range(clients):
            address += 1
            ip = f"127.0.{1 + address // 250}.{1 + address % 250}"
            tasks.append(client_loop(port, ip, make, stop_at, stats[name], polite))
    await asyncio.gather(*tasks)
    return stats


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/saescope_bench_api"))
    parser.add_argument("--atlas", type=Path, default=None, help="Use this atlas instead of building the benchmark one.")
    parser.add_argument("--dictionary", default=DICT_ID, help="Dictionary to run and steer with.")
    parser.add_argument("--d-sae", type=int, default=None, help="SAE width of the built atlas (default: the shape's).")
    parser.add_argument("--contexts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0, help="Length of each phase.")
    parser.add_argument("--inference-clients", type=int, default=4)
    parser.add_argument("--steer-clients", type=int, default=4)
    parser.add_argument("--page-clients", type=int, default=8)
    parser.add_argument("--overload-clients", type=int, default=32)
    parser.add_argument("--text-tokens", type=int, default=127, help="Tokens of each inference text (without BOS).")
    parser.add_argument("--prompt-tokens", type=int, default=118, help="Tokens of each steering prompt.")
    parser.add_argument("--n-tokens", type=int, default=128, help="Tokens each steering request generates.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server.")
    parser.add_argument("--json-out", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args(argv)

    if args.atlas is None:
        shape = SHAPES["builtin"]
        work = args.work / "builtin"
        work.mkdir(parents=True, exist_ok=True)
        root = build_atlas(work, shape, args.d_sae or shape.d_sae, args.contexts)
    else:
        root = args.atlas.resolve()
    texts = texts_of(root, 16, args.text_tokens)
    prompts = texts_of(root, 8, args.prompt_tokens)
    if not texts or not prompts:
        raise SystemExit("no corpus text of the asked lengths")

    server, port = start_server(root, args.threads)
    try:
        info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/dictionaries/{args.dictionary}").read())
        d_sae = int(info["d_sae"])
        base = f"/api/v1/dictionaries/{args.dictionary}/features"

        def inference(i: int) -> Request:
            body = {"text": texts[i % len(texts)], "dictionaries": [args.dictionary], "top_k": 5}
            return Request("POST", "/api/v1/inference/activations", body)

        def steer(i: int) -> Request:
            interventions = [
                {"dictionary": args.dictionary, "index": (i + k) % d_sae, "mode": "add", "strength": 2.0} for k in range(8)
            ]
            body = {"prompt": prompts[i % len(prompts)], "interventions": interventions, "n_tokens": args.n_tokens,
                    "temperature": 0.8, "seed": i}
            return Request("POST", "/api/v1/steer", body)

        def page(i: int) -> Request:
            return Request("GET", f"{base}/{(i * 7919) % d_sae}/page", gzip=True)

        run(run_phase(port, min(2.0, args.seconds), {"warm-up": (1, inference, True), "warm-up steer": (1, steer, True)}))
        phases = {
            "inference alone": {"inference": (args.inference_clients, inference, True)},
            "steer alone": {"steer": (1, steer, True)},
            "mixed": {
                "inference": (args.inference_clients, inference, True),
                "steer": (args.steer_clients, steer, True),
                "page": (args.page_clients, page, True),
            },
            "overload": {"inference": (args.overload_clients, inference, False)},
        }
        results = {}
        for name, loads in phases.items():
            stats = run(run_phase(port, args.seconds, loads))
            results[name] = {cls: s.row(args.seconds) for cls, s in stats.items()}
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"\natlas {root}, dictionary {args.dictionary} (d_sae {d_sae}); server: default serve limits, torch threads "
          f"{args.threads}; {args.seconds:g} s per phase; inference texts {args.text_tokens} tokens; steering "
          f"{args.prompt_tokens}-token prompts, 8 interventions, {args.n_tokens} new tokens; machine "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"\n{'phase':16s} {'class':10s} {'clients':>7s} {'served':>7s} {'p50 ms':>8s} {'p99 ms':>9s} "
          f"{'served/s':>9s} {'refused':>8s} {'errors':>6s}")
    for phase, per in results.items():
        for cls, r in per.items():
            print(f"{phase:16s} {cls:10s} {r['clients']:7d} {r['served']:7d} {r['p50_ms']:8.1f} {r['p99_ms']:9.1f} "
                  f"{r['served_per_s']:9.1f} {r['refused']:8d} {r['errors']:6d}")
    alone = results["inference alone"]["inference"]
    mixed = results["mixed"]["inference"]
    over = results["overload"]["inference"]
    steer_alone, steer_mixed = results["steer alone"]["steer"], results["mixed"]["steer"]
    print(f"\ninference under mixed load / alone: p50 {mixed['p50_ms'] / alone['p50_ms']:.2f}x, p99 "
          f"{mixed['p99_ms'] / alone['p99_ms']:.2f}x; p99 under mixed load / one generation alone (p50): "
          f"{mixed['p99_ms'] / steer_alone['p50_ms']:.3f}; steering p50 {steer_mixed['p50_ms']:.0f} ms with "
          f"{args.steer_clients} clients, {steer_alone['p50_ms']:.0f} ms alone")
    print(f"overload ({args.overload_clients} clients retrying at once): {over['served_per_s']:.1f} served/s against "
          f"{alone['served_per_s']:.1f} alone ({over['served_per_s'] / max(alone['served_per_s'], 1e-9):.2f}x), "
          f"{over['refused']} refusals")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
