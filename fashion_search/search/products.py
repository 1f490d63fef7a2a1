"""The product service behind the catalog routes: one product, pages of products, counts,
facets and facet counts, suggestions; each product with a presigned image URL."""

from __future__ import annotations

from fashion_search.catalog.filters import Filters, check_filters
from fashion_search.catalog.models import Page, Product
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.suggestions import Suggestion
from fashion_search.search.facets import FacetCounts, sort_counts
from fashion_search.search.image_urls import ImageUrls


class ProductService:
    """Reads of the catalog for REST and GraphQL."""

    def __init__(self, catalog: Catalog, image_url: ImageUrls) -> None:
        self.catalog = catalog
        self.image_url = image_url

    def get(self, product_id: int) -> Product:
        """One product; ProductNotFoundError when there is none with that id."""
        return self.catalog.products.get(product_id)

    def find(self, product_id: int) -> Product | None:
        """One product, or None when there is none with that id."""
        found = self.catalog.products.get_many([product_id])
        return found[0] if found else None

    def page(self, filters: Filters | None, limit: int, after: int | None) -> Page:
        """Products in id order, ``limit`` of them after the id ``after``."""
        check_filters(filters)
        return self.catalog.products.list_products(filters, limit, after)

    def count(self, filters: Filters | None = None) -> int:
        """How many products match the filters."""
        check_filters(filters)
        return self.catalog.products.count(filters)

    def facets(self) -> dict[str, list[str | int]]:
        """Distinct values of every metadata field (camelCase names), sorted."""
        return self.catalog.products.facets()

    def facet_counts(self, filters: Filters | None = None) -> FacetCounts:
        """How many of the products matching the filters have each value of every field."""
        check_filters(filters)
        counts = self.catalog.products.value_counts(filters)
        return {name: sort_counts(pairs) for name, pairs in counts.items()}

    def suggest(self, prefix: str, limit: int = 8) -> list[Suggestion]:
        """Completions of what a shopper is typing (attribute values, then titles)."""
        return self.catalog.suggestions.suggest(prefix, limit)
