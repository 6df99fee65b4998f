"""`saescope serve --workers N`: several uvicorn worker processes serve one atlas, read-only, from
SQLite or PostgreSQL, answer the compose health check, and stop together.

Each test starts the real command (`python -m saescope.cli serve ...`) on an ephemeral port against
the tiny demo atlas (`demo_atlas` in tests/conftest.py) and reads it over HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test starts real server processes

REPO = Path(__file__).resolve().parents[2]
API = "/api/v1"
FEATURES = range(6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def is_worker(pid: int) -> bool:
    try:
        return b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def get_json(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as res:
        assert res.status == 200
        return json.loads(res.read())


@contextmanager
def serving(*options: str, env: dict[str, str] | None = None) -> Iterator[tuple[int, subprocess.Popen]]:
    """`saescope serve OPTIONS --port P` as a child process, until its health route answers."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "saescope.cli", "serve", *options, "--host", "127.0.0.1", "--port", str(port),
         "--torch-threads", "1"],
        env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                get_json(port, f"{API}/health")
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    child.kill()
                    pytest.fail(f"the server did not start: {child.communicate()[0][-3000:]}")
                time.sleep(0.2)
        yield port, child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def feature_answers(port: int) -> dict[str, object]:
    """The dictionary list and the records of the first features of every dictionary."""
    dictionaries = get_json(port, f"{API}/dictionaries")
    ids = sorted(d["id"] for d in dictionaries)
    out: dict[str, object] = {"dictionaries": ids}
    for dictionary in ids:
        for index in FEATURES:
            out[f"{dictionary}/{index}"] = get_json(port, f"{API}/dictionaries/{dictionary}/features/{index}")
            get_json(port, f"{API}/dictionaries/{dictionary}/features/{index}/page")
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sqlite_answers(demo_atlas) -> dict[str, object]:
    """What one worker serves from the demo atlas's SQLite store (the reference)."""
    with serving("--atlas", str(demo_atlas.root), "--workers", "1") as (port, _):
        return feature_answers(port)


def test_two_workers_serve_a_sqlite_atlas_read_only(demo_atlas, sqlite_answers):
    db = demo_atlas.root / "atlas.db"
    before = sha256(db)
    with serving("--atlas", str(demo_atlas.root), "--workers", "2") as (port, child):
        workers = [pid for pid in children_of(child.pid) if is_worker(pid)]
        assert len(workers) == 2
        assert feature_answers(port) == sqlite_answers
    assert child.returncode is not None
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists() and is_worker(pid)]  # stopped together
    assert sha256(db) == before


def test_the_workers_count_comes_from_the_environment(demo_atlas):
    with serving("--atlas", str(demo_atlas.root), env={"SAESCOPE_WORKERS": "2"}) as (port, child):
        assert len([pid for pid in children_of(child.pid) if is_worker(pid)]) == 2
        assert get_json(port, f"{API}/health")


def test_the_compose_health_check_passes_against_a_multi_worker_server(demo_atlas):
    import yaml

    test = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["api"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    with serving("--atlas", str(demo_atlas.root), "--workers", "2") as (port, _):
        argv = [sys.executable, *(arg.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for arg in test[2:])]
        assert subprocess.run(argv, timeout=30).returncode == 0
    assert subprocess.run(argv, timeout=30, capture_output=True).returncode != 0  # and fails once it stopped


def test_worker_processes_close_connections_whose_headers_never_finish(demo_atlas):
    with serving("--atlas", str(demo_atlas.root), "--workers", "2", "--header-timeout", "0.5",
                 "--keep-alive", "30") as (port, _):
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]  # spread over the workers
        started = time.monotonic()
        for conn in silent:
            conn.settimeout(10)
            try:
                assert conn.recv(1024) == b""
            except ConnectionResetError:
                pass
            conn.close()
        assert time.monotonic() - started < 10
        assert get_json(port, f"{API}/health")


@pytest.mark.postgres
def test_two_workers_serve_the_same_answers_from_postgresql(demo_atlas, sqlite_answers, pg_url, tmp_path):
    from saescope.pipeline.portable import export_atlas, import_atlas

    export_atlas(demo_atlas.root, tmp_path / "fileset", store_url=None)
    import_atlas(tmp_path / "fileset", tmp_path / "served", store_url=pg_url)
    assert not (tmp_path / "served" / "atlas.db").exists()
    with serving("--atlas", str(tmp_path / "served"), "--db", pg_url, "--workers", "2") as (port, child):
        assert len([pid for pid in children_of(child.pid) if is_worker(pid)]) == 2
        assert feature_answers(port) == sqlite_answers


@pytest.mark.parametrize("given, env", [(["--workers", "0"], {}), ([], {"SAESCOPE_WORKERS": "many"})])
def test_a_bad_worker_count_is_one_clear_error(tmp_path, given, env):
    result = subprocess.run(
        [sys.executable, "-m", "saescope.cli", "serve", "--atlas", str(tmp_path), *given],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "--workers" in result.stderr and "Traceback" not in result.stderr
