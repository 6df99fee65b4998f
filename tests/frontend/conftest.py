"""Fixtures for the browser tests: a real tiny atlas, a real uvicorn server, a real headless Chromium.

The atlas is the suite-wide `demo_atlas` fixture (tests/conftest.py: the demo pipeline at tiny size),
or a folder named by SAESCOPE_FRONTEND_TEST_ATLAS. The server is `create_app(ApiSettings(...))` under
uvicorn on a free 127.0.0.1 port, in a thread of the test process. The browser is Debian's
/usr/bin/chromium driven by Playwright (install it with scripts/install_browser.sh); without it every
browser test is skipped with that advice.
Each test gets a fresh browser context and page whose console errors and uncaught exceptions fail
the test, unless the test allows a pattern with `console_errors.allow(...)`.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/install_browser.sh (as root) to install Debian's chromium")
    return CHROMIUM


@pytest.fixture(scope="session")
def frontend_atlas(request: pytest.FixtureRequest, chromium_path: Path) -> Any:
    """An object with `.root` (atlas folder) and `.store_url` (SQLite store) of a real tiny atlas.

    Set SAESCOPE_FRONTEND_TEST_ATLAS to the folder of an atlas built earlier (e.g. by `saescope demo
    --tiny`) to skip building one while iterating on the frontend.
    """
    prebuilt = os.environ.get("SAESCOPE_FRONTEND_TEST_ATLAS")
    if prebuilt:
        from saescope.atlas_layout import AtlasLayout

        layout = AtlasLayout(root=Path(prebuilt))
        return SimpleNamespace(root=layout.root, store_url=layout.sqlite_url)
    return request.getfixturevalue("demo_atlas")


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="session")
def live_server(frontend_atlas: Any) -> Iterator[str]:
    """Base URL of a real uvicorn server running the saescope app on the tiny atlas."""
    import uvicorn

    from saescope.api.app import create_app
    from saescope.api.settings import ApiSettings

    app = create_app(
        ApiSettings(
            store_url=frontend_atlas.store_url,
            atlas_root=frontend_atlas.root,
            device="cpu",
            torch_threads=1,
            frontend_dir=REPO_ROOT / "frontend",
        )
    )
    sock = _free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="frontend-uvicorn")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the uvicorn server for the browser tests did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="session")
def api_client(live_server: str) -> Iterator[Any]:
    """httpx client on the same server, to compare what the page shows with what the API says."""
    import httpx

    with httpx.Client(base_url=f"{live_server}/api/v1", timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def browser(chromium_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        yield b
        b.close()


class ConsoleErrors:
    """Console errors and uncaught page exceptions seen by one page."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [m for m in self.messages if not any(p.search(m) for p in self.allowed)]


@pytest.fixture()
def console_errors() -> ConsoleErrors:
    return ConsoleErrors()


def _open_page(browser: Any, console_errors: ConsoleErrors, width: int, height: int) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    context.set_default_timeout(60_000)  # the first live request loads the model
    page = context.new_page()
    page.on("console", lambda m: console_errors.messages.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.messages.append(f"uncaught: {e}"))
    try:
        yield page
    finally:
        context.close()
    unexpected = console_errors.unexpected()
    assert not unexpected, f"console errors in the page: {unexpected}"


@pytest.fixture()
def page(browser: Any, live_server: str, console_errors: ConsoleErrors) -> Iterator[Any]:
    """A fresh 1280x900 page; the test fails on any unexpected console error."""
    yield from _open_page(browser, console_errors, 1280, 900)


@pytest.fixture()
def narrow_page(browser: Any, live_server: str, console_errors: ConsoleErrors) -> Iterator[Any]:
    """A fresh 420x900 page (a phone-sized window)."""
    yield from _open_page(browser, console_errors, 420, 900)


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
