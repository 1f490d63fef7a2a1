"""Merchandising page (an admin key): the rules and synonym sets in force, adding and removing
them, a query's results with the rules beside its results without them, and the latest online
experiment's figures and verdict."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from fashion_search.settings import get_settings
from ui.client import ApiError, SearchApi

EXAMPLE = {
    "when": {"query": "running shoes", "match": "contains"},
    "then": {"pin": [{"productId": 9204, "position": 1}]},
    "note": "launch week",
}
PREVIEW_K = 10


def results(title: str, result: dict[str, Any]) -> None:
    """A column of hits: position, picture, name, id and what moved it."""
    st.subheader(title)
    for position, hit in enumerate(result["hits"], 1):
        picture, words = st.columns([1, 3])
        picture.image(hit["imageUrl"], width="stretch")
        explain = hit.get("explain") or {}
        moved = (
            "· pinned" if "pinned" in explain
            else f"· rules {explain['rules']:+.2f}" if explain.get("rules")
            else ""
        )  # fmt: skip
        words.markdown(f"**{position}. {hit['productDisplayName']}**")
        words.caption(f"id {hit['id']} · score {hit['score']:.3f} {moved}")


def preview(api: SearchApi) -> None:
    """A query's results with the rules and without them, side by side."""
    query = st.text_input("Preview a query", key="preview-query", placeholder="navy blue shirt")
    if not query.strip():
        return
    refine = {"explain": True, "minScore": -1.0}
    ruled = api.search_text(query, PREVIEW_K, {}, "hybrid", refine)
    plain = api.search_text(query, PREVIEW_K, {}, "hybrid", {**refine, "rules": False})
    applied = ", ".join(map(str, ruled["rules"])) or "none"
    redirect = f" · redirected to {ruled['redirect']}" if ruled.get("redirect") else ""
    st.caption(f"rules applied: {applied}{redirect}")
    left, right = st.columns(2)
    with left:
        results("With the rules", ruled)
    with right:
        results("Without them", plain)


def manage(api: SearchApi) -> None:
    """A form to add a rule or synonym set, then those in force and a way to remove one."""
    with st.form("add-rule"):
        body = st.text_area("A rule or synonym set (JSON)", json.dumps(EXAMPLE), key="rule-body")
        if st.form_submit_button("Add"):
            try:
                added = api.add_rule(json.loads(body))
                st.success(f"{added['kind']} {added['id']} added")
            except json.JSONDecodeError as error:
                st.error(f"not JSON: {error}")
            except ApiError as error:
                st.error(error.detail)
    rules = api.rules()
    st.dataframe(
        [{"id": r["id"], "kind": r["kind"], "body": json.dumps(r["body"]),
          "created by": r["createdBy"], "created at": r["createdAt"]} for r in rules],
        hide_index=True, width="stretch",
    )  # fmt: skip
    if rules:
        chosen = st.selectbox("Remove", [r["id"] for r in rules], key="remove-id")
        if st.button("Remove", key="remove"):
            api.remove_rule(int(chosen))
            st.rerun()


def experiment(api: SearchApi) -> None:
    """The latest experiment: its arms' figures with 95% intervals, and the verdict."""
    status = api.experiment()
    if status is None:
        st.caption("No experiment yet: `fashion-search experiments start`.")
        return
    state = "running" if status["running"] else f"stopped {status['stoppedAt']}"
    st.caption(f"experiment {status['id']} · {state} · verdict: {status['verdict']}")

    def shown(figure: dict[str, Any]) -> str:
        low_high = figure["interval"]
        band = f" [{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else ""
        return f"{figure['value']:.3f}{band}"

    st.dataframe(
        [{"arm": f"{a['name']}={a['arm']}", "sessions": a["sessions"], "searches": a["searches"],
          **{name: shown(figure) for name, figure in a["figures"].items()}}
         for a in status["arms"]],
        hide_index=True, width="stretch",
    )  # fmt: skip


def main() -> None:
    """The page: an admin key, then the rules and the preview."""
    st.set_page_config(page_title="fashion-search · merchandising", page_icon="📌", layout="wide")
    st.title("Merchandising")
    key = st.text_input("Admin API key", type="password", key="admin-key")
    if not key:
        st.info("Rules need an admin key: `fashion-search api-keys create --scope admin`.")
        return
    api = SearchApi(get_settings().search.api_url, key)
    try:
        preview(api)
        st.header("Rules and synonym sets")
        manage(api)
        st.header("Online experiment")
        experiment(api)
    except ApiError as error:
        st.error(error.detail)


main()
