"""End to end: the demo pipeline builds a tiny atlas, a second build reuses it, and a real uvicorn
server answers over HTTP with feature pages whose highlighted tokens agree with live inference."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served_atlas(demo_atlas) -> Iterator[str]:
    """Base URL of a real uvicorn server on the tiny atlas, in a background thread."""
    import uvicorn

    from saescope.api.app import ApiSettings, create_app

    app = create_app(ApiSettings(store_url=demo_atlas.store_url, atlas_root=demo_atlas.root, device="cpu"))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        pytest.fail("the server did not start within 60 s")
    yield base
    server.should_exit = True
    thread.join(timeout=10)


def test_build_report_has_model_loss_below_unigram_and_real_sae_metrics(demo_atlas) -> None:
    report = demo_atlas.report
    assert report.lm.heldout_loss < report.lm.unigram_heldout_loss
    ids = [d.id for d in report.dictionaries]
    assert ids == ["relu-64", "relu-256", "neurons"]
    for d in report.dictionaries[:2]:
        assert 0 < d.metrics["l0"] < d.d_sae
        assert 0.0 < d.metrics["explained_variance"] <= 1.0
        assert d.metrics["ce_spliced"] < d.metrics["ce_zero_ablation"]
    neurons = report.dictionaries[2].metrics
    assert neurons["explained_variance"] == pytest.approx(1.0, abs=1e-4)


def test_atlas_folders_are_in_saelens_format(demo_atlas) -> None:
    for name in ("relu-64", "relu-256", "neurons"):
        folder = demo_atlas.root / "dictionaries" / name
        for file in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "metrics.json"):
            assert (folder / file).is_file(), f"{folder}/{file} missing"


def test_second_build_reuses_model_dictionaries_and_store(demo_atlas, tmp_path: Path) -> None:
    from saescope.pipeline.build import build_atlas
    from saescope.pipeline.build_config import builtin_tiny_preset

    copy = tmp_path / "atlas"
    shutil.copytree(demo_atlas.root, copy)
    config = builtin_tiny_preset(device="cpu", sae_tokens=30_000)
    before = (copy / "atlas.db").stat().st_mtime_ns
    report = build_atlas(copy, config)
    assert report.lm.reused
    assert all(d.reused for d in report.dictionaries)
    assert report.precompute_reused
    assert (copy / "atlas.db").stat().st_mtime_ns == before
    # a store without pre-rendered pages (older saescope, interrupted fill) gets them on reuse
    from sqlalchemy import text

    from saescope.store.database import create_database
    from saescope.store.pages import missing_pages

    engine = create_database(f"sqlite:///{copy / 'atlas.db'}")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE feature_pages"))
    assert build_atlas(copy, config).precompute_reused
    assert missing_pages(engine) == {}
    engine.dispose()


def test_changed_weights_make_the_store_stale_and_get_republished(demo_atlas, tmp_path: Path) -> None:
    from saescope.pipeline.build import store_is_current
    from saescope.atlas_layout import AtlasLayout

    copy = tmp_path / "atlas"
    shutil.copytree(demo_atlas.root, copy)
    layout = AtlasLayout(root=copy)
    ids = ["relu-64", "relu-256", "neurons"]
    assert store_is_current(layout.sqlite_url, copy, ids)
    weights = copy / "dictionaries" / "neurons" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    assert not store_is_current(layout.sqlite_url, copy, ids)
    assert not store_is_current(layout.sqlite_url, copy, ids + ["relu-9999"])


def test_http_feature_list_page_and_examples(served_atlas: str) -> None:
    dictionaries = httpx.get(f"{served_atlas}/api/v1/dictionaries").json()
    assert {d["id"] for d in dictionaries} == {"relu-64", "relu-256", "neurons"}
    page = httpx.get(
        f"{served_atlas}/api/v1/dictionaries/relu-256/features", params={"sort": "density", "order": "desc", "limit": 5}
    ).json()
    assert page["total"] == 256
    densities = [f["density"] for f in page["items"]]
    assert densities == sorted(densities, reverse=True) and densities[0] > 0
    index = page["items"][0]["index"]
    detail = httpx.get(f"{served_atlas}/api/v1/dictionaries/relu-256/features/{index}").json()
    assert sum(detail["histogram"]["counts"]) > 0
    assert len(detail["logits_top"]) == 10
    examples = httpx.get(
        f"{served_atlas}/api/v1/dictionaries/relu-256/features/{index}/examples", params={"group": "top"}
    ).json()
    assert examples and max(examples[0]["activations"]) == pytest.approx(examples[0]["max_activation"], rel=1e-4)
    assert examples[0]["activations"][0] == 0.0  # BOS is never an activating token
    home = httpx.get(f"{served_atlas}/")
    assert home.status_code == 200 and "<html" in home.text.lower()


def test_highlighted_tokens_of_a_feature_page_match_live_inference(served_atlas: str) -> None:
    """The top example's per-token activations equal what the live model computes on the same text."""
    page = httpx.get(
        f"{served_atlas}/api/v1/dictionaries/relu-64/features", params={"sort": "max_activation", "order": "desc"}
    ).json()
    checked = 0
    for item in page["items"][:5]:
        examples = httpx.get(
            f"{served_atlas}/api/v1/dictionaries/relu-64/features/{item['index']}/examples", params={"group": "top"}
        ).json()
        example = examples[0]
        text = "".join(example["tokens"][1:])  # position 0 is BOS; the server prepends its own
        live = httpx.post(
            f"{served_atlas}/api/v1/inference/feature",
            json={"text": text, "dictionary": "relu-64", "index": item["index"]},
        ).json()
        if live["token_ids"] != example["token_ids"]:
            continue  # a window cut mid-word may re-tokenise differently; compare only exact round trips
        assert live["activations"] == pytest.approx(example["activations"], abs=1e-3)
        peak = max(range(len(example["activations"])), key=example["activations"].__getitem__)
        assert max(range(len(live["activations"])), key=live["activations"].__getitem__) == peak
        checked += 1
    assert checked >= 3, "too few top examples round-tripped through the tokenizer to compare"


def test_bad_requests_get_4xx_json_naming_the_field(served_atlas: str) -> None:
    r = httpx.post(f"{served_atlas}/api/v1/inference/feature", json={"text": "", "dictionary": "relu-64", "index": 0})
    assert 400 <= r.status_code < 500 and "text" in (r.json().get("field") or "")
    r = httpx.get(f"{served_atlas}/api/v1/dictionaries/nope/features/0")
    assert r.status_code == 404 and r.json()["error"]
