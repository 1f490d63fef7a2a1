"""``GET|POST /search/text``: products for a text query, with metadata filters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from fashion_search.catalog.filters import Filters
from fashion_search.search.request import SearchRequest
from functions.api.access import requires
from functions.api.dependencies import Service, Session
from functions.api.errors import ERROR_RESPONSES
from functions.api.parameters import metadata_filters, reject_unknown_parameters, search_values
from functions.api.schemas import (
    REFINED,
    SearchOut,
    request_from_body,
    request_schema,
    search_response,
)

router = APIRouter(
    tags=["search"],
    dependencies=[Depends(reject_unknown_parameters), requires("search")],
    responses=ERROR_RESPONSES,
)


@router.get("/search/text", summary="Search by text", response_model=SearchOut)
async def search_text(
    service: Service,
    session: Session,
    q: Annotated[str, Query(description="the query (`-word` pushes away from a word)")],
    filters: Annotated[Filters, Depends(metadata_filters)],
    values: Annotated[dict[str, Any], Depends(search_values)],
    mode: Annotated[str | None, Query(description="vector, or hybrid (with title matches)")] = None,
) -> Response:
    """The k best products for ``q`` (``-word`` pushes away from a word); ``mode`` hybrid
    fuses full-text title matches."""
    request = SearchRequest.of(values, query=q, filters=filters, mode=mode)
    return search_response(await run_in_threadpool(service.search, request, session))


_BODY = request_schema(
    "mode", *REFINED,
    q={"anyOf": [request_schema("query")["properties"]["query"],
                 request_schema("terms")["properties"]["terms"]],
       "description": "the query, or weighted terms"},
)  # fmt: skip


def _query_or_terms(q: Any) -> str:
    return "terms" if isinstance(q, list) else "query"


@router.post(
    "/search/text",
    summary="Search by text (JSON body)",
    response_model=SearchOut,
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": _BODY}}}},
)
async def search_text_body(
    service: Service,
    session: Session,
    body: Annotated[dict[str, Any], Body(include_in_schema=False)],
) -> Response:
    """Same as GET, with the query (or weighted terms) and filters in a JSON body."""
    request = request_from_body(
        body, _BODY, q=lambda q: "terms" if isinstance(q, list) else "query"
    )
    return search_response(await run_in_threadpool(service.search, request, session))
