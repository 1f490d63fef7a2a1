"""fashion-search UI: search by text (with suggestions while typing) or image (changed by text:
"in red"), filter with facet counts, browse results (one per style, other colours as swatches,
when asked), open a product and its look-alikes.
``?q=...`` in the URL runs a text search; ``?product=ID`` opens a product. Opening a text
search's result, adding it to the cart or marking it "not relevant" is sent as feedback."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import streamlit as st
from streamlit_searchbox import st_searchbox

from fashion_search.settings import get_settings
from ui.client import ApiError, SearchApi

FILTER_FIELDS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour",
                 "season", "usage")  # fmt: skip
COLUMNS = 5
UNDERSTANDING = {"as the server decides": None, "boost matching products": "boost",
                 "filter to them": "filter", "off": "off"}  # fmt: skip
#: Completions the search box offers while typing.
SUGGESTIONS = 8

Counts = dict[str, dict[str, int]]


@st.cache_resource
def api() -> SearchApi:
    """One API client per server process."""
    settings = get_settings()
    return SearchApi(settings.search.api_url, settings.access.api_key)


@st.cache_data(ttl=300)
def facets() -> dict[str, list[str | int]]:
    """Filter menu values (refreshed every 5 minutes)."""
    return api().facets()


def label(field: str) -> str:
    """``baseColour`` -> ``Base colour``."""
    return "".join(f" {c.lower()}" if c.isupper() else c for c in field).capitalize()


def suggestions(typed: str) -> list[str]:
    """What the search box offers for ``typed``: the text itself, completions of all of it,
    then of its last word after the words before it ("navy blue sh" -> "navy blue Shirts")."""
    text = " ".join(typed.split())
    if not text:
        return []
    head, _, last = text.rpartition(" ")
    options = [text]
    try:
        options += [s["text"] for s in api().suggest(text, SUGGESTIONS)]
        if head:
            options += [f"{head} {s['text']}" for s in api().suggest(last, SUGGESTIONS)
                        if s["kind"] != "title"]  # fmt: skip
    except ApiError:
        pass  # the search still works without suggestions
    unique: dict[str, str] = {}
    for option in options:
        unique.setdefault(option.lower(), option)
    return list(unique.values())[: SUGGESTIONS + 1]


def chosen_filters() -> dict[str, list[str]]:
    """The filter menus' values (kept in the session; the menus are drawn after the search)."""
    return {f: [str(v) for v in st.session_state[f"f-{f}"]]
            for f in FILTER_FIELDS if st.session_state.get(f"f-{f}")}  # fmt: skip


def filter_menus(counts: Counts) -> None:
    """Filter menus, each value with how many of the results (or products) have it."""
    values = facets()
    for field in FILTER_FIELDS:
        of_field = counts.get(field, {})

        def with_count(value: str | int, of_field: dict[str, int] = of_field) -> str:
            return f"{value} ({of_field.get(str(value), 0)})"

        st.multiselect(label(field), values.get(field, []), key=f"f-{field}",
                       format_func=with_count)  # fmt: skip


def refinements() -> tuple[int, str, dict[str, Any]]:
    """Number of results, search mode and the refinements of the ranking (sidebar)."""
    k = st.sidebar.slider("Results", 4, 60, 20, step=4, key="k")
    hybrid = st.sidebar.toggle("Hybrid (match titles too)", value=True, key="hybrid")
    refine: dict[str, Any] = {"facets": True}
    if st.sidebar.toggle("One result per image", value=True, key="collapse"):
        refine["collapse"] = "image"
    if st.sidebar.toggle("One result per style (other colours as swatches)", key="group"):
        refine["group"] = "style"
    # On, as the server does by default: hits below the model version's cutoff are hidden.
    if st.sidebar.toggle("Hide weak matches", value=True, key="cutoff"):
        if st.sidebar.toggle("My own minimum similarity", value=False, key="own-cutoff"):
            refine["minScore"] = st.sidebar.slider(
                "Minimum similarity", -1.0, 1.0, 0.2, step=0.01, key="min-score"
            )
    else:
        refine["minScore"] = -1.0
    understand = st.sidebar.selectbox("Understand words like colours", UNDERSTANDING, key="und")
    if UNDERSTANDING[understand]:
        refine["understand"] = UNDERSTANDING[understand]
    if st.sidebar.toggle("Explain the ranking", value=False, key="explain"):
        refine["explain"] = True
    return k, "hybrid" if hybrid else "vector", refine


