"""The interpretability comparison page (#/scores/<hook>) in headless Chromium on an explained atlas:
bar charts with 95% CIs per dictionary, the summary table, the score-vs-cosine scatter, the search
across dictionaries, and detection/fuzzing on the feature page."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def scores_server(frontend_atlas: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server on a copy of the frontend atlas explained LLM-free."""
    import uvicorn

    from saescope.api.app import create_app
    from saescope.api.settings import ApiSettings
    from saescope.atlas_layout import AtlasLayout
    from saescope.interpret.config import ExplainConfig
    from saescope.pipeline.explain import explain_atlas

    root = tmp_path_factory.mktemp("scores_atlas") / "atlas"
    shutil.copytree(frontend_atlas.root, root)
    explain_atlas(root, None, None, "lookup", ["simulation", "detection", "fuzzing"],
                  ExplainConfig(n_contexts=96, n_top=8, n_random=8, n_random_activating=4), progress=False)
    app = create_app(ApiSettings(store_url=AtlasLayout(root=root).sqlite_url, atlas_root=root, device="cpu",
                                 torch_threads=1, frontend_dir=REPO_ROOT / "frontend"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_the_scores_page_compares_every_dictionary_of_the_hook_point(page: Any, scores_server: str,
                                                                      screenshot_dir: Any) -> None:
    import httpx

    hook = httpx.get(f"{scores_server}/api/v1/dictionaries").json()[0]["hook_name"]
    data = httpx.get(f"{scores_server}/api/v1/interpretability", params={"hook_name": hook}).json()
    page.goto(f"{scores_server}/#/scores/{hook}")
    page.wait_for_selector(".score-bars .main-svg")
    page.wait_for_selector(".score-scatter .main-svg, .score-scatter + p.empty, p.empty", timeout=60_000)
    bars = page.evaluate("[...document.querySelectorAll('.score-bars')].map(el => el.data[0])")
    assert len(bars) == 3
    expected = {d["dictionary_id"]: next(s for s in d["runs"][0]["summary"]
                                         if s["scorer"] == "simulation" and s["variant"] == "top_and_random")
                for d in data["dictionaries"]}
    shown = dict(zip(bars[0]["x"], bars[0]["y"]))
    assert shown == pytest.approx({k: v["mean"] for k, v in expected.items() if v["mean"] is not None})
    assert all(e >= 0 for e in bars[0]["error_y"]["array"])
    assert page.locator(".scores-table tbody tr").count() == sum(len(d["runs"][0]["summary"]) for d in data["dictionaries"])
    assert page.locator(".judge-bars").count() == 2
    assert page.locator(".mainnav a[data-nav=scores]").get_attribute("aria-current") == "page"
    page.screenshot(path=str(screenshot_dir / "scores.png"), full_page=True)

    page.fill(".search-all input", "fires on the tokens")
    page.wait_for_selector(".search-table tbody tr")
    shown_dicts = set(page.locator(".search-table tbody tr td:nth-child(2)").all_inner_texts())
    assert len(shown_dicts) > 1
    page.locator(".search-table tbody tr a").first.click()
    page.wait_for_selector(".explanations td.wide")
    headers = page.locator(".explanations th").all_inner_texts()
    assert "detection" in headers and "fuzzing" in headers
