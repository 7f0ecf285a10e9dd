"""The web search page of `fastrag serve` in headless Chromium (playwright): it loads, takes a
query, and shows both pipelines' results with the matching span highlighted and per-stage
scores.

The browser is Debian's `chromium` package (``apt-get install chromium``; .ci/run installs it),
driven by playwright through ``executable_path``: playwright's own browser download needs a
network this project's machines do not have. The test skips when neither is there.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_helpers import API_KEY, Server, build_collection, model_cache, needs_server_stack

pytestmark = pytest.mark.slow


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on PATH (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    needs_server_stack()
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("needs playwright (pip install playwright)")
    cache = model_cache(tmp_path_factory)
    folder = build_collection(tmp_path_factory.mktemp("page") / "col", cache)
    srv = Server(folder, cache, folder.parent / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0, srv.log


def test_the_page_searches_and_compares_two_pipelines(server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.fill("#key", API_KEY)
            page.dispatch_event("#key", "change")
            page.wait_for_function(
                "document.getElementById('info').textContent.includes('documents')")
            assert "5 documents" in page.text_content("#info")
            page.select_option("#pane-a .method", "hybrid")
            page.select_option("#pane-b .method", "bm25")
            page.fill("#q", "supersonic shock waves")
            page.press("#q", "Enter")
            page.wait_for_selector("#results-a .hit")
            page.wait_for_selector("#results-b .hit")
            first_a = page.locator("#results-a .hit").first
            assert first_a.locator(".id").text_content() == "shock"
            marked = first_a.locator("mark").text_content()
            assert marked.startswith("Shock waves form in supersonic flow")
            assert "bm25" in first_a.locator(".stages").text_content()
            assert "dense" in first_a.locator(".stages").text_content()
            first_b = page.locator("#results-b .hit").first
            assert first_b.locator(".id").text_content() == "shock"
            assert "dense" not in first_b.locator(".stages").text_content()
            assert "bm25" in page.text_content("#pane-b .status")
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            page.fill("#filter", '{"topic": "structures"}')
            page.press("#q", "Enter")
            page.wait_for_function(
                "[...document.querySelectorAll('#results-a .hit .id')]"
                ".every(e => ['shell', 'flutter'].includes(e.textContent))")
            page.fill("#filter", "{not json")
            page.press("#q", "Enter")
            page.wait_for_selector("#results-a .error")
            assert "not valid JSON" in page.text_content("#results-a .error")
            assert page.text_content("#pane-a .status") == ""
        finally:
            browser.close()
