"""The Streamlit UI driven two ways: Streamlit's AppTest for its logic, and headless Chromium
(Debian's package, through Playwright) against the running app for one real search and the
merchandising page's preview, with screenshots saved to test-artifacts/."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.experiments.assignment import assign
from fashion_search.experiments.design import Design
from fashion_search.experiments.service import EXPERIMENT_TTL_S, Experiments
from fashion_search.settings import REPO_ROOT, Settings, get_settings
from fashion_search.storage import ObjectStore, product_image_key
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


@pytest.fixture(scope="module")
def merchandiser(search_settings: Settings) -> Iterator[tuple[str, Catalog]]:
    """An admin key of the test catalog, and the catalog (its rules are removed after)."""
    with create_pool(search_settings) as pool:
        catalog = Catalog.of(pool)
        yield catalog.api_keys.create("ui-merchandiser", "admin")[1], catalog
        with pool.connection() as conn:
            conn.execute("DELETE FROM merchandising_rules")


def first_product(settings: Settings) -> int:
    """The id of a product of the test catalog."""
    found = httpx.get(f"{settings.search.api_url}/search/text", params={"q": "watch", "k": 1})
    return int(found.json()["hits"][0]["id"])


def result_ids(at: AppTest, prefix: str) -> list[int]:
    return [int(b.key.split("-")[1]) for b in at.button if b.key and b.key.startswith(prefix)]


def search(at: AppTest, query: str) -> AppTest:
    """A query as the search box submits it (AppTest cannot type into the component)."""
    at.session_state["query"] = query
    return at.run()


def api_search(settings: Settings, **body: object) -> dict[str, Any]:
    """What the API answers for the UI's defaults (20 results, hybrid, collapse) and ``body``."""
    defaults = {"k": 20, "mode": "hybrid", "collapse": "image", "facets": True}
    response = httpx.post(f"{settings.search.api_url}/search/text", json={**defaults, **body})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_text_search_shows_the_api_results(app: AppTest, search_settings: Settings) -> None:
    assert not app.exception
    search(app, "silver watch")
    assert not app.exception and not app.error
    expected = api_search(search_settings, q="silver watch")["hits"]
    assert result_ids(app, "text-") == [h["id"] for h in expected]
    assert any("score" in c.value for c in app.caption)


def test_filters_and_hybrid_mode_reach_the_api(app: AppTest, search_settings: Settings) -> None:
    app.sidebar.multiselect(key="f-gender").select("Women").run()
    app.sidebar.toggle(key="hybrid").set_value(True).run()
    app.sidebar.slider(key="k").set_value(8).run()
    search(app, "watch")
    expected = api_search(search_settings, q="watch", k=8, filters={"gender": ["Women"]})
    assert result_ids(app, "text-") == [h["id"] for h in expected["hits"]]
    assert any("hybrid" in c.value for c in app.caption)
    assert app.sidebar.multiselect(key="f-gender").value == ["Women"]  # kept across searches


def test_filter_menus_count_the_results_or_the_catalog(
    app: AppTest, search_settings: Settings
) -> None:
    listing = httpx.get(f"{search_settings.search.api_url}/facets/counts").json()
    men = next(c["count"] for c in listing["gender"] if c["value"] == "Men")
    assert f"Men ({men})" in app.sidebar.multiselect(key="f-gender").options
    search(app, "black shoes")
    facets = api_search(search_settings, q="black shoes")["facets"]
    menu = app.sidebar.multiselect(key="f-articleType").options
    for count in facets["articleType"]:
        assert f"{count['value']} ({count['count']})" in menu
    catalog = httpx.get(f"{search_settings.search.api_url}/health").json()["catalog"]["products"]
    candidates = min(search_settings.search.candidates, catalog)
    assert sum(c["count"] for c in facets["articleType"]) == candidates


def test_ranking_controls_reach_the_api(app: AppTest, search_settings: Settings) -> None:
    app.sidebar.toggle(key="collapse").set_value(False).run()
    app.sidebar.selectbox(key="und").set_value("boost matching products").run()
    search(app, "black watch")
    expected = api_search(search_settings, q="black watch", collapse=None, understand="boost")
    assert result_ids(app, "text-") == [h["id"] for h in expected["hits"]]
    assert any("understood: base colour Black" in c.value for c in app.caption)

    app.sidebar.selectbox(key="und").set_value("as the server decides").run()
    app.sidebar.toggle(key="hybrid").set_value(False).run()
    vector = api_search(search_settings, q="black watch", collapse=None, mode="vector")["hits"]
    cutoff = math.floor(vector[0]["similarity"] * 100) / 100  # the slider's steps: keeps the best
    assert app.sidebar.toggle(key="cutoff").value  # on, as the server cuts by default
    app.sidebar.toggle(key="own-cutoff").set_value(True).run()
    app.sidebar.slider(key="min-score").set_value(cutoff).run()
    cut = api_search(search_settings, q="black watch", collapse=None, mode="vector",
                     minScore=cutoff)  # fmt: skip
    assert result_ids(app, "text-") == [h["id"] for h in cut["hits"]]
    assert cut["hits"] and cut["cut"] > 0
    assert any(f"{cut['cut']} weak matches hidden" in c.value for c in app.caption)


