"""fashion-search UI: search by text or image, filter, browse results, open a product and its
look-alikes. ``?q=...`` in the URL runs a text search; ``?product=ID`` opens a product."""

from __future__ import annotations

from typing import Any

import streamlit as st

from fashion_search.settings import get_settings
from ui.client import ApiError, SearchApi

FILTER_FIELDS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour",
                 "season", "usage")  # fmt: skip
COLUMNS = 5


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


def sidebar() -> tuple[dict[str, list[str]], int, str]:
    """Filters, number of results and search mode from the sidebar."""
    st.sidebar.header("Filters")
    values = facets()
    filters = {}
    for field in FILTER_FIELDS:
        chosen = st.sidebar.multiselect(label(field), values.get(field, []), key=f"f-{field}")
        if chosen:
            filters[field] = [str(v) for v in chosen]
    k = st.sidebar.slider("Results", 4, 60, 20, step=4, key="k")
    hybrid = st.sidebar.toggle("Hybrid (match titles too)", value=True, key="hybrid")
    return filters, k, "hybrid" if hybrid else "vector"


def open_product(product_id: int) -> None:
    """Show a product's detail page on the next run."""
    st.session_state["product"] = product_id
    st.query_params["product"] = str(product_id)


def close_product() -> None:
    """Back to the results."""
    st.session_state.pop("product", None)
    st.query_params.pop("product", None)


def grid(hits: list[dict[str, Any]], key: str) -> None:
    """Results as image cards with name, score and a button to the product."""
    if not hits:
        st.info("No products match.")
        return
    for start in range(0, len(hits), COLUMNS):
        for column, hit in zip(st.columns(COLUMNS), hits[start : start + COLUMNS], strict=False):
            with column.container(border=True):
                st.image(hit["imageUrl"], width="stretch")
                st.markdown(f"**{hit['productDisplayName']}**")
                st.caption(f"{hit['articleType']} · {hit['baseColour']} · score {hit['score']:.3f}")
                st.button("Details", key=f"{key}-{hit['id']}", on_click=open_product,
                          args=(hit["id"],))  # fmt: skip


def product_page(product_id: int, k: int) -> None:
    """A product's picture, metadata, and the products that look like it."""
    st.button("← Back to results", on_click=close_product)
    product = api().product(product_id)
    left, right = st.columns([1, 2])
    left.image(product["imageUrl"], width="stretch")
    right.subheader(product["productDisplayName"])
    right.table({label(f): [str(product.get(f))] for f in (*FILTER_FIELDS, "year")})
    st.subheader("Similar products")
    grid(api().similar(product_id, k)["hits"], "similar")


def main() -> None:
    """The page."""
    st.set_page_config(page_title="fashion-search", page_icon="👗", layout="wide")
    st.title("fashion-search")
    try:
        filters, k, mode = sidebar()
        product = st.session_state.get("product") or st.query_params.get("product")
        if product:
            product_page(int(product), k)
            return
        text_tab, image_tab = st.tabs(["Search by text", "Search by image"])
        with text_tab:
            # Widget state is dropped while the product page hides the box: keep the query.
            if "query" not in st.session_state:
                st.session_state["query"] = st.session_state.get("last_query") or (
                    st.query_params.get("q", "")
                )
            query = st.text_input("What are you looking for?", key="query",
                                  placeholder="navy blue casual shirt for men")  # fmt: skip
            st.session_state["last_query"] = query
            if query.strip():
                result = api().search_text(query, k, filters, mode)
                st.caption(f"{len(result['hits'])} results · model version "
                           f"{result['modelVersion']} · {mode}")  # fmt: skip
                grid(result["hits"], "text")
        with image_tab:
            upload = st.file_uploader("A product photo", type=["jpg", "jpeg", "png", "webp"])
            if upload is not None:
                st.image(upload.getvalue(), width=160)
                result = api().search_image(upload.getvalue(), upload.name, k, filters)
                grid(result["hits"], "image")
    except ApiError as error:
        st.error(error.detail)


main()
