"""The dashboard in a real headless Chromium against a real server on a tiny atlas.

Each test opens one view by its URL, waits for what a user would look at, checks it against what the
API returns for the same question, and saves a screenshot to test-artifacts/screenshots/.
"""

from __future__ import annotations

import csv
import io
import re
import urllib.parse
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


# --- helpers --------------------------------------------------------------------------------------


def first_dictionary(api_client: Any) -> dict[str, Any]:
    """The dictionary the tests browse: the smallest SAE (or the smallest dictionary if none is an SAE)."""
    dictionaries = api_client.get("/dictionaries").json()
    return min(dictionaries, key=lambda d: (d["kind"] != "sae", d["d_sae"], d["id"]))


def live_feature(api_client: Any, dictionary_id: str) -> dict[str, Any]:
    """The live feature with the largest max activation (it has examples and a histogram)."""
    page = api_client.get(
        f"/dictionaries/{dictionary_id}/features",
        params={"sort": "max_activation", "order": "desc", "dead": "false", "limit": 1},
    ).json()
    return page["items"][0]


def shown_indices(page: Any) -> list[int]:
    return [int(i) for i in page.locator(".features-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.index)")]


def wait_for_table(page: Any) -> None:
    page.wait_for_selector(".features-table tbody tr")
    page.wait_for_function("!document.querySelector('.table-wrap.stale')")


def wait_for_result(page: Any, selector: str) -> None:
    """Wait for `selector`, or fail at once with the message of an error box the page shows instead."""
    page.wait_for_selector(f"{selector}, main .error")
    errors = page.locator("main .error")
    if errors.count() and page.locator(selector).count() == 0:
        pytest.fail(f"the page shows an error instead of {selector}: {errors.first.inner_text()}")
    page.wait_for_selector(selector)


def screenshot(page: Any, screenshot_dir: Any, name: str) -> None:
    page.screenshot(path=str(screenshot_dir / f"{name}.png"), full_page=True)


# --- home -----------------------------------------------------------------------------------------


def test_home_lists_every_dictionary_with_its_metrics_and_density_histogram(page, live_server, api_client, screenshot_dir):
    dictionaries = api_client.get("/dictionaries").json()
    page.goto(f"{live_server}/#/")
    page.wait_for_selector(".metrics tbody tr")
    page.wait_for_selector(".density-plot .main-svg")
    rows = page.locator(".metrics tbody tr")
    assert rows.count() == len(dictionaries)
    table_text = page.locator(".metrics").all_inner_texts()
    for d in dictionaries:
        assert any(d["id"] in t for t in table_text)
    assert "L0" in page.locator(".metrics thead").inner_text()
    hooks = {d["hook_name"] for d in dictionaries}
    assert page.locator(".hook-card").count() == len(hooks)
    screenshot(page, screenshot_dir, "home")


# --- feature table --------------------------------------------------------------------------------


def test_feature_table_sorts_when_a_header_is_clicked(page, live_server, api_client, screenshot_dir):
    d = first_dictionary(api_client)
    page.goto(f"{live_server}/#/features/{d['id']}")
    wait_for_table(page)
    assert shown_indices(page)[:5] == [0, 1, 2, 3, 4]

    page.click("th[data-sort=density] button")
    page.wait_for_function("location.hash.includes('sort=density')")
    wait_for_table(page)
    expected = api_client.get(f"/dictionaries/{d['id']}/features", params={"sort": "density", "order": "desc"}).json()
    assert shown_indices(page) == [f["index"] for f in expected["items"]]
    assert page.get_attribute("th[data-sort=density]", "aria-sort") == "descending"

    page.click("th[data-sort=density] button")  # second click flips the order
    page.wait_for_function("location.hash.includes('order=asc')")
    wait_for_table(page)
    expected = api_client.get(f"/dictionaries/{d['id']}/features", params={"sort": "density", "order": "asc"}).json()
    assert shown_indices(page) == [f["index"] for f in expected["items"]]
    screenshot(page, screenshot_dir, "features-sorted")