def test_one_result_per_style_shows_the_other_colours_as_swatches(
    app: AppTest, search_settings: Settings
) -> None:
    app.sidebar.toggle(key="group").set_value(True).run()
    search(app, "maxima dial watch")
    expected = api_search(search_settings, q="maxima dial watch", group="style")["hits"]
    assert result_ids(app, "text-") == [h["id"] for h in expected]
    swatched = [h for h in expected if h["variants"]]
    assert swatched, "the test catalog has Maxima watches in 3 colours"
    colours = {caption for image in app.image for caption in image.captions}
    assert {v["baseColour"] for h in swatched for v in h["variants"]} <= colours


def test_the_cutoff_toggle_says_what_the_server_does(
    app: AppTest, search_settings: Settings
) -> None:
    search(app, "black watch")
    by_default = api_search(search_settings, q="black watch")  # no minScore: the server's
    assert app.sidebar.toggle(key="cutoff").value
    assert result_ids(app, "text-") == [h["id"] for h in by_default["hits"]]
    app.sidebar.toggle(key="cutoff").set_value(False).run()  # off: nothing cut
    everything = api_search(search_settings, q="black watch", minScore=-1)
    assert result_ids(app, "text-") == [h["id"] for h in everything["hits"]]
    assert not any("weak matches hidden" in c.value for c in app.caption)
    app.sidebar.toggle(key="cutoff").set_value(True).run()
    app.sidebar.toggle(key="own-cutoff").set_value(True).run()
    app.sidebar.slider(key="min-score").set_value(1.0).run()  # nothing passes: the nearest
    search(app, "elegant outfit idea")  # no title has it, it names no value: nothing vouches
    nearest = api_search(search_settings, q="elegant outfit idea", minScore=1.0)
    assert nearest["belowCutoff"] and nearest["hits"]
    assert result_ids(app, "text-") == [h["id"] for h in nearest["hits"]]
    assert any("No close matches, showing the nearest" in w.value for w in app.warning)


def test_product_page_with_similar_products(app: AppTest, search_settings: Settings) -> None:
    search(app, "shirt")
    first = next(b for b in app.button if b.key and b.key.startswith("text-"))
    first.click().run()
    assert not app.exception
    assert app.subheader[0].value  # the product name
    similar = result_ids(app, "similar-")
    product_id = int(first.key.split("-")[1])
    assert len(similar) == 20 and product_id not in similar
    app.text_input(key="similar-modifier").input("in red").run()
    expected = httpx.get(
        f"{search_settings.search.api_url}/products/{product_id}/similar",
        params={"k": 20, "modifier": "in red", "collapse": "image", "facets": "true"},
    ).json()["hits"]
    assert result_ids(app, "similar-") == [h["id"] for h in expected] != similar
    app.button[0].click().run()  # back to the results
    assert result_ids(app, "text-")


def test_a_text_searchs_results_send_feedback(app: AppTest, search_settings: Settings) -> None:
    import psycopg

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(search_settings.database.url) as conn:
            return conn.execute(
                "SELECT signal, product_id, position, query, session_id, model_version"
                " FROM feedback ORDER BY id"
            ).fetchall()

    before = len(rows())
    search(app, "shirt")
    shown = result_ids(app, "text-")
    app.button(key=f"cart-text-{shown[1]}").click().run()
    app.button(key=f"notit-text-{shown[2]}").click().run()
    app.button(key=f"text-{shown[0]}").click().run()  # opening a result is a click
    assert not app.exception
    sent = rows()[before:]
    assert [r[:4] for r in sent] == [("add_to_cart", shown[1], 2, "shirt"),
                                     ("not_relevant", shown[2], 3, "shirt"),
                                     ("click", shown[0], 1, "shirt")]  # fmt: skip
    assert len({r[4] for r in sent}) == 1  # one session
    assert {r[5] for r in sent} == {api_search(search_settings, q="shirt")["modelVersion"]}


