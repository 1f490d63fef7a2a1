"""``GET /products/{id}`` and ``GET /products/{id}/similar``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from fashion_search.catalog.filters import Filters
from fashion_search.catalog.limits import MAX_K, MAX_PRODUCT_ID
from functions.api.access import requires
from functions.api.dependencies import Products, Service
from functions.api.errors import ERROR_RESPONSES
from functions.api.parameters import metadata_filters, reject_unknown_parameters
from functions.api.schemas import ProductOut, SearchOut

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


@router.get("/products/{product_id}", summary="One product")
def get_product(products: Products, product_id: ProductId) -> ProductOut:
    """A product's metadata and image URL; 404 when there is none with that id."""
    product = products.get(product_id)
    return ProductOut.of(product, products.image_url(product))


@router.get("/products/{product_id}/similar", summary="Products that look like this one")
def similar_products(
    service: Service,
    product_id: ProductId,
    filters: Annotated[Filters, Depends(metadata_filters)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
) -> SearchOut:
    """The k products nearest to this product's embedding, itself left out."""
    return SearchOut.of(service.similar(product_id, k, filters))
