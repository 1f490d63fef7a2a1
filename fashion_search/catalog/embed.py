"""Give every catalog product an embedding of one model version (the serving one, or a
rollout's candidate), stored in that version's partition."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from fashion_search.background import background_pool
from fashion_search.catalog.models import Product
from fashion_search.catalog.precomputed import image_digest, load_image_embeddings
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.shards import WHOLE, Shard
from fashion_search.catalog.versions import CatalogVersion
from fashion_search.embedding_client import (
    EmbeddingClient,
    EmbeddingRequestError,
    ModelVersionNotLoadedError,
)
from fashion_search.errors import ObjectNotFoundError
from fashion_search.storage import ObjectStore

Array = np.ndarray[Any, np.dtype[np.float32]]
#: Image embeddings by image digest (:mod:`fashion_search.catalog.precomputed`).
Known = dict[str, Array]

#: Batches in flight at once. With more, the next batch is read and the previous one written
#: while the model server runs one; on 2 cores that slows the model runs more than it saves
#: (ViT-B/32 int8: 54.5 images/s one at a time, 50.7 with two).
IN_FLIGHT = 1 if (os.cpu_count() or 1) <= 2 else 2


@dataclass
class EmbedSummary:
    """Outcome of an embedding pass (or of one batch)."""

    model_version: str
    embedded: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # product id -> reason

    def add(self, other: EmbedSummary) -> None:
        """Count ``other`` in; its model version is the newer one."""
        self.model_version = other.model_version or self.model_version
        self.embedded += other.embedded
        self.failed.update(other.failed)


def embed_catalog(
    catalog: Catalog,
    store: ObjectStore,
    client: EmbeddingClient,
    version: CatalogVersion,
    *,
    batch_size: int = 64,
    progress: bool = True,
    shard: Shard = WHOLE,
) -> EmbedSummary:
    """Embed, with ``version`` on the model server, the images of products (of ``shard``) that
    have no embedding of it.

    Resumable: each batch is committed on its own, and a re-run picks up what is left. Passes
    repeat until one finds nothing new to embed, so products added or re-uploaded meanwhile
    are covered too; images that cannot be embedded are reported in ``failed``, once. Images
    whose embedding by ``version`` training stored (:mod:`fashion_search.catalog.precomputed`)
    take it instead of a model server run, when the server serves the fp32 towers it equals.
    """
    summary = EmbedSummary(version.model_version)
    known = stored_embeddings(store, client, version.model_version)
    with (  # low priority: on a small machine the model server's runs keep the CPU
        background_pool(16, "embed-read") as readers,
        background_pool(IN_FLIGHT, "embed") as workers,
    ):

        def embed(ids: list[int]) -> EmbedSummary:
            products = catalog.products.get_many(ids)
            images = list(readers.map(lambda p: _read(store, p.image_key), products))
            outcome = EmbedSummary(version.model_version)
            outcome.failed.update(
                (p.id, f"image {p.image_key} is missing")
                for p, image in zip(products, images, strict=True)
                if image is None
            )
            ok = [(p.id, i) for p, i in zip(products, images, strict=True) if i is not None]
            if ok:
                outcome.add(_embed_batch(catalog, client, version.model_version, ok, known))
            return outcome

        pending: deque[tuple[int, Future[EmbedSummary]]] = deque()

        def collect(bar: tqdm[Any]) -> None:
            count, done = pending.popleft()
            summary.add(done.result())
            bar.update(count)

        while True:
            coverage = catalog.versions.coverage(version.model_version)
            total = (coverage.products - coverage.embedded) // shard.count - len(summary.failed)
            after, submitted = 0, 0
            desc = f"embed v{version.model_version}"
            with tqdm(total=max(total, 0), unit="image", desc=desc, disable=not progress) as bar:
                while ids := catalog.embeddings.ids_to_embed(version, batch_size, after, shard):
                    after = ids[-1]
                    todo = [i for i in ids if i not in summary.failed]
                    if not todo:
                        continue
                    submitted += len(todo)
                    pending.append((len(todo), workers.submit(embed, todo)))
                    if len(pending) >= IN_FLIGHT:
                        collect(bar)
                while pending:
                    collect(bar)
            if not submitted:
                return summary


def _read(store: ObjectStore, key: str) -> bytes | None:
    try:
        return store.get(store.settings.storage.images_bucket, key)
    except ObjectNotFoundError:
        return None


@dataclass
class EmbeddedBatch:
    """Vectors of a batch of product images, and the images the server refused."""

    model_version: str
    vectors: dict[int, Array] = field(default_factory=dict)  # product id -> vector
    failed: dict[int, str] = field(default_factory=dict)  # product id -> reason

    def add(self, other: EmbeddedBatch) -> None:
        """Take in ``other``'s vectors and failures."""
        self.model_version = other.model_version or self.model_version
        self.vectors.update(other.vectors)
        self.failed.update(other.failed)


