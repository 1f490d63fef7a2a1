"""Typed HTTP client of the search API, as the UI uses it."""

from __future__ import annotations

import json
from typing import Any

import httpx

from fashion_search.errors import FashionSearchError
from fashion_search.settings import API_KEY_HEADER, SESSION_HEADER


class ApiError(FashionSearchError):
    """The API answered with an error status; the message is its ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class SearchApi:
    """Calls of the REST API (one pooled connection per UI session), with the UI's own key
    (``FS_API_KEY``) when it has one."""

    def __init__(self, base_url: str, api_key: str = "", timeout_s: float = 30.0) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, str(detail))
        return response.json()

    def facets(self) -> dict[str, list[str | int]]:
        """Distinct values of each metadata field."""
        result: dict[str, list[str | int]] = self._json(self._http.get("/facets"))
        return result

    def facet_counts(self, filters: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
        """``GET /facets/counts``: how many products matching ``filters`` have each value."""
        params: list[tuple[str, str | int | float | bool | None]] = [
            (field, value) for field, values in filters.items() for value in values
        ]
        result: dict[str, list[dict[str, Any]]] = self._json(
            self._http.get("/facets/counts", params=params)
        )
        return result

    def suggest(self, prefix: str, limit: int = 8) -> list[dict[str, str]]:
        """``GET /suggest``: completions of a prefix."""
        result: list[dict[str, str]] = self._json(
            self._http.get("/suggest", params={"prefix": prefix, "limit": limit})
        )
        return result

    def search_text(
        self,
        query: str,
        k: int,
        filters: dict[str, list[str]],
        mode: str,
        refine: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """``POST /search/text`` (``refine``: minScore, collapse, facets, understand...), for
        the shopper's session (a running experiment answers with its arm)."""
        body = {"q": query, "k": k, "filters": filters, "mode": mode, **(refine or {})}
        headers = {SESSION_HEADER: session_id} if session_id else {}
        result: dict[str, Any] = self._json(
            self._http.post("/search/text", json=body, headers=headers)
        )
        return result

    def search_image(
        self,
        image: bytes,
        filename: str,
        k: int,
        filters: dict[str, list[str]],
        refine: dict[str, Any] | None = None,
        modifier: str = "",
    ) -> dict[str, Any]:
        """``POST /search/image`` with a multipart upload, changed by ``modifier`` if any."""
        fields = {"k": k, "filters": json.dumps(filters), **(refine or {})}
        if modifier.strip():
            fields["modifier"] = modifier
        result: dict[str, Any] = self._json(
            self._http.post(
                "/search/image",
                files={"image": (filename, image)},
                data={name: _form_value(value) for name, value in fields.items()},
            )
        )
        return result

    def product(self, product_id: int) -> dict[str, Any]:
        """``GET /products/{id}``."""
        result: dict[str, Any] = self._json(self._http.get(f"/products/{product_id}"))
        return result

    def similar(
        self, product_id: int, k: int, refine: dict[str, Any] | None = None, modifier: str = ""
    ) -> dict[str, Any]:
        """``GET /products/{id}/similar``, changed by ``modifier`` if any."""
        params = {"k": k, **(refine or {})}
        if modifier.strip():
            params["modifier"] = modifier
        result: dict[str, Any] = self._json(
            self._http.get(
                f"/products/{product_id}/similar",
                params={name: _form_value(value) for name, value in params.items()},
            )
        )
        return result

    def feedback(self, signal: str, query: str, product_id: int, position: int,
                 session_id: str, model_version: str | None,
                 search_id: int | None = None) -> None:  # fmt: skip
        """``POST /feedback``: a shopper's signal on the result at ``position`` (of the
        experiment's search ``search_id``, if one answered)."""
        body = {"signal": signal, "query": query, "productId": product_id, "position": position,
                "sessionId": session_id, "modelVersion": model_version,
                "searchId": search_id}  # fmt: skip
        self._json(self._http.post("/feedback", json=body))

    def rules(self) -> list[dict[str, Any]]:
        """``GET /rules`` (an admin key): every rule and synonym set, oldest first."""
        result: list[dict[str, Any]] = self._json(self._http.get("/rules"))
        return result

    def add_rule(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /rules`` (an admin key): the stored rule or synonym set."""
        result: dict[str, Any] = self._json(self._http.post("/rules", json=body))
        return result

    def experiment(self) -> dict[str, Any] | None:
        """``GET /experiments`` (an admin key): the latest experiment's status, or None."""
        response = self._http.get("/experiments")
        if response.status_code == 404:
            return None
        result: dict[str, Any] = self._json(response)
        return result

    def remove_rule(self, rule_id: int) -> None:
        """``DELETE /rules/{id}`` (an admin key)."""
        response = self._http.delete(f"/rules/{rule_id}")
        if response.status_code != 204:
            self._json(response)


def _form_value(value: object) -> str:
    """A value as a form field or query parameter (booleans as ``true``/``false``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
