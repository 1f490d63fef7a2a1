"""Give every catalog product an embedding from the model version the model server serves."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tqdm import tqdm

from fashion_search.catalog.repository import CatalogRepository
from fashion_search.embedding_client import EmbeddingClient, EmbeddingRequestError
from fashion_search.errors import ObjectNotFoundError
from fashion_search.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class EmbedSummary:
    """Outcome of an embedding pass."""

    model_version: str
    embedded: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # product id -> reason


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
    bucket = store.settings.images_bucket
    with ThreadPoolExecutor(16) as pool:
        while True:
            total = repository.count_to_embed(summary.model_version)
            after, passed_version = 0, summary.model_version
            with tqdm(total=total, unit="image", desc="embed", disable=not progress) as bar:
                while ids := repository.ids_to_embed(summary.model_version, batch_size, after):
                    after = ids[-1]
                    products = repository.get_many(ids)
                    images = list(pool.map(lambda p: _read(store, bucket, p.image_key), products))
                    ok = [(p.id, image) for p, image in zip(products, images, strict=True) if image]
                    summary.failed.update(
                        (p.id, f"image {p.image_key} is missing")
                        for p, image in zip(products, images, strict=True)
                        if image is None
                    )
                    if ok:
                        _embed_batch(repository, client, ok, summary)
                    bar.update(len(ids))
            if summary.model_version == passed_version:
                return summary
            log.info("served model moved to version %s; embedding again", summary.model_version)


def _read(store: ObjectStore, bucket: str, key: str) -> bytes | None:
    try:
        return store.get(bucket, key)
    except ObjectNotFoundError:
        return None


def _embed_batch(
    repository: CatalogRepository,
    client: EmbeddingClient,
    items: list[tuple[int, bytes]],
    summary: EmbedSummary,
) -> None:
    """Embed one batch; if the server refuses it, embed one by one to isolate the bad image."""
    try:
        result = client.embed_images([image for _, image in items])
    except EmbeddingRequestError as error:
        if len(items) == 1:
            summary.failed[items[0][0]] = str(error)
            return
        for item in items:
            _embed_batch(repository, client, [item], summary)
        return
    summary.model_version = result.model_version
    summary.embedded += repository.set_embeddings(
        [i for i, _ in items], result.vectors, result.model_version
    )
