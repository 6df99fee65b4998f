"""Benchmark: the REST API under load against a real uvicorn server on 127.0.0.1.

Atlas (built once under `--work/<model shape>`, reused by later runs), by `--model-shape`:
- `builtin` (default): the built-in model shape (1 layer, d_model 128, d_mlp 512, n_ctx 128, vocab
  ~4096), one StandardSAE with `--d-sae` features (default 2048) on `blocks.0.mlp.hook_post`;
  precomputed with the default PrecomputeConfig (20 top + 10x5 interval + 5 random examples per feature).
- `gpt2-small`: a GPT-2-small-shaped transformer_lens model (12 layers, d_model 768, d_mlp 3072, 12 heads,
  n_ctx 128; the built-in tokenizer, vocab ~4096), one StandardSAE with `--d-sae` features (default
  24576) on `blocks.5.hook_resid_post`; precomputed with fewer examples per feature (5 top, no interval
  or random groups), as only live inference is of interest at this size.
Both models are trained only a step or a few (speed does not depend on training); SAE encoder biases
are set so each feature fires on a fixed share of tokens; `--contexts` contexts of standard-library
text, stored in SQLite.

Measured in one run:
- floor: the raw model + SAE forward for one 128-token text in this process (torch threads as the
  server), and `Engine.top_features` called directly (no HTTP): medians of runs interleaved, in ten
  rounds, with the 1-client inference requests (so machine load drifts on both sides of the ratio).
- the server (a subprocess: `uvicorn` serving `create_app`): p50/p99 latency and requests/s of
  GET health, GET feature detail, GET examples, detail + examples fetched together (two requests on
  two connections), GET .../page (the one-request feature page the dashboard loads) plain and with
  `Accept-Encoding: gzip` (as browsers send), and POST /inference/activations on 128-token texts, at
  1 and 32 concurrent clients, each client on its own keep-alive connections (a minimal HTTP/1.1
  client on uvloop, see `run_load`). Features are requested in a random order without repeats.
Targets: feature page p99 < 25 ms at 32 clients on SQLite; live inference at 1 client: p50 minus the
raw forward (the per-request overhead) under 2 ms, whatever the model size.

    .venv/bin/python benchmarks/bench_api.py            # builds the atlas the first time
    .venv/bin/python benchmarks/bench_api.py --requests 2000 --clients 1 32 --only page inference
    .venv/bin/python benchmarks/bench_api.py --model-shape gpt2-small --clients 1 --only inference
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

DICT_ID = "bench-sae"


@dataclass(frozen=True)
class ModelShape:
    """One benchmark model: its architecture, the hook its SAE reads and how the atlas is precomputed."""

    model_id: str
    hook: str
    d_sae: int  # default SAE width
    density: float  # share of tokens each feature fires on
    lm: dict[str, Any] = field(default_factory=dict)  # BuiltinLMConfig fields
    precompute: dict[str, Any] = field(default_factory=dict)  # PrecomputeConfig fields


SHAPES = {
    "builtin": ModelShape("bench-1l", "blocks.0.mlp.hook_post", 2048, 0.02),
    "gpt2-small": ModelShape(
        "bench-gpt2s", "blocks.5.hook_resid_post", 24576, 0.004,
        lm={"n_layers": 12, "d_model": 768, "d_mlp": 3072, "n_heads": 12, "d_head": 64, "train_tokens": 32 * 128},
        precompute={"top_k": 5, "n_intervals": 1, "examples_per_interval": 0, "n_random": 0},
    ),
}


def build_atlas(work: Path, shape: ModelShape, d_sae: int, n_contexts: int) -> Path:
    """The benchmark atlas under `work/atlas` (reused when complete)."""
    from saescope.atlas_layout import AtlasLayout

    root = work / "atlas"
    layout = AtlasLayout(root=root)
    marker = root / "bench_ready.json"
    spec = {"model": shape.model_id, "d_sae": d_sae, "contexts": n_contexts}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        from saescope.store.pages import ensure_feature_pages

        ensure_feature_pages(layout.sqlite_url, progress=True)  # an atlas from before pre-rendered pages
        return root
    if root.exists():
        import shutil

        shutil.rmtree(root)
    from saescope.activations.stream import hook_activations
    from saescope.analysis.config import PrecomputeConfig
    from saescope.corpus.packing import pack_documents
    from saescope.corpus.stdlib import stdlib_documents
    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.dictionaries.architectures.standard import StandardSAE
    from saescope.dictionaries.saelens_format import save_dictionary
    from saescope.lm.builtin import BuiltinLMConfig, build_builtin_lm
    from saescope.lm.loading import load_lm
    from saescope.pipeline.publish import DictionaryEntry, ModelRecord, precompute_and_publish

    t0 = time.perf_counter()
    cfg = BuiltinLMConfig(**{
        "train_tokens": 32 * 128 * 10, "warmup_steps": 2, "corpus_max_files": 80, "tokenizer_train_chars": 2_000_000,
        "eval_contexts": 16, "checkpoint_every_steps": 1000, **shape.lm,
    })
    build_builtin_lm(cfg, layout.model_dir, progress=False)
    model = load_lm(layout.model_dir, device="cpu")
    packed = pack_documents(stdlib_documents("all", max_files=400), model.tokenizer, 128, max_contexts=n_contexts)
    with torch.no_grad():
        x = hook_activations(model, torch.as_tensor(packed.tokens[:16]), shape.hook)[:, 1:]
        x = x.reshape(-1, x.shape[-1])
        meta = DictionaryMetadata(model_name="bench", hook_name=shape.hook, context_size=128)
        sae = StandardSAE(int(x.shape[-1]), d_sae, meta)
        sae.reset_parameters(torch.Generator().manual_seed(0))
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        k = max(1, round((1.0 - shape.density) * pre.shape[0]))  # kthvalue: quantile caps its input size
        sae.b_enc.sub_(pre.kthvalue(k, dim=0).values)
    save_dictionary(sae, layout.dictionary_dir(DICT_ID))
    precompute_and_publish(
        layout.sqlite_url, model, ModelRecord(id=shape.model_id, source="builtin", location="model", tokenizer="model/tokenizer"),
        [DictionaryEntry(DICT_ID, sae, weights_path=f"dictionaries/{DICT_ID}")], packed,
        PrecomputeConfig(device="cpu", progress=False, umap=False, **shape.precompute), work_dir=layout.work_dir, atlas_root=root,
    )
    marker.write_text(json.dumps(spec))
    print(f"built atlas in {time.perf_counter() - t0:.0f} s ({layout.sqlite_path.stat().st_size / 2**20:.0f} MiB)")
    return root


def texts_of_128_tokens(root: Path, n: int) -> list[str]:
    """`n` texts that tokenise to exactly 127 tokens (128 with BOS), from stdlib files."""
    from saescope.corpus.stdlib import stdlib_documents
    from saescope.lm.tokenizer import load_tokenizer

    tok = load_tokenizer(root / "model" / "tokenizer")
    out = []
    for doc in stdlib_documents("heldout", max_files=200):
        ids = tok(doc.text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids) - 200, 400):
            text = tok.decode(ids[start : start + 127])
            if len(tok(text, add_special_tokens=False)["input_ids"]) == 127:
                out.append(text)
            if len(out) >= n:
                return out
    return out


class _HookReached(Exception):
    pass


class Floor:
    """The in-process floor: the raw forward (model to the hook + SAE encode) and Engine.top_features
    on the benchmark texts, timed in batches so they can be interleaved with server measurements."""

    def __init__(self, root: Path, texts: list[str], shape: ModelShape) -> None:
        from saescope.dictionaries.saelens_format import load_dictionary
        from saescope.engine.engine import Engine, temporary_hooks
        from saescope.lm.loading import load_lm

        self.model = load_lm(root / "model", device="cpu")
        self.sae = load_dictionary(root / "dictionaries" / DICT_ID)
        self.engine = Engine(self.model, model_id=shape.model_id)
        self.hook = shape.hook
        self.temporary_hooks = temporary_hooks
        self.engine.add_dictionary(DICT_ID, self.sae)
        self.ids = [self.engine.tokenize(t) for t in texts]
        self.tokens = [torch.tensor([i]) for i in self.ids]
        self.raw_times: list[float] = []
        self.engine_times: list[float] = []
        self.paced_times: list[float] = []
        self.run(3, record=False)  # warm-up

    def _raw(self, t: torch.Tensor) -> torch.Tensor:
        """The model up to the hook (the forward ends there, as the engine's does) + the SAE encode.
        The hook is added and removed as the engine does it (`temporary_hooks`), so the floor and the
        engine pay the same for it."""
        captured = []

        def grab(act: torch.Tensor, hook: object) -> None:
            captured.append(act)
            raise _HookReached

        with torch.inference_mode(), self.temporary_hooks(self.model, [(self.hook, grab)]):
            try:
                self.model(t, return_type=None)
            except _HookReached:
                pass
            return self.sae.encode(captured[0])

    def run(self, repeats: int, record: bool = True) -> None:
        for r in range(repeats):
            i = (len(self.raw_times) + r) % len(self.tokens)
            t0 = time.perf_counter()
            self._raw(self.tokens[i])
            t1 = time.perf_counter()
            self.engine.top_features(self.ids[i], [DICT_ID], 5)
            t2 = time.perf_counter()
            if record:
                self.raw_times.append(t1 - t0)
                self.engine_times.append(t2 - t1)

    def run_paced(self, repeats: int, period_s: float) -> None:
        """Raw forwards one at a time at the pace of a 1-client server: before each, the thread idles
        for `period_s` (that server's p50 request time) minus the last forward, as the server's model
        thread idles between requests. On a VM, caches cool and idle vCPUs are descheduled in that time,
        so this is the raw forward under the conditions each 1-client request meets."""
        for r in range(repeats):
            i = (len(self.paced_times) + r) % len(self.tokens)
            time.sleep(max(0.0, period_s - (self.paced_times[-1] if self.paced_times else 0.0)))
            t0 = time.perf_counter()
            self._raw(self.tokens[i])
            self.paced_times.append(time.perf_counter() - t0)

    def medians(self) -> dict[str, float]:
        out = {"raw_forward": statistics.median(self.raw_times), "engine_direct": statistics.median(self.engine_times)}
        if self.paced_times:
            out["raw_paced"] = statistics.median(self.paced_times)
        return out


LAUNCHER = """
import os, sys, uvicorn
from saescope.api.app import SETTINGS_ENV
from saescope.api.settings import ApiSettings, ApiLimits
root, port, threads, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
settings = ApiSettings(store_url=f"sqlite:///{root}/atlas.db", atlas_root=root, device="cpu",
                       torch_threads=threads, preload_engine=True, limits=ApiLimits(max_queue=256, max_client_requests=256, request_timeout_s=120))
os.environ[SETTINGS_ENV] = settings.model_dump_json()
uvicorn.run("saescope.api.app:create_app_from_env", factory=True, workers=workers, host="127.0.0.1",
            port=port, log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Request:
    """One HTTP/1.1 request, pre-encoded: `method` `path`, optional JSON body."""

    def __init__(self, method: str, path: str, body: object | None = None, gzip: bool = False) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n"
        if gzip:
            head += "Accept-Encoding: gzip\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        self.raw = (head + "\r\n").encode() + data


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request) -> tuple[int, bytes]:
    """Send one request on a keep-alive connection; (status, body) of the response."""
    writer.write(request.raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
        elif line.lower().startswith(b"transfer-encoding:"):
            raise RuntimeError("chunked responses are not expected from these endpoints")
    return status, await reader.readexactly(length)


async def run_load(port: int, make_requests, n_requests: int, clients: int) -> dict[str, float]:
    """Send `n_requests` page loads (each one or more HTTP requests sent concurrently, as a browser
    would on its own connections) from `clients` concurrent loops, each with its own keep-alive
    connections; latency percentiles of whole page loads and page loads/s.

    A minimal HTTP/1.1 client on asyncio streams (pre-encoded requests, Content-Length framing):
    the load generator shares the 2 cores with the server, so it must cost little CPU itself;
    runs on uvloop when installed (uvicorn[standard] brings it)."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n_requests))

    async def loop() -> None:
        nonlocal errors
        width = len(make_requests(0))
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(width)]
        try:
            for i in counter:
                requests = make_requests(i)
                t0 = time.perf_counter()
                answers = await asyncio.gather(*(_exchange(r, w, q) for (r, w), q in zip(conns, requests)))
                latencies.append(time.perf_counter() - t0)
                errors += sum(1 for status, _ in answers if status != 200)
        finally:
            for _, w in conns:
                w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return summarise(latencies, wall, errors)


def summarise(latencies: list[float], wall: float, errors: int) -> dict[str, Any]:
    lat = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "rps": len(latencies) / wall,
        "errors": errors,
        "n": len(latencies),
        "latencies": latencies,
        "wall": wall,
    }


def run(coroutine):  # noqa: ANN001, ANN201
    """asyncio.run on uvloop when available (a cheaper event loop for the load generator)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/saescope_bench_api"))
    parser.add_argument("--model-shape", choices=sorted(SHAPES), default="builtin", help="The benchmark model.")
    parser.add_argument("--d-sae", type=int, default=None, help="SAE width (default: the model shape's).")
    parser.add_argument("--contexts", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=400, help="Requests per read measurement.")
    parser.add_argument("--inference-requests", type=int, default=64, help="Requests per inference measurement.")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (server and floor).")
    parser.add_argument("--only", nargs="*", default=None, help="Measure only loads whose name contains a word.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = SHAPES[args.model_shape]
    args.d_sae = args.d_sae or shape.d_sae
    work = args.work / args.model_shape
    work.mkdir(parents=True, exist_ok=True)

    root = build_atlas(work, shape, args.d_sae, args.contexts)
    texts = texts_of_128_tokens(root, 16)
    floor = Floor(root, texts, shape)
    floor.run(50)
    before = floor.medians()

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(root), str(port), str(args.threads), str(args.workers)])
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        import urllib.request

        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start")
                time.sleep(0.2)
        d_sae = args.d_sae
        order = random.Random(0).sample(range(d_sae), d_sae)  # distinct features first: no repeats
        feature = lambda i: order[i % d_sae]  # noqa: E731
        base = f"/api/v1/dictionaries/{DICT_ID}/features"
        loads = {
            "health": lambda i: [Request("GET", "/api/v1/health")],
            "feature detail": lambda i: [Request("GET", f"{base}/{feature(i)}")],
            "examples": lambda i: [Request("GET", f"{base}/{feature(i)}/examples", gzip=True)],
            "detail + examples": lambda i: [
                Request("GET", f"{base}/{feature(i)}"),
                Request("GET", f"{base}/{feature(i)}/examples", gzip=True),
            ],
            "feature page, plain": lambda i: [Request("GET", f"{base}/{feature(i)}/page")],
            "feature page, gzip": lambda i: [Request("GET", f"{base}/{feature(i)}/page", gzip=True)],
            "inference 128 tok": lambda i: [
                Request("POST", "/api/v1/inference/activations",
                        {"text": texts[i % len(texts)], "dictionaries": [DICT_ID], "top_k": 5})
            ],
        }
        run(run_load(port, lambda i: loads["inference 128 tok"](i) + loads["detail + examples"](i), 8, 1))
        for name, make in loads.items():
            if args.only and not any(word in name for word in args.only):
                continue
            n = args.inference_requests if name.startswith("inference") else args.requests
            results[name] = {}
            for c in args.clients:
                if name.startswith("inference") and c == 1:
                    # interleave with the in-process floor (rounds of requests, then of raw forwards), so
                    # drifting machine load weighs on both sides of the ratio alike
                    rounds = 10
                    parts = []
                    floor.raw_times, floor.engine_times, floor.paced_times = [], [], []
                    for _ in range(rounds):
                        parts.append(run(run_load(port, make, max(1, n // rounds), 1)))
                        floor.run(max(1, n // rounds))
                        floor.run_paced(max(1, n // rounds), parts[-1]["p50_ms"] / 1000)
                    results[name][c] = summarise(
                        [x for p in parts for x in p["latencies"]], sum(p["wall"] for p in parts),
                        sum(p["errors"] for p in parts),
                    )
                else:
                    results[name][c] = run(run_load(port, make, n, c))
    finally:
        server.terminate()
        server.wait(timeout=30)
    interleaved = floor.medians() if floor.raw_times else before

    load = os.getloadavg()[0]
    print(f"\natlas: {args.model_shape} model, hook {shape.hook}, d_sae {args.d_sae}, {args.contexts} contexts x 128 tokens, SQLite; torch threads {args.threads}; "
          f"{args.workers} uvicorn worker(s); machine {os.cpu_count()} cores, load average {load:.1f} at the end")
    print(f"floor (in-process, 128 tokens): raw model+SAE forward {interleaved['raw_forward'] * 1000:.2f} ms; "
          f"Engine.top_features {interleaved['engine_direct'] * 1000:.2f} ms (medians, interleaved with the 1-client "
          f"inference requests; before the server started: {before['raw_forward'] * 1000:.2f} / "
          f"{before['engine_direct'] * 1000:.2f} ms)")
    print(f"\n{'endpoint':24s} {'clients':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>8s} {'errors':>6s}")
    for name, per in results.items():
        for c, r in per.items():
            print(f"{name:24s} {c:7d} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps']:8.1f} {r['errors']:6d}")
    page32 = results.get("feature page, gzip", {}).get(32)
    inf1 = results.get("inference 128 tok", {}).get(1)
    print()
    if page32:
        print(f"feature page (one request, gzip as browsers ask) p99 at 32 clients: {page32['p99_ms']:.1f} ms "
              f"(target < 25 ms)")
    if inf1:
        overhead = inf1["p50_ms"] - interleaved["raw_forward"] * 1000
        print(f"live inference p50 at 1 client: {inf1['p50_ms']:.2f} ms, {overhead:.2f} ms beyond the raw forward "
              f"(target < 2 ms)")
        print(f"live inference p50 at 1 client / raw forward: {inf1['p50_ms'] / 1000 / interleaved['raw_forward']:.2f}x; "
              f"/ Engine direct: {inf1['p50_ms'] / 1000 / interleaved['engine_direct']:.2f}x")
        if "raw_paced" in interleaved:
            print(f"  the raw forward paced like the 1-client requests (idle between forwards as in the server) took "
                  f"{interleaved['raw_paced'] * 1000:.2f} ms: p50 / paced raw forward {inf1['p50_ms'] / 1000 / interleaved['raw_paced']:.2f}x")


if __name__ == "__main__":
    main()
