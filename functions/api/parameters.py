"""Query-string parameters shared by the routes: metadata filters, a search's k and
refinements, and no unknown names.

Both are ``async`` (they only parse), so FastAPI runs them on the event loop rather than in its
thread pool (see :func:`functions.api.dependencies.get_service`)."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic.alias_generators import to_camel

from fashion_search.catalog.filters import Filters, FilterValue
from fashion_search.catalog.limits import MAX_K
from fashion_search.catalog.models import METADATA_FIELDS, values_annotation
from fashion_search.errors import InvalidArgumentError


async def metadata_filters(**given: FilterValue | None) -> Filters:
    """Metadata filters from the query string (every metadata field, camelCase); repeat a name
    to allow several values."""
    return {name: values for name, values in given.items() if values is not None}


metadata_filters.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter(
            to_camel(name),
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[values_annotation(name), Query()],
        )
        for name in METADATA_FIELDS
    ],
    return_annotation=Filters,
)


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def reject_unknown_parameters(request: Request) -> None:
    """A query-string name the route does not declare is an error, not silently ignored."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidArgumentError(
            f"unknown query parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


async def search_values(
    k: Annotated[int, Query(description=f"how many hits (1 to {MAX_K})")] = 10,
    min_score: Annotated[
        float | None, Query(alias="minScore", description="hits below this similarity are cut")
    ] = None,
    collapse: Annotated[
        str | None, Query(description="image: one hit per near-identical image")
    ] = None,
    facets: Annotated[bool, Query(description="facet counts over the candidates")] = False,
    candidates: Annotated[
        int | None, Query(description="ranked candidates facets and collapse see")
    ] = None,
    understand: Annotated[
        str | None, Query(description="query understanding: off, boost or filter")
    ] = None,
    explain: Annotated[
        bool, Query(description="each hit's score parts: relevance and business signals")
    ] = False,
    rules: Annotated[
        bool, Query(description="apply the merchandising rules (false: preview without)")
    ] = True,
    group: Annotated[
        str | None, Query(description="style: one hit per style, its other colours as variants")
    ] = None,
) -> dict[str, Any]:
    """How many hits and the refinements, from the query string, as they were sent: the
    search request checks them (:class:`~fashion_search.search.request.SearchRequest`)."""
    return {
        "k": k, "min_score": min_score, "collapse": collapse, "facets": facets,
        "candidates": candidates, "understand": understand, "explain": explain, "rules": rules,
        "group": group,
    }  # fmt: skip