def embed_batch(
    client: EmbeddingClient, items: Sequence[tuple[int, bytes]], version: str | None = None
) -> EmbeddedBatch:
    """Embed (product id, image) pairs in one request, with ``version`` (default: the model
    server's champion); if the server refuses the batch, one by one to isolate the bad image.
    A version the server does not hold is an error for the whole batch."""
    try:
        result = client.embed_images([image for _, image in items], version=version)
    except ModelVersionNotLoadedError:
        raise
    except EmbeddingRequestError as error:
        if len(items) == 1:
            return EmbeddedBatch("", failed={items[0][0]: str(error)})
        outcome = EmbeddedBatch("")
        for item in items:
            outcome.add(embed_batch(client, [item], version))
        return outcome
    vectors = dict(zip((i for i, _ in items), result.vectors, strict=True))
    return EmbeddedBatch(result.model_version, vectors)


def stored_embeddings(store: ObjectStore, client: EmbeddingClient, version: str) -> Known:
    """The image embeddings by ``version`` that its training stored
    (:mod:`fashion_search.catalog.precomputed`), when the model server serves the fp32 towers
    they equal; none otherwise, or when the settings say not to reuse them."""
    if not store.settings.registry.reuse_training_embeddings:
        return {}
    info = client.info()
    if info.precision != "fp32":
        return {}
    return load_image_embeddings(store, info.registry_name, version)


def embed_known(
    client: EmbeddingClient,
    items: Sequence[tuple[int, bytes]],
    version: str | None,
    known: Known,
) -> EmbeddedBatch:
    """:func:`embed_batch`, except that an image whose digest is in ``known`` (vectors of
    ``version``) takes that vector and no model server run."""
    found = {i: known[d] for i, image in items if known and (d := image_digest(image)) in known}
    rest = [(i, image) for i, image in items if i not in found]
    batch = embed_batch(client, rest, version) if rest else EmbeddedBatch(version or "")
    batch.vectors.update(found)
    return batch


def _embed_batch(
    catalog: Catalog,
    client: EmbeddingClient,
    version: str,
    items: list[tuple[int, bytes]],
    known: Known,
) -> EmbedSummary:
    """Embed one batch with ``version`` (:func:`embed_known`) and store the vectors in its
    partition."""
    batch = embed_known(client, items, version, known)
    embedded = 0
    if batch.vectors:
        vectors = np.stack(list(batch.vectors.values()))
        embedded = catalog.embeddings.set_embeddings(version, list(batch.vectors), vectors)
    return EmbedSummary(batch.model_version, embedded, batch.failed)


def with_embeddings(
    client: EmbeddingClient,
    items: Sequence[tuple[Product, bytes]],
    batch_size: int = 64,
    version: str | None = None,
    known: Known | None = None,
) -> tuple[list[Product], EmbedSummary]:
    """The products with the embeddings of their images (in hand) by ``version`` (default:
    the champion), ``batch_size`` a request; a product whose image the server refuses stays
    without one. ``known``: :func:`stored_embeddings` of ``version``."""
    products: list[Product] = []
    summary = EmbedSummary("")
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = embed_known(client, [(p.id, image) for p, image in chunk], version, known or {})
        summary.add(EmbedSummary(batch.model_version, len(batch.vectors), batch.failed))
        products += [
            p.model_copy(
                update={"embedding": batch.vectors[p.id], "model_version": batch.model_version}
            )
            if p.id in batch.vectors
            else p
            for p, _ in chunk
        ]
    return products, summary