def test_an_experiments_arm_is_named_and_its_search_gets_the_feedback(
    app: AppTest, merchandiser: tuple[str, Catalog], search_settings: Settings
) -> None:
    """The UI's session is an experiment's shopper: the caption names the arm, and feedback
    names the search the arm answered."""
    catalog = merchandiser[1]
    experiments = Experiments(catalog, search_settings.experiments)
    started = experiments.start(Design.parse(["A=serving", "B=mode:vector"]), "ui-test")
    try:
        time.sleep(EXPERIMENT_TTL_S)  # the API reads the running experiment again
        search(app, "shirt")
        assert not app.exception
        arm = assign(started.id, started.design, app.session_state["session-id"])
        assert any(f"experiment {started.id}, arm {arm.name}" in c.value for c in app.caption)
        shown = result_ids(app, "text-")
        app.button(key=f"cart-text-{shown[0]}").click().run()
        # the click reruns the page, which searches again: a second search, nothing done yet
        outcomes = catalog.experiments.outcomes(started.id)
        assert (outcomes[0].arm, outcomes[0].added_to_cart) == (arm.name, True)
        assert {o.arm for o in outcomes} == {arm.name}
    finally:
        experiments.stop(started.id, "ui-test")


def test_api_errors_are_shown_not_raised(app: AppTest) -> None:
    search(app, "x" * 5000)
    assert not app.exception
    assert app.error and "2000" in app.error[0].value
    assert app.sidebar.multiselect(key="f-gender")  # the menus stay


