"""Presigned image URLs for search results, each reused for half of its lifetime."""

from __future__ import annotations

import time

from fashion_search.catalog.models import Product
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore

CACHE_SIZE = 100_000


class ImageUrls:
    """Signs GET URLs of product images (~0.06 ms a URL) and keeps them while they have at least
    half of their expiry left."""

    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.bucket = settings.storage.images_bucket
        self.expiry_s = settings.search.image_url_expiry_s
        self.store = store
        self._urls: dict[str, tuple[str, float]] = {}  # image key -> (URL, signed at)

    def __call__(self, product: Product) -> str:
        """A presigned GET URL of the product's image."""
        now = time.monotonic()
        cached = self._urls.get(product.image_key)
        if cached is not None and now - cached[1] < self.expiry_s / 2:
            return cached[0]
        url = self.store.presigned_url(self.bucket, product.image_key, self.expiry_s)
        if len(self._urls) >= CACHE_SIZE:
            self._urls.clear()
        self._urls[product.image_key] = (url, now)
        return url