def counts_of(facet_counts: dict[str, list[dict[str, Any]]] | None) -> Counts:
    """Facet counts as field -> value -> count."""
    return {field: {str(c["value"]): c["count"] for c in values}
            for field, values in (facet_counts or {}).items()}  # fmt: skip


def session_id() -> str:
    """The shopper's session: experiments assign it an arm, feedback names it."""
    session: str = st.session_state.setdefault("session-id", uuid.uuid4().hex)
    return session


def send_feedback(signal: str, hit: dict[str, Any], position: int, shown: Shown) -> None:
    """Record the shopper's ``signal`` on the hit at ``position`` of a text search."""
    api().feedback(signal, shown.query, hit["id"], position, session_id(), shown.model_version,
                   shown.search_id)  # fmt: skip
    if signal == "add_to_cart":
        st.toast(f"Added {hit['productDisplayName']} to the cart")
    elif signal == "not_relevant":
        st.toast("Thanks: marked as not relevant")


def open_product(product_id: int, feedback: tuple[Any, ...] = ()) -> None:
    """Show a product's detail page on the next run (a click, when ``feedback`` says which)."""
    if feedback:
        send_feedback("click", *feedback)
    st.session_state["product"] = product_id
    st.query_params["product"] = str(product_id)


def close_product() -> None:
    """Back to the results."""
    st.session_state.pop("product", None)
    st.query_params.pop("product", None)


def summary(result: dict[str, Any], what: str) -> None:
    """What was searched: results, model, mode, what the query was understood to name, cut,
    and the experiment's arm that answered."""
    parts = [f"{len(result['hits'])} results", f"model version {result['modelVersion']}", what]
    if result.get("understood"):
        named = ", ".join(
            f"{label(f).lower()} {v if isinstance(v, str) else ' or '.join(v)}"
            for f, v in result["understood"].items()
        )
        parts.append(f"understood: {named}")
    if result.get("cut"):
        parts.append(
            f"{result['cut']} weak matches hidden (similarity below {result['minScore']:g})"
        )
    if result.get("experiment"):
        parts.append(f"experiment {result['experiment']['id']}, arm {result['experiment']['arm']}")
    st.caption(" · ".join(parts))
    if result.get("belowCutoff"):
        st.warning("No close matches, showing the nearest.")


@dataclass(frozen=True)
class Shown:
    """What a text search's results were shown for: the query, the model version, and the
    experiment's search (when an experiment answered)."""

    query: str
    model_version: str | None
    search_id: int | None = None


def grid(hits: list[dict[str, Any]], key: str, shown: Shown | None = None) -> None:
    """Results as image cards with name, score and a button to the product; for a text search
    (``shown``) also "add to cart" and "not relevant", each sent as feedback."""
    if not hits:
        st.info("No products match.")
        return
    for start in range(0, len(hits), COLUMNS):
        row = enumerate(hits[start : start + COLUMNS], start + 1)
        for column, (position, hit) in zip(st.columns(COLUMNS), row, strict=False):
            with column.container(border=True):
                st.image(hit["imageUrl"], width="stretch")
                st.markdown(f"**{hit['productDisplayName']}**")
                same = f" · {hit['collapsed']} listings" if hit.get("collapsed", 1) > 1 else ""
                st.caption(f"{hit['articleType']} · {hit['baseColour']} · score"
                           f" {hit['score']:.3f}{same}")  # fmt: skip
                if hit.get("explain"):
                    parts = hit["explain"].items()
                    st.caption(" + ".join(f"{name} {value:.3f}" for name, value in parts if value))
                if hit.get("variants"):
                    swatches = hit["variants"]
                    st.image([v["imageUrl"] for v in swatches], width=48,
                             caption=[v["baseColour"] or "" for v in swatches])  # fmt: skip
                feedback = (hit, position, shown) if shown else ()
                st.button("Details", key=f"{key}-{hit['id']}", on_click=open_product,
                          args=(hit["id"], feedback))  # fmt: skip
                if shown:
                    cart, wrong = st.columns(2)
                    cart.button("🛒 Add", key=f"cart-{key}-{hit['id']}", on_click=send_feedback,
                                args=("add_to_cart", *feedback))  # fmt: skip
                    wrong.button("✕ Not it", key=f"notit-{key}-{hit['id']}", on_click=send_feedback,
                                 args=("not_relevant", *feedback))  # fmt: skip


