"""Embedding products from the images in hand (what the catalog load does with a model server)."""

from __future__ import annotations

import numpy as np

from fashion_search.catalog.embed import with_embeddings
from fashion_search.catalog.models import Product
from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.settings import Settings
from fashion_search.storage import product_image_key


def test_with_embeddings_embeds_each_product_and_isolates_a_bad_image(
    search_settings: Settings,
) -> None:
    items = [
        (Product(**item.fields.model_dump(), image_key=product_image_key(item.fields.id)),
         item.image)
        for item in iter_dataset(search_settings.dataset_source, limit=5)
    ]  # fmt: skip
    bad = items[2][0]
    items[2] = (bad, b"not an image")
    good = [i for i in range(5) if i != 2]
    with EmbeddingClient(search_settings.model_server.address) as client:
        products, summary = with_embeddings(client, items, batch_size=4)  # 2 requests
        reference = client.embed_images([items[i][1] for i in good])
    assert [p.id for p in products] == [p.id for p, _ in items]
    assert summary.embedded == 4 and list(summary.failed) == [bad.id]
    assert products[2].embedding is None and products[2].model_version is None
    vectors = np.stack([products[i].embedding for i in good])  # type: ignore[misc]
    assert np.allclose(vectors, reference.vectors, atol=1e-5)
    assert {products[i].model_version for i in good} == {reference.model_version}
