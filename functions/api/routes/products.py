"""``GET /products/{id}``, ``GET /products/{id}/similar``, ``GET /facets[/counts]`` and
``GET /suggest``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from fashion_search.catalog.filters import Filters
from fashion_search.catalog.limits import (
    MAX_PREFIX_CHARS,
    MAX_PRODUCT_ID,
    MAX_SUGGESTIONS,
    NO_NUL_PATTERN,
)
from fashion_search.search.request import SearchRequest
from functions.api.access import requires
from functions.api.dependencies import Products, Service, Session
from functions.api.errors import ERROR_RESPONSES
from functions.api.parameters import (
    metadata_filters,
    reject_unknown_parameters,
    search_values,
)
from functions.api.schemas import (
    FacetCountsOut,
    ProductOut,
    SearchOut,
    SuggestionOut,
    facet_counts_out,
    search_response,
)

router = APIRouter(
    tags=["products"],
    dependencies=[Depends(reject_unknown_parameters), requires("search")],
    responses=ERROR_RESPONSES,
)
ProductId = Annotated[int, Path(ge=1, le=MAX_PRODUCT_ID, description="product id")]


@router.get("/facets", summary="Distinct values of every metadata field (for filter menus)")
def facets(products: Products) -> dict[str, list[str | int]]:
    """``{"articleType": ["Backpacks", ...], "year": [2007, ...], ...}``."""
    return products.facets()


@router.get("/facets/counts", summary="How many matching products have each value of each field")
def facet_counts(
    products: Products, filters: Annotated[Filters, Depends(metadata_filters)]
) -> FacetCountsOut:
    """``{"articleType": [{"value": "Tshirts", "count": 7067}, ...], ...}`` over every product
    matching the filters, most frequent first."""
    return facet_counts_out(products.facet_counts(filters))


@router.get("/suggest", summary="Completions of a prefix (titles and attribute values)")
def suggest(
    products: Products,
    prefix: Annotated[
        str,
        Query(min_length=1, max_length=MAX_PREFIX_CHARS, pattern=NO_NUL_PATTERN),
    ],
    limit: Annotated[int, Query(ge=1, le=MAX_SUGGESTIONS)] = 8,
) -> list[SuggestionOut]:
    """Attribute values, then product titles, starting with ``prefix`` (case-insensitive),
    most common first; near misses one typo away fill the rest."""
    return [SuggestionOut(text=s.text, kind=s.kind) for s in products.suggest(prefix, limit)]


@router.get("/products/{product_id}", summary="One product")
def get_product(products: Products, product_id: ProductId) -> ProductOut:
    """A product's metadata and image URL; 404 when there is none with that id."""
    product = products.get(product_id)
    return ProductOut.of(product, products.image_url(product))


@router.get(
    "/products/{product_id}/similar",
    summary="Products that look like this one",
    response_model=SearchOut,
)
def similar_products(
    service: Service,
    session: Session,
    product_id: ProductId,
    filters: Annotated[Filters, Depends(metadata_filters)],
    values: Annotated[dict[str, Any], Depends(search_values)],
    modifier: Annotated[str | None, Query(description='a text change ("in red")')] = None,
) -> Response:
    """The k products nearest to this product's embedding, itself left out; with a text
    ``modifier``, to it changed so ("in red")."""
    request = SearchRequest.of(values, product_id=product_id, filters=filters, modifier=modifier)
    return search_response(service.search(request, session))
