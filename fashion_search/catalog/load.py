"""Load a product dataset into the catalog: images to the object store, rows to PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from tqdm import tqdm

from fashion_search.catalog.models import Product
from fashion_search.catalog.repositories import Catalog
from fashion_search.dataset import DatasetItem, DatasetReport, count_rows, iter_dataset
from fashion_search.model.fingerprint import fingerprint_bytes
from fashion_search.storage import ObjectStore, product_image_key

T = TypeVar("T")


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass(frozen=True)
class LoadSummary:
    """Outcome of a catalog load."""

    loaded: int
    skipped: int
    report: DatasetReport


def _products(items: Iterable[DatasetItem], dataset: str) -> Iterator[tuple[Product, bytes]]:
    for item in items:
        key = product_image_key(item.fields.id)
        product = Product(
            **item.fields.model_dump(), image_key=key, dataset=dataset,
            image_fingerprint=fingerprint_bytes(item.image),
        )  # fmt: skip
        yield product, item.image


def load_catalog(
    catalog: Catalog,
    store: ObjectStore,
    source: str,
    *,
    dataset: str = "catalog",
    offset: int = 0,
    limit: int | None = None,
    batch_size: int = 500,
    skip_existing: bool = False,
    progress: bool = True,
    embed: Callable[[list[tuple[Product, bytes]]], list[Product]] | None = None,
) -> LoadSummary:
    """Upload each product's image, then upsert its row, ``batch_size`` at a time.

    Images go first so that a row never points at a missing image; re-running is safe
    (same keys, upsert by id). ``skip_existing`` leaves products already in the catalog as
    they are (but fills in image fingerprints they lack), which makes a re-run after an
    interruption cheap. The suggestions are refreshed at the end. ``embed`` gives the products
    of a batch their embeddings (from the images in hand) before their rows are written.
    """
    report = DatasetReport()
    items = iter_dataset(source, offset=offset, limit=limit, report=report)
    bucket = store.settings.storage.images_bucket
    loaded = skipped = 0
    rows = count_rows(source)
    total = (
        limit
        if rows is None
        else max(0, rows - offset if limit is None else min(rows - offset, limit))
    )
    with tqdm(total=total, unit="product", desc="catalog", disable=not progress) as bar:
        for batch in _batched(_products(items, dataset), batch_size):
            todo = batch
            if skip_existing:
                existing = catalog.products.existing_ids([p.id for p, _ in batch])
                todo = [(p, image) for p, image in batch if p.id not in existing]
                skipped += len(existing)
                catalog.products.fill_fingerprints({
                    p.id: p.image_fingerprint for p, _ in batch
                    if p.id in existing and p.image_fingerprint is not None
                })  # fmt: skip
            if todo:
                store.put_many(bucket, ((p.image_key, image) for p, image in todo))
                loaded += catalog.products.upsert_many(
                    embed(todo) if embed else [p for p, _ in todo]
                )
            bar.update(len(batch))
    catalog.suggestions.refresh()
    return LoadSummary(loaded=loaded, skipped=skipped, report=report)
