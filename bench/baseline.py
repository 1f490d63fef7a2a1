"""The baseline the pipeline benchmarks divide by: the model server's raw image rate."""

from __future__ import annotations

import time
from collections.abc import Sequence

from fashion_search.embedding_client import EmbeddingClient


def raw_image_rate(client: EmbeddingClient, images: Sequence[bytes], batch_size: int) -> float:
    """Images/s of ``EmbedImages`` on ``images`` in batches of ``batch_size`` (after one
    warm-up batch)."""
    client.embed_images(images[:batch_size])
    started = time.perf_counter()
    for i in range(0, len(images), batch_size):
        client.embed_images(images[i : i + batch_size])
    return len(images) / (time.perf_counter() - started)
