"""Benchmark: `saescope serve` with several uvicorn workers on PostgreSQL against one worker on SQLite.

One atlas (`--atlas`; built with `saescope demo --tiny --no-serve` when missing) is published twice:
its own SQLite store, and a fresh PostgreSQL database named for the run (`saescope_bench_<pid>` on
`--pg-server`, filled by `export-atlas` + `import-atlas --db`, dropped at the end). Four real
`saescope serve` processes run side by side on 127.0.0.1 (SQLite and PostgreSQL, 1 and `--workers`
worker processes, torch on one thread each); the load generator of `bench_api.py` (a minimal HTTP/1.1
client on uvloop, each client on its own keep-alive connection) requests feature pages (`/page`,
gzip, what the dashboard loads) and feature records (`/features/{i}`, JSON through FastAPI) of every
dictionary in random order at `--clients` concurrent clients. The servers take turns, round by round,
so machine load drifts on all of them alike; the figures are page loads/s and p50/p99 over all rounds.

    .venv/bin/python benchmarks/bench_serve_workers.py                     # 3 rounds of 2000 requests
    .venv/bin/python benchmarks/bench_serve_workers.py --workers 4 --rounds 5 --requests 4000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import Request, free_port, run, run_load, summarise  # noqa: E402

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def ensure_atlas(atlas: Path) -> None:
    """Build the tiny demo atlas at `atlas` unless its store exists."""
    if (atlas / "atlas.db").is_file():
        return
    print(f"building the tiny demo atlas in {atlas} ...", flush=True)
    subprocess.run([sys.executable, "-m", "saescope.cli", "demo", "--tiny", "--no-serve", "--atlas", str(atlas)],
                   check=True, stdout=subprocess.DEVNULL)


def create_database(server: str, name: str) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{server}/{name}"


def drop_database(server: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def publish_to_postgres(atlas: Path, work: Path, url: str) -> Path:
    """The atlas copied into `work/served` with its rows in the PostgreSQL database at `url`."""
    from saescope.pipeline.portable import export_atlas, import_atlas

    export_atlas(atlas, work / "fileset", store_url=None)
    import_atlas(work / "fileset", work / "served", store_url=url)
    return work / "served"


class Server:
    """One `saescope serve` child process on an ephemeral port."""

    def __init__(self, name: str, atlas: Path, db: str | None, workers: int) -> None:
        self.name, self.port = name, free_port()
        command = [sys.executable, "-m", "saescope.cli", "serve", "--atlas", str(atlas), "--port", str(self.port),
                   "--workers", str(workers), "--torch-threads", "1",
                   "--allowed-host", "bench"]  # the Host header of bench_api's requests
        self.process = subprocess.Popen(command + (["--db", db] if db else []), stdout=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/health", timeout=2).read()
                return
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise SystemExit(f"{name}: the server did not start")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


def feature_targets(port: int) -> list[tuple[str, int]]:
    """(dictionary id, feature index) of every feature of every dictionary, in a fixed random order."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/dictionaries", timeout=10) as res:
        dictionaries = json.loads(res.read())
    targets = [(d["id"], i) for d in dictionaries for i in range(int(d["d_sae"]))]
    random.Random(0).shuffle(targets)
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, default=Path("/tmp/atlas17a"))
    parser.add_argument("--pg-server", default=PG_SERVER, help="PostgreSQL server URL without a database name")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the multi-worker servers")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000, help="requests per server per round and load")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_atlas(args.atlas)

    db_name = f"saescope_bench_{os.getpid()}"
    url = create_database(args.pg_server, db_name)
    servers: list[Server] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            served = publish_to_postgres(args.atlas, Path(tmp), url)
            servers = [
                Server("SQLite, 1 worker", args.atlas, None, 1),
                Server(f"SQLite, {args.workers} workers", args.atlas, None, args.workers),
                Server("PostgreSQL, 1 worker", served, url, 1),
                Server(f"PostgreSQL, {args.workers} workers", served, url, args.workers),
            ]
            targets = feature_targets(servers[0].port)
            base = "/api/v1/dictionaries"
            loads: dict[str, Callable[[int], list[Request]]] = {
                "feature page, gzip": lambda i: [
                    Request("GET", f"{base}/{targets[i % len(targets)][0]}/features/{targets[i % len(targets)][1]}/page", gzip=True)
                ],
                "feature record (JSON)": lambda i: [
                    Request("GET", f"{base}/{targets[i % len(targets)][0]}/features/{targets[i % len(targets)][1]}")
                ],
            }
            parts: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for server in servers:  # warm-up: connections, caches, the first pages
                for make in loads.values():
                    run(run_load(server.port, make, 200, args.clients))
            for r in range(args.rounds):
                for load, make in loads.items():
                    order = servers if r % 2 == 0 else servers[::-1]
                    for server in order:
                        parts.setdefault((load, server.name), []).append(
                            run(run_load(server.port, make, args.requests, args.clients)))
                print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        for server in servers:
            server.stop()
        drop_database(args.pg_server, db_name)

    print(f"\natlas {args.atlas} ({len(targets)} features), {args.clients} clients, {args.rounds} rounds x "
          f"{args.requests} requests per server and load; machine {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"\n{'load':24s} {'server':26s} {'pages/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>6s}")
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for (load, name), runs in parts.items():
        r = summarise([x for p in runs for x in p["latencies"]], sum(p["wall"] for p in runs),
                      sum(p["errors"] for p in runs))
        results[(load, name)] = r
        print(f"{load:24s} {name:26s} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['errors']:6d}")
    if any(r["errors"] for r in results.values()):
        print("\nSOME REQUESTS FAILED (errors column): the figures above are not comparable")
    multi, single = f"PostgreSQL, {args.workers} workers", "SQLite, 1 worker"
    print()
    for load in loads:
        a, b = results[(load, multi)], results[(load, single)]
        print(f"{load}: {multi} / {single}: {a['rps'] / b['rps']:.2f}x pages/s, p99 {a['p99_ms']:.1f} vs "
              f"{b['p99_ms']:.1f} ms")


if __name__ == "__main__":
    main()
