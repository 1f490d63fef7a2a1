"""``GET|POST /search/text``: products for a text query, with metadata filters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from fashion_search.catalog.filters import Filters
from fashion_search.catalog.limits import MAX_K, MAX_QUERY_CHARS, NO_NUL_PATTERN
from fashion_search.search.service import Refinements, SearchMode
from functions.api.access import requires
from functions.api.dependencies import Service
from functions.api.errors import ERROR_RESPONSES
from functions.api.parameters import (
    metadata_filters,
    reject_unknown_parameters,
    search_refinements,
)
from functions.api.schemas import SearchOut, TextSearchIn

router = APIRouter(
    tags=["search"],
    dependencies=[Depends(reject_unknown_parameters), requires("search")],
    responses=ERROR_RESPONSES,
)


@router.get("/search/text", summary="Search by text")
async def search_text(
    service: Service,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            pattern=NO_NUL_PATTERN,
            description="the query",
        ),
    ],
    filters: Annotated[Filters, Depends(metadata_filters)],
    refine: Annotated[Refinements, Depends(search_refinements)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    mode: SearchMode | None = None,
) -> SearchOut:
    """The k best products for ``q`` (``-word`` pushes away from a word); ``mode`` hybrid
    fuses full-text title matches."""
    return SearchOut.of(await run_in_threadpool(service.text, q, k, filters, mode, refine))


@router.post("/search/text", summary="Search by text (JSON body)")
async def search_text_body(service: Service, body: TextSearchIn) -> SearchOut:
    """Same as GET, with the query (or weighted terms) and filters in a JSON body."""
    result = await run_in_threadpool(
        service.text, body.query(), body.k, body.filters, body.mode, body.refinements()
    )
    return SearchOut.of(result)