def product_page(product_id: int, k: int, refine: dict[str, Any]) -> Counts:
    """A product's picture, metadata, and the products that look like it (changed by text)."""
    st.button("← Back to results", on_click=close_product)
    product = api().product(product_id)
    left, right = st.columns([1, 2])
    left.image(product["imageUrl"], width="stretch")
    right.subheader(product["productDisplayName"])
    right.table({label(f): [str(product.get(f))] for f in (*FILTER_FIELDS, "year")})
    st.subheader("Similar products")
    modifier = st.text_input("…but", key="similar-modifier", placeholder="in red")
    result = api().similar(product_id, k, refine, modifier)
    summary(result, f"like this product{f', {modifier}' if modifier.strip() else ''}")
    grid(result["hits"], "similar")
    return counts_of(result["facets"])


def run_query(query: str | None) -> None:
    """The search box's choice as the session's query, searched for on the whole page."""
    st.session_state["query"] = query or ""
    st.rerun()


@st.fragment
def search_box() -> None:
    """The text query box, suggesting while typing (only the box reruns on each keystroke)."""
    st_searchbox(
        suggestions, placeholder="navy blue casual shirt for men", key="query-box",
        label="What are you looking for?", default_searchterm=st.session_state["query"],
        submit_function=run_query, reset_function=lambda: run_query(None),
        edit_after_submit="option", debounce=100, rerun_scope="fragment",
    )  # fmt: skip


def search_page(k: int, mode: str, refine: dict[str, Any]) -> Counts:
    """Text and image search tabs; the facet counts of what they show."""
    filters = chosen_filters()
    counts: Counts | None = None
    text_tab, image_tab = st.tabs(["Search by text", "Search by image"])
    with text_tab:
        if "query" not in st.session_state:
            st.session_state["query"] = st.query_params.get("q", "")
        search_box()
        query = st.session_state["query"]
        if query.strip():
            result = api().search_text(query, k, filters, mode, refine, session_id())
            summary(result, mode)
            experiment = result.get("experiment") or {}
            shown = Shown(query, result["modelVersion"], experiment.get("searchId"))
            grid(result["hits"], "text", shown)
            counts = counts_of(result["facets"])
    with image_tab:
        upload = st.file_uploader("A product photo", type=["jpg", "jpeg", "png", "webp"])
        modifier = st.text_input("…but", key="image-modifier", placeholder="in red")
        if upload is not None:
            st.image(upload.getvalue(), width=160)
            result = api().search_image(
                upload.getvalue(), upload.name, k, filters, refine, modifier
            )
            summary(result, f"by image{f', {modifier}' if modifier.strip() else ''}")
            grid(result["hits"], "image")
            counts = counts if counts is not None else counts_of(result["facets"])
    return counts if counts is not None else counts_of(api().facet_counts(filters))


def main() -> None:
    """The page: the ranking controls, the search (or a product), then the filter menus with
    the counts of what is shown."""
    st.set_page_config(page_title="fashion-search", page_icon="👗", layout="wide")
    st.title("fashion-search")
    st.sidebar.header("Filters")
    menus = st.sidebar.container()
    st.sidebar.header("Ranking")
    counts: Counts = {}
    try:
        k, mode, refine = refinements()
        product = st.session_state.get("product") or st.query_params.get("product")
        counts = product_page(int(product), k, refine) if product else search_page(k, mode, refine)
    except ApiError as error:
        st.error(error.detail)
    with menus:  # drawn on every run, so the chosen filters are kept
        filter_menus(counts)


main()
