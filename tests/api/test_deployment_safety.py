"""Safe on a shared server: the API key, the Host allow-list, static files kept inside their folder,
the 413 that urllib can read, and connections whose headers never finish being closed."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api_atlas import make_settings

API = "/api/v1"
FEATURE = {"text": "x = 1\n", "dictionary": "mlp-sae", "index": 0}
KEY = "s3cret-key"


def _client(atlas, **security) -> TestClient:
    from saescope.api.app import create_app
    from saescope.api.settings import ApiSecurity

    settings = make_settings(atlas).model_copy(update={"security": ApiSecurity(**security)})
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _error(res, status: int, field: str | None = None) -> dict:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error", "field"} and body["error"]
    if field is not None:
        assert body["field"] == field
    return body


# ------------------------------------------------------------------ API key


@pytest.fixture(scope="module")
def keyed_client(random_sae_atlas):
    with _client(random_sae_atlas, api_key=KEY) as c:
        yield c


@pytest.mark.parametrize("path, payload", [
    ("/inference/feature", FEATURE),
    ("/inference/activations", {"text": "x = 1\n", "dictionaries": ["mlp-sae"]}),
    ("/steer", {"prompt": "a", "interventions": [{"dictionary": "mlp-sae", "index": 0, "strength": 1}], "n_tokens": 2}),
    ("/ablate", FEATURE),
])
def test_live_endpoints_answer_401_without_the_api_key(keyed_client, path, payload):
    res = keyed_client.post(API + path, json=payload)
    _error(res, 401, "header.authorization")
    assert res.headers["www-authenticate"] == "Bearer"
    _error(keyed_client.post(API + path, json=payload, headers={"Authorization": "Bearer wrong"}), 401)
    _error(keyed_client.post(API + path, json=payload, headers={"X-API-Key": KEY + "x"}), 401)


def test_live_endpoints_accept_the_key_as_bearer_token_or_x_api_key(keyed_client):
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"authorization": f"bearer {KEY}"}):
        res = keyed_client.post(f"{API}/inference/feature", json=FEATURE, headers=headers)
        assert res.status_code == 200, res.text


def test_read_endpoints_stay_open_when_only_live_ones_are_protected(keyed_client):
    assert keyed_client.get(f"{API}/dictionaries").status_code == 200
    assert keyed_client.get(f"{API}/dictionaries/mlp-sae/features/3/page").status_code == 200


def test_protect_reads_puts_every_api_endpoint_behind_the_key(random_sae_atlas):
    with _client(random_sae_atlas, api_key=KEY, protect_reads=True) as c:
        _error(c.get(f"{API}/dictionaries"), 401)
        _error(c.get(f"{API}/dictionaries/mlp-sae/features/3/page"), 401)
        assert c.get(f"{API}/dictionaries", headers={"X-API-Key": KEY}).status_code == 200
        assert c.get("/openapi.json").status_code == 200  # the documentation stays readable


# ------------------------------------------------------------------ Host allow-list


@pytest.fixture(scope="module")
def host_checked_client(random_sae_atlas):
    from saescope.api.request_guard import default_allowed_hosts

    with _client(random_sae_atlas, allowed_hosts=default_allowed_hosts("127.0.0.1", ["atlas.example.org"])) as c:
        yield c


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.evil.example"])
def test_an_unlisted_host_name_is_refused(host_checked_client, host):
    _error(host_checked_client.get(f"{API}/dictionaries", headers={"Host": host}), 400, "header.host")
    _error(host_checked_client.get("/", headers={"Host": host}), 400, "header.host")


@pytest.mark.parametrize("host", [
    "localhost:8000", "LOCALHOST", "127.0.0.1:8000", "[::1]:8000", "10.1.2.3", "app.localhost",
    "atlas.example.org", "atlas.example.org.:443",
])
def test_localhost_names_ip_addresses_and_listed_names_are_served(host_checked_client, host):
    assert host_checked_client.get(f"{API}/dictionaries", headers={"Host": host}).status_code == 200


def test_default_allowed_hosts_add_a_bound_name_but_not_a_wildcard_address():
    from saescope.api.request_guard import default_allowed_hosts, host_allowed

    assert "atlas.lan" in default_allowed_hosts("atlas.lan")
    assert default_allowed_hosts("0.0.0.0") == default_allowed_hosts("127.0.0.1")
    assert not host_allowed("evil.example", default_allowed_hosts("0.0.0.0"))
    assert host_allowed("a.b.example", ["*.example"]) and not host_allowed("example", ["*.example"])
    assert host_allowed("anything.example", ["*"])


# ------------------------------------------------------------------ static files


@pytest.fixture(scope="module")
def custom_frontend(tmp_path_factory) -> Path:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("do not serve")
    (outside / "dir").mkdir()
    (outside / "dir" / "secret.txt").write_text("do not serve")
    folder = tmp_path_factory.mktemp("frontend")
    (folder / "index.html").write_text("<html>atlas</html>")
    (folder / "app.js").write_text("console.log(1)")
    (folder / "css").mkdir()
    (folder / "css" / "app.css").write_text("body {}")
    os.symlink(outside / "secret.txt", folder / "leak.txt")
    os.symlink(outside / "dir", folder / "leakdir")
    os.symlink(outside / "secret.txt", folder / "css" / "leak.css")
    os.symlink(folder / "app.js", folder / "alias.js")  # inside the folder: served
    return folder


@pytest.fixture(scope="module")
def frontend_client(random_sae_atlas, custom_frontend):
    from saescope.api.app import create_app

    settings = make_settings(random_sae_atlas).model_copy(update={"frontend_dir": custom_frontend})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_the_custom_frontend_folder_is_served(frontend_client):
    assert frontend_client.get("/").text == "<html>atlas</html>"
    assert frontend_client.get("/app.js").text == "console.log(1)"
    assert frontend_client.get("/alias.js").text == "console.log(1)"
    assert frontend_client.get("/css/app.css").text == "body {}"


@pytest.mark.parametrize("path", ["/leak.txt", "/leakdir/secret.txt", "/css/leak.css"])
def test_symlinks_out_of_the_frontend_folder_are_not_followed(frontend_client, path):
    res = frontend_client.get(path)
    assert res.status_code == 404 and "do not serve" not in res.text


@pytest.mark.parametrize("path", ["/css/app.css%00.js", "/app.js%00", "/%00", "/vendor/plotly.min.js%00"])
def test_a_nul_in_a_static_path_is_404(frontend_client, path):
    _error(frontend_client.get(path), 404, "path")


# ------------------------------------------------------------------ a real server


@contextmanager
def running_server(app, **security) -> Iterator[int]:
    """Serve `app` with saescope's uvicorn configuration on 127.0.0.1 (an ephemeral port); yields the port."""
    import uvicorn

    from saescope.api.server import uvicorn_config
    from saescope.api.settings import ApiSecurity

    sec = ApiSecurity(**security)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, sec.header_timeout_s, sec.keep_alive_s,
                                           log_level="error"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def served_app(random_sae_atlas):
    from saescope.api.app import create_app

    return create_app(make_settings(random_sae_atlas))


