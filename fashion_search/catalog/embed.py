"""Give every catalog product an embedding from the model version the model server serves."""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from fashion_search.catalog.repository import CatalogRepository
from fashion_search.embedding_client import EmbeddingClient, EmbeddingRequestError
from fashion_search.errors import ObjectNotFoundError
from fashion_search.storage import ObjectStore

log = logging.getLogger(__name__)

#: Batches in flight at once: while the model server runs one, it decodes the next, and the
#: vectors of the previous one are written.
IN_FLIGHT = 2


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
    repository: CatalogRepository,
    store: ObjectStore,
    client: EmbeddingClient,
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> EmbedSummary:
    """Embed the images of products whose embedding is missing or from another model version.

    Resumable: each batch is committed on its own, and a re-run picks up what is left. If the
    served version changes during the pass, the pass continues with the new version and then
    goes over the catalog again, so every stored embedding ends up from one version.
    """
    summary = EmbedSummary(client.info().registry_version)
    with ThreadPoolExecutor(16) as readers, ThreadPoolExecutor(IN_FLIGHT) as workers:

        def embed(ids: list[int]) -> EmbedSummary:
            products = repository.get_many(ids)
            images = list(readers.map(lambda p: _read(store, p.image_key), products))
            outcome = EmbedSummary("")
            outcome.failed.update(
                (p.id, f"image {p.image_key} is missing")
                for p, image in zip(products, images, strict=True)
                if image is None
            )
            ok = [(p.id, i) for p, i in zip(products, images, strict=True) if i is not None]
            if ok:
                outcome.add(_embed_batch(repository, client, ok))
            return outcome

        pending: deque[tuple[int, Future[EmbedSummary]]] = deque()

        def collect(bar: tqdm[Any]) -> None:
            count, done = pending.popleft()
            summary.add(done.result())
            bar.update(count)

        while True:
            total = repository.count_to_embed(summary.model_version)
            passed_version, after = summary.model_version, 0
            with tqdm(total=total, unit="image", desc="embed", disable=not progress) as bar:
                while ids := repository.ids_to_embed(summary.model_version, batch_size, after):
                    after = ids[-1]
                    pending.append((len(ids), workers.submit(embed, ids)))
                    if len(pending) >= IN_FLIGHT:
                        collect(bar)
                while pending:
                    collect(bar)
            if summary.model_version == passed_version:
                return summary
            log.info("served model moved to version %s; embedding again", summary.model_version)


def _read(store: ObjectStore, key: str) -> bytes | None:
    try:
        return store.get(store.settings.images_bucket, key)
    except ObjectNotFoundError:
        return None


def _embed_batch(
    repository: CatalogRepository, client: EmbeddingClient, items: list[tuple[int, bytes]]
) -> EmbedSummary:
    """Embed one batch; if the server refuses it, embed one by one to isolate the bad image."""
    try:
        result = client.embed_images([image for _, image in items])
    except EmbeddingRequestError as error:
        outcome = EmbedSummary("")
        if len(items) == 1:
            outcome.failed[items[0][0]] = str(error)
        else:
            for item in items:
                outcome.add(_embed_batch(repository, client, [item]))
        return outcome
    embedded = repository.set_embeddings(
        [i for i, _ in items], result.vectors, result.model_version
    )
    return EmbedSummary(result.model_version, embedded)