def test_the_merchandising_page_adds_previews_and_removes_a_rule(
    search_settings: Settings,
    api_server: ManagedProcess,
    merchandiser: tuple[str, Catalog],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FS_API_URL", search_settings.search.api_url)
    get_settings.cache_clear()
    page = AppTest.from_file(str(REPO_ROOT / "ui" / "pages" / "merchandising.py"),
                             default_timeout=60).run()  # fmt: skip
    assert not page.exception and "admin key" in page.info[0].value
    page.text_input(key="admin-key").input("fsk_not-a-key").run()
    assert page.error and "not a valid key" in page.error[0].value
    page.text_input(key="admin-key").input(merchandiser[0]).run()
    top = api_search(search_settings, q="watch", k=3, minScore=-1, collapse=None)["hits"][0]
    hide = {"when": {"query": "watch"}, "then": {"hide": [top["id"]]}}
    page.text_area(key="rule-body").input('{"when": {}}')  # sent by the form's Add
    page.button[0].click().run()
    assert page.error and "needs a condition" in page.error[0].value
    page.text_area(key="rule-body").input(json.dumps(hide))
    page.button[0].click().run()
    assert page.success and "rule" in page.success[0].value
    page.text_input(key="preview-query").input("watch").run()
    assert not page.exception and not page.error
    (rule,) = merchandiser[1].rules.all()
    assert f"rules applied: {rule.id}" in " ".join(c.value for c in page.caption)
    with_rules, without = (sub.value for sub in page.subheader)
    assert (with_rules, without) == ("With the rules", "Without them")
    shown = [m.value for m in page.markdown if m.value.startswith("**")]
    half = len(shown) // 2
    assert top["productDisplayName"] in shown[half] and all(
        top["productDisplayName"] not in s for s in shown[:half]
    ), shown
    page.button(key="remove").click().run()
    assert merchandiser[1].rules.all() == []
    experiments = Experiments(merchandiser[1], search_settings.experiments)
    started = experiments.start(Design.parse(["A=serving", "B=mode:vector"]), "ui-test")
    try:
        page.run()
        assert f"experiment {started.id} · running · verdict: keep running" in " ".join(
            c.value for c in page.caption
        )
        arms = page.dataframe[-1].value["arm"].tolist()
        assert arms == ["A=serving", "B=mode:vector"]
    finally:
        experiments.stop(started.id, "ui-test")
    get_settings.cache_clear()


def test_real_search_in_headless_chromium(
    search_settings: Settings,
    api_server: ManagedProcess,
    merchandiser: tuple[str, Catalog],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/bootstrap.sh installs Debian's package")
        pytest.skip("chromium is not installed (scripts/bootstrap.sh installs it as root)")
    photo = tmp_path_factory.mktemp("photo") / "photo.jpg"
    photo.write_bytes(
        ObjectStore(search_settings).get(
            search_settings.storage.images_bucket, product_image_key(first_product(search_settings))
        )
    )
    port = search_settings.search.ui_port
    url = f"http://127.0.0.1:{port}"
    ui = start_process(
        "ui",
        ["-m", "streamlit", "run", "ui/app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        search_settings, tmp_path_factory.mktemp("ui"), lambda: http_ok(f"{url}/_stcore/health"),
    )  # fmt: skip
    jeans = api_search(search_settings, q="blue jeans", k=10, minScore=-1, collapse=None)["hits"]
    pinned = jeans[7]
    merchandiser[1].rules.add(
        "rule", {"when": {"query": "blue jeans"},
                 "then": {"pin": [{"productId": pinned["id"], "position": 1}]}}, "test",
    )  # fmt: skip
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            try:
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

                box = page.frame_locator('iframe[title="streamlit_searchbox.searchbox"]')
                box.locator("input").fill("")  # the box shows the query of the URL
                box.locator("input").press_sequentially("shrt", delay=150)  # a typo: one edit
                suggestion = box.get_by_text("Shirts", exact=True)
                suggestion.wait_for(timeout=60_000)
                page.screenshot(path=str(ARTIFACTS / "ui-suggest.png"))
                before = page.evaluate("[...document.images].map(i => i.src).join()")
                suggestion.click()
                page.wait_for_function(  # new results, their images loaded
                    "before => { const srcs = [...document.images].map(i => i.src);"
                    " return srcs.join() != before && srcs.length >= 20"
                    " && [...document.images].every(i => i.complete) }", arg=before, timeout=60_000,
                )  # fmt: skip
                titles = page.locator("strong").all_inner_texts()
                page.locator('[data-testid="stMultiSelect"]').nth(3).click()  # article type
                menu = page.get_by_role("listbox")
                menu.wait_for(timeout=30_000)
                page.screenshot(path=str(ARTIFACTS / "ui-facets.png"))
                counted = menu.inner_text()
                page.keyboard.press("Escape")

                page.get_by_text("My own minimum similarity").click()  # the tiny model: below 0.2
                page.get_by_text("weak matches hidden", exact=False).first.wait_for(timeout=60_000)
                cut = page.inner_text("body")
                page.get_by_text("My own minimum similarity").click()
                page.get_by_role("tab", name="Search by image").click()
                page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(photo)
                modifier = page.get_by_label("…but").first
                modifier.fill("in red")
                modifier.press("Enter")
                page.get_by_text("by image, in red", exact=False).first.wait_for(timeout=60_000)
                page.screenshot(path=str(ARTIFACTS / "ui-composed.png"), full_page=True)

                page.goto(f"{url}/merchandising")  # a rule pins the 8th jeans at the top
                page.get_by_label("Admin API key").fill(merchandiser[0])
                page.get_by_label("Admin API key").press("Enter")
                page.get_by_label("Preview a query").fill("blue jeans")
                page.get_by_label("Preview a query").press("Enter")
                page.get_by_text("Without them").wait_for(timeout=60_000)
                page.wait_for_function(
                    "[...document.images].length >= 20"
                    " && [...document.images].every(i => i.complete)", timeout=60_000,
                )  # fmt: skip
                page.screenshot(path=str(ARTIFACTS / "ui-merchandising.png"), full_page=True)
                previewed = page.inner_text("body")

                page.goto(f"{url}/?q=maxima+dial+watch")  # in 3 colours in the test catalog
                page.get_by_text("score", exact=False).first.wait_for(timeout=60_000)
                page.get_by_text("One result per style", exact=False).click()
                swatch = page.get_by_text("White", exact=True)  # a swatch's caption: the other
                for colour in ("Brown", "Black"):  # colours of the first Maxima watch shown
                    swatch = swatch.or_(page.get_by_text(colour, exact=True))
                swatch.first.wait_for(timeout=60_000)
                page.wait_for_function(
                    "[...document.images].every(i => i.complete)", timeout=60_000
                )  # fmt: skip
                page.screenshot(path=str(ARTIFACTS / "ui-styles.png"), full_page=True)
            except Exception as error:  # what the page showed, for the next reader of a failure
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "ui-failure.png"), full_page=True)
                raise AssertionError(
                    f"{error}\n--- page (test-artifacts/ui-failure.png):\n"
                    f"{page.inner_text('body')[:3000]}\n--- UI log:\n{ui.log_tail()}"
                ) from error
            browser.close()
    finally:
        ui.stop()
    assert loaded >= 20, "product images did not load from their presigned URLs"
    assert "results" in text and "Jeans" in text
    assert sum("shirt" in t.lower() for t in titles) >= 10, titles
    assert re.search(r"\w \([1-9]\d*\)", counted), counted  # the menu counts the results
    assert "weak matches hidden" in cut
    with_rules = previewed.split("Without them")[0]
    first = with_rules.split("With the rules")[1].strip().splitlines()[0]
    assert first == f"1. {pinned['productDisplayName']}" and "· pinned" in with_rules, previewed
    for name in ("ui-search.png", "ui-suggest.png", "ui-facets.png", "ui-composed.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