def test_urllib_reads_the_413_of_a_body_over_the_limit(served_app):
    limit = served_app.state.saescope.settings.limits.max_body_bytes
    with running_server(served_app) as port:
        # several tries and sizes: without draining, urllib gets a reset instead of the 413 for some
        # 3 MiB bodies and for most larger ones
        for mib, path in [(3, "/inference/activations"), (3, "/steer"), (3, "/ablate"), (8, "/steer"), (8, "/steer")]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{API}{path}", data=b'{"text": "' + b"x" * (mib << 20) + b'"}',
                headers={"Content-Type": "application/json"}, method="POST",
            )
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=30)
            assert caught.value.code == 413
            answer = json.loads(caught.value.read())
            assert answer["field"] == "body" and str(limit) in answer["error"]
        # the server goes on answering
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{API}/dictionaries", timeout=30) as res:
            assert res.status == 200


def _closed_by_server(conn: socket.socket, wait_s: float) -> bool:
    """Whether the server closes `conn` (EOF or reset) within `wait_s` seconds."""
    conn.settimeout(wait_s)
    try:
        return conn.recv(1024) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_a_connection_whose_headers_never_finish_is_closed(served_app):
    with running_server(served_app, header_timeout_s=0.5, keep_alive_s=30) as port:
        silent = socket.create_connection(("127.0.0.1", port))
        trickling = socket.create_connection(("127.0.0.1", port))
        trickling.sendall(b"GET /api/v1/dictionaries HTTP/1.1\r\nHost: localhost\r\n")
        started = time.time()
        for _ in range(4):  # a header line now and then, never the blank line that ends them
            time.sleep(0.2)
            try:
                trickling.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        assert _closed_by_server(trickling, 5.0)
        assert _closed_by_server(silent, 5.0)
        assert time.time() - started < 5.0
        # a complete request is answered, and the connection then waits for the next one (keep-alive)
        ok = socket.create_connection(("127.0.0.1", port))
        ok.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        ok.settimeout(10)
        assert ok.recv(65536).startswith(b"HTTP/1.1 200")
        for conn in (silent, trickling, ok):
            conn.close()