def test_feature_table_filters_by_density_and_max_activation_and_searches_top_tokens(page, live_server, api_client):
    d = first_dictionary(api_client)
    everything = api_client.get(f"/dictionaries/{d['id']}/features", params={"limit": 500}).json()["items"]
    densities = sorted(f["density"] for f in everything)
    threshold = densities[len(densities) // 2]
    assert len(everything) <= 200, "the tiny atlas should fit one page of 200"
    page.goto(f"{live_server}/#/features/{d['id']}?limit=200")
    wait_for_table(page)

    page.fill("input[data-key=min_density]", repr(threshold))
    page.wait_for_function("location.hash.includes('min_density=')")
    wait_for_table(page)
    expected = {f["index"] for f in everything if f["density"] >= threshold}
    assert set(shown_indices(page)) == expected

    page.fill("input[data-key=min_density]", "")
    max_acts = sorted(f["max_activation"] for f in everything)
    cut = max_acts[len(max_acts) // 2]
    page.fill("input[data-key=min_max_activation]", repr(cut))
    page.wait_for_function("location.hash.includes('min_max_activation=') && !location.hash.includes('min_density=')")
    wait_for_table(page)
    expected = {f["index"] for f in everything if f["max_activation"] >= cut}
    assert set(shown_indices(page)) == expected
    page.fill("input[data-key=min_max_activation]", "")

    tokens = [t for f in everything for t in f["top_tokens"].split()]
    token = next((t for t in tokens if len(t) >= 2 and t.isalnum()), tokens[0])
    page.fill("input[type=search]", token)
    page.wait_for_function(f"location.hash.includes('q={urllib.parse.quote(token)}') && !location.hash.includes('min_max')")
    wait_for_table(page)
    expected = api_client.get(f"/dictionaries/{d['id']}/features", params={"q": token}).json()
    assert expected["total"] >= 1
    assert shown_indices(page) == [f["index"] for f in expected["items"]]


def test_feature_table_sends_its_filters_sort_and_page_to_the_server(page, live_server, api_client):
    d = first_dictionary(api_client)
    everything = api_client.get(f"/dictionaries/{d['id']}/features", params={"limit": 500}).json()["items"]
    cut = sorted(f["max_activation"] for f in everything)[len(everything) // 2]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{live_server}/#/features/{d['id']}?min_max_activation={cut!r}&dead=false&sort=density&order=asc&limit=25")
    wait_for_table(page)

    listed = [urllib.parse.urlsplit(u) for u in requests if urllib.parse.urlsplit(u).path.endswith(f"/dictionaries/{d['id']}/features")]
    assert len(listed) == 1  # one request for the page shown: the server filters, the browser does not scan
    params = dict(urllib.parse.parse_qsl(listed[0].query))
    assert params == {"min_max_activation": repr(cut), "dead": "false", "sort": "density", "order": "asc", "offset": "0", "limit": "25"}
    assert not any(urllib.parse.urlsplit(u).path == "/openapi.json" for u in requests)
    expected = api_client.get(f"/dictionaries/{d['id']}/features", params=params).json()
    assert shown_indices(page) == [f["index"] for f in expected["items"]]


def test_feature_table_pages_and_keyboard_opens_the_selected_feature(page, live_server, api_client):
    d = first_dictionary(api_client)
    page.goto(f"{live_server}/#/features/{d['id']}?limit=25")
    wait_for_table(page)
    assert len(shown_indices(page)) == min(25, d["d_sae"])
    page.click(".next-page")
    page.wait_for_function("location.hash.includes('offset=25')")
    wait_for_table(page)
    assert shown_indices(page)[0] == 25

    page.keyboard.press("ArrowLeft")  # previous page
    page.wait_for_function("!location.hash.includes('offset=')")
    wait_for_table(page)
    page.keyboard.press("j")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("k")
    page.keyboard.press("j")
    assert page.get_attribute(".features-table tbody tr.selected", "data-index") == "2"
    page.keyboard.press("Enter")
    page.wait_for_function(f"location.hash === '#/feature/{d['id']}/2'")
    page.wait_for_selector(".feature-head h1")


def test_feature_table_exports_the_filtered_features_as_csv(page, live_server, api_client):
    d = first_dictionary(api_client)
    page.goto(f"{live_server}/#/features/{d['id']}?dead=false&sort=max_activation&order=desc&limit=25")
    wait_for_table(page)
    expected = api_client.get(
        f"/dictionaries/{d['id']}/features", params={"dead": "false", "sort": "max_activation", "order": "desc", "limit": 500}
    ).json()
    with page.expect_download() as info:
        page.click("text=Export CSV")
    text = open(info.value.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == expected["total"] > 25  # every page, not only the one shown
    assert [int(r["index"]) for r in rows] == [f["index"] for f in expected["items"]]
    assert rows[0]["label"] == expected["items"][0]["label"]


# --- feature page ---------------------------------------------------------------------------------


def test_feature_page_shows_highlighted_examples_histogram_and_logit_effects(page, live_server, api_client, screenshot_dir):
    d = first_dictionary(api_client)
    f = live_feature(api_client, d["id"])
    detail = api_client.get(f"/dictionaries/{d['id']}/features/{f['index']}").json()
    page.goto(f"{live_server}/#/feature/{d['id']}/{f['index']}")
    page.wait_for_selector(".example .tok-max")
    page.wait_for_selector(".act-hist .main-svg")
    assert page.locator(".feature-head h1").inner_text().startswith(f["name"])

    groups = page.locator(".example-group").evaluate_all("els => els.map(e => e.dataset.group)")
    assert groups == [g["group"] for g in detail["example_groups"]]
    assert groups[0] == "top"
    # Highlighted tokens: background shading, exact value on hover, the maximum marked.
    top_max = page.locator(".example-group[data-group=top] .example").first.locator(".tok-max")
    assert "activation" in top_max.get_attribute("title")
    assert float(top_max.get_attribute("data-v")) == pytest.approx(f["max_activation"], rel=1e-3)
    assert "rgba(255, 127, 14" in top_max.evaluate("el => getComputedStyle(el).backgroundColor")
    # Quantile edges are drawn on the histogram as shapes.
    if detail.get("quantile_edges"):
        assert page.locator(".act-hist .shapelayer path").count() >= len(detail["quantile_edges"])
    assert page.locator(".logits-top tr").count() == len(detail["logits_top"])
    assert page.locator(".logits-bottom tr").count() == len(detail["logits_bottom"])
    assert page.locator(".neighbour-list a[href^='#/feature/']").count() == len(detail["neighbours"])
    assert page.locator(".match-list a[href^='#/feature/']").count() == len(detail["matches"])
    screenshot(page, screenshot_dir, "feature")


def test_try_your_own_text_shows_the_live_activation_of_each_token(page, live_server, api_client):
    d = first_dictionary(api_client)
    f = live_feature(api_client, d["id"])
    text = "def main():\n    return os.path.join(a, b)\n"
    expected = api_client.post("/inference/feature", json={"text": text, "dictionary": d["id"], "index": f["index"]}).json()
    page.goto(f"{live_server}/#/feature/{d['id']}/{f['index']}")
    page.fill(".try-text", text)
    page.click(".try-form button[type=submit]")
    wait_for_result(page, ".try-tokens .tok")
    values = page.locator(".try-tokens .tok").evaluate_all("els => els.map(e => Number(e.dataset.v))")
    assert values == pytest.approx(expected["activations"], abs=1e-6)
    shown = page.locator(".try-tokens .tok").evaluate_all("els => els.map(e => e.textContent)")
    assert "↵" in "".join(shown)  # newlines are visible

    ablation = api_client.post("/ablate", json={"text": text, "dictionary": d["id"], "index": f["index"]}).json()
    page.click("text=Ablate")
    wait_for_result(page, ".try-result .ablate-tokens .tok")
    deltas = page.locator(".try-result .ablate-tokens .tok").evaluate_all("els => els.map(e => -Number(e.dataset.v))")
    assert deltas == pytest.approx(ablation["delta_logprob"], abs=1e-6)


def test_untrusted_text_is_rendered_as_text_never_as_html(page, live_server, api_client):
    d = first_dictionary(api_client)
    f = live_feature(api_client, d["id"])
    page.goto(f"{live_server}/#/feature/{d['id']}/{f['index']}")
    page.fill(".try-text", "<img src=x onerror=p=1><b>bold</b>")  # fits the tiny model's 32 tokens
    page.click(".try-form button[type=submit]")
    wait_for_result(page, ".try-tokens .tok")
    assert page.locator(".try-result img, .try-result b").count() == 0
    assert "<img" in page.locator(".try-tokens").inner_text().replace("\u200b", "")
    assert page.evaluate("window.p === undefined")


def test_api_errors_show_the_servers_message(page, live_server, api_client, console_errors):
    console_errors.allow(r"Failed to load resource: the server responded with a status of 404")
    d = first_dictionary(api_client)
    bad_index = d["d_sae"] + 7
    expected = api_client.get(f"/dictionaries/{d['id']}/features/{bad_index}")
    assert expected.status_code == 404
    page.goto(f"{live_server}/#/feature/{d['id']}/{bad_index}")
    page.wait_for_selector(".error")
    assert expected.json()["error"] in page.locator(".error").inner_text()
    assert page.locator("main .loading").count() == 0


def test_an_invalid_filter_shows_the_servers_message_and_field(page, live_server, api_client, console_errors):
    console_errors.allow(r"Failed to load resource: the server responded with a status of 422")
    d = first_dictionary(api_client)
    expected = api_client.get(f"/dictionaries/{d['id']}/features", params={"min_density": "5"})
    assert expected.status_code == 422
    page.goto(f"{live_server}/#/features/{d['id']}")
    wait_for_table(page)
    page.fill("input[data-key=min_density]", "5")
    page.wait_for_selector(".table-wrap .error")
    message = page.locator(".table-wrap .error").inner_text()
    assert expected.json()["error"] in message
    assert expected.json()["field"] in message

    page.fill("input[data-key=min_density]", "0.5%")  # percentages are accepted too
    page.wait_for_function("location.hash.includes('min_density=0.005')")
    page.wait_for_selector(".features-table")
    page.wait_for_function("!document.querySelector('.table-wrap.stale')")
    assert page.locator(".table-wrap .error").count() == 0


# --- map ------------------------------------------------------------------------------------------


def test_map_plots_every_feature_of_the_hook_point_and_a_click_opens_one(page, live_server, api_client, screenshot_dir):
    d = first_dictionary(api_client)
    points = api_client.get("/map", params={"hook_name": d["hook_name"]}).json()["points"]
    page.goto(f"{live_server}/#/map/{d['hook_name']}")
    page.wait_for_selector(".map-plot .main-svg")
    n_plotted = page.evaluate("document.querySelector('.map-plot').data.reduce((n, t) => n + t.x.length, 0)")
    assert n_plotted == len(points)
    screenshot(page, screenshot_dir, "map")

    # Click the first point of the first trace where plotly draws it.
    x, y = page.evaluate(
        """() => {
        const gd = document.querySelector('.map-plot');
        const L = gd._fullLayout, t = gd.data[0];
        const box = gd.querySelector('.main-svg').getBoundingClientRect();
        return [box.left + L._size.l + L.xaxis.l2p(t.x[0]), box.top + L._size.t + L.yaxis.l2p(t.y[0])];
    }"""
    )
    dictionary_id, index = page.evaluate("document.querySelector('.map-plot').data[0].customdata[0]")
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    page.wait_for_function(f"location.hash === '#/feature/{dictionary_id}/{index}'")

    page.goto(f"{live_server}/#/map/{d['hook_name']}?color=density")
    page.wait_for_selector(".map-plot .main-svg")
    assert page.evaluate("Array.isArray(document.querySelector('.map-plot').data[0].marker.color)")
    screenshot(page, screenshot_dir, "map-density")


# --- text analyser --------------------------------------------------------------------------------


def test_analyser_shades_tokens_lists_their_features_and_shows_one_across_the_text(page, live_server, api_client, screenshot_dir):
    text = "import os\n\ndef main(argv):\n    return len(argv)\n"
    expected = api_client.post("/inference/activations", json={"text": text, "top_k": 5}).json()
    page.goto(f"{live_server}/#/analyse?text={urllib.parse.quote(text)}")
    wait_for_result(page, ".analyse-tokens .tok")
    first = expected["results"][0]
    totals = page.locator(".analyse-tokens .tok").evaluate_all("els => els.map(e => Number(e.dataset.v))")
    assert totals == pytest.approx(first["token_totals"], abs=1e-6)

    position = max(range(1, len(expected["tokens"])), key=lambda i: first["token_totals"][i])
    page.click(f".analyse-tokens .tok[data-i='{position}']")
    page.wait_for_selector(".token-panel .token-features a")
    links = page.locator(".token-panel .token-dict").first.locator("a[href^='#/feature/']")
    assert links.count() == len(first["per_token"][position])

    page.locator(".token-panel .show-feature").first.click()
    wait_for_result(page, ".feature-panel .tok")
    assert page.locator(".feature-panel .tok").count() == len(expected["tokens"])
    screenshot(page, screenshot_dir, "analyse")


# --- steering -------------------------------------------------------------------------------------


def test_steering_shows_default_and_steered_continuations_and_a_strength_sweep(page, live_server, api_client, screenshot_dir):
    d = first_dictionary(api_client)
    f = live_feature(api_client, d["id"])
    page.goto(f"{live_server}/#/steer?prompt={urllib.parse.quote('import os')}&f={d['id']}:{f['index']}:add:8&n=12&run=1")
    wait_for_result(page, ".continuation-card.steered .tok-gen")
    assert page.locator(".continuation-card.default .tok-gen").count() == 12
    assert page.locator(".continuation-card.steered .tok-gen").count() == 12
    assert re.search(r"logprob -?\d", page.locator(".continuation-card.steered .tok-gen").first.get_attribute("title"))

    # Pick a second feature by searching for one of its top tokens (results: highest max activation first).
    page.select_option("select[aria-label='Dictionary to pick from']", d["id"])
    token = max(f["top_tokens"].split(), key=len)
    page.fill("input[aria-label='Search features to steer with']", token)
    page.wait_for_selector(".pick-option")
    assert page.locator(".pick-option").first.inner_text().startswith(f["name"])
    page.locator(".pick-option").first.click()
    assert page.locator(".iv-table tbody tr").count() == 2
    page.click(".iv-table tbody tr:nth-child(2) button[title=Remove]")

    page.fill("input[aria-label='Sweep steps']", "3")
    page.fill("input[aria-label='Sweep to']", "16")
    page.click("text=Run sweep")
    wait_for_result(page, ".sweep-table tbody tr")
    page.wait_for_selector(".sweep-plot .main-svg")
    strengths = page.locator(".sweep-table tbody tr td:first-child").all_inner_texts()
    assert [float(s) for s in strengths] == [0.0, 8.0, 16.0]
    screenshot(page, screenshot_dir, "steer")


# --- narrow window --------------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["home", "features", "feature"])
def test_pages_fit_a_narrow_window(narrow_page, live_server, api_client, screenshot_dir, view):
    d = first_dictionary(api_client)
    f = live_feature(api_client, d["id"])
    url, ready = {
        "home": ("#/", ".density-plot .main-svg"),
        "features": (f"#/features/{d['id']}", ".features-table tbody tr"),
        "feature": (f"#/feature/{d['id']}/{f['index']}", ".example .tok-max"),
    }[view]
    narrow_page.goto(f"{live_server}/{url}")
    narrow_page.wait_for_selector(ready)
    # Only wide tables may scroll, inside their own box; the page itself must not.
    assert narrow_page.evaluate("document.documentElement.scrollWidth") <= 420 + 1
    screenshot(narrow_page, screenshot_dir, f"narrow-{view}")
