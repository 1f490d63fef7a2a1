"""Query-string parameters shared by the routes: metadata filters, and no unknown names.

Both are ``async`` (they only parse), so FastAPI runs them on the event loop rather than in its
thread pool (see :func:`functions.api.dependencies.get_service`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from fashion_search.catalog.filters import Filters
from fashion_search.errors import InvalidArgumentError

_Text = Annotated[list[str] | None, Query()]


async def metadata_filters(
    gender: _Text = None,
    master_category: Annotated[list[str] | None, Query(alias="masterCategory")] = None,
    sub_category: Annotated[list[str] | None, Query(alias="subCategory")] = None,
    article_type: Annotated[list[str] | None, Query(alias="articleType")] = None,
    base_colour: Annotated[list[str] | None, Query(alias="baseColour")] = None,
    season: _Text = None,
    year: Annotated[list[int] | None, Query()] = None,
    usage: _Text = None,
) -> Filters:
    """Metadata filters from the query string; repeat a name to allow several values."""
    given = {
        "gender": gender, "masterCategory": master_category, "subCategory": sub_category,
        "articleType": article_type, "baseColour": base_colour, "season": season,
        "year": year, "usage": usage,
    }  # fmt: skip
    return {name: values for name, values in given.items() if values is not None}


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
