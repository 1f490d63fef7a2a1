"""The Streamlit UI driven two ways: Streamlit's AppTest for its logic, and headless Chromium
(Debian's package, through Playwright) against the running app for one real search, with a
screenshot saved to test-artifacts/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import httpx
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from fashion_search.settings import REPO_ROOT, Settings, get_settings
from stack.process import ManagedProcess
from stack.service import http_ok
from tests.helpers import start_process

ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture
def app(
    search_settings: Settings, api_server: ManagedProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AppTest]:
    monkeypatch.setenv("FS_API_URL", search_settings.search.api_url)
    get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(REPO_ROOT / "ui" / "app.py"), default_timeout=60)
    yield at.run()
    get_settings.cache_clear()


def result_ids(at: AppTest, prefix: str) -> list[int]:
    return [int(b.key.split("-")[1]) for b in at.button if b.key and b.key.startswith(prefix)]


def test_text_search_shows_the_api_results(app: AppTest, search_settings: Settings) -> None:
    assert not app.exception
    app.text_input(key="query").input("silver watch").run()
    assert not app.exception and not app.error
    expected = httpx.post(f"{search_settings.search.api_url}/search/text",
                          json={"q": "silver watch", "k": 20}).json()["hits"]  # fmt: skip
    assert result_ids(app, "text-") == [h["id"] for h in expected]
    assert any("score" in c.value for c in app.caption)


def test_filters_and_hybrid_mode_reach_the_api(app: AppTest, search_settings: Settings) -> None:
    app.sidebar.multiselect(key="f-gender").select("Women").run()
    app.sidebar.toggle(key="hybrid").set_value(True).run()
    app.sidebar.slider(key="k").set_value(8).run()
    app.text_input(key="query").input("watch").run()
    expected = httpx.post(
        f"{search_settings.search.api_url}/search/text",
        json={"q": "watch", "k": 8, "mode": "hybrid", "filters": {"gender": ["Women"]}},
    ).json()["hits"]
    assert result_ids(app, "text-") == [h["id"] for h in expected]
    assert any("hybrid" in c.value for c in app.caption)


def test_product_page_with_similar_products(app: AppTest) -> None:
    app.text_input(key="query").input("shirt").run()
    first = next(b for b in app.button if b.key and b.key.startswith("text-"))
    first.click().run()
    assert not app.exception
    assert app.subheader[0].value  # the product name
    similar = result_ids(app, "similar-")
    assert len(similar) == 20 and int(first.key.split("-")[1]) not in similar
    app.button[0].click().run()  # back to the results
    assert result_ids(app, "text-")


def test_api_errors_are_shown_not_raised(app: AppTest) -> None:
    app.text_input(key="query").input("x" * 5000).run()
    assert not app.exception
    assert app.error and "2000" in app.error[0].value


def test_real_search_in_headless_chromium(
    search_settings: Settings, api_server: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/bootstrap.sh installs Debian's package")
        pytest.skip("chromium is not installed (scripts/bootstrap.sh installs it as root)")
    port = search_settings.search.ui_port
    url = f"http://127.0.0.1:{port}"
    ui = start_process(
        "ui",
        ["-m", "streamlit", "run", "ui/app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        search_settings, tmp_path_factory.mktemp("ui"), lambda: http_ok(f"{url}/_stcore/health"),
    )  # fmt: skip
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(f"{url}/?q=blue+jeans")
            page.get_by_text("score", exact=False).first.wait_for(timeout=60_000)
            page.wait_for_function(
                "[...document.images].filter(i => i.src.includes('Signature')).length >= 20"
                " && [...document.images].every(i => i.complete)", timeout=60_000,
            )  # fmt: skip
            loaded = page.evaluate(
                "[...document.images].filter(i => i.src.includes('Signature')"
                " && i.naturalWidth > 0).length"
            )
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "ui-search.png"), full_page=True)
            text = page.inner_text("body")
            browser.close()
    finally:
        ui.stop()
    assert loaded >= 20, "product images did not load from their presigned URLs"
    assert "results" in text and "Jeans" in text
    assert (ARTIFACTS / "ui-search.png").stat().st_size > 10_000
