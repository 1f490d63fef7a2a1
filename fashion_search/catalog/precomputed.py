"""Image embeddings that training already computed, for embedding the catalog.

Training a model with locked towers puts every image of the dataset through the image trunk
once. With the trained head, that gives the image's embedding. It is the vector the served
fp32 image tower returns for the same bytes (``tests/test_precomputed_embeddings.py`` checks
this). The vectors are stored in the models bucket beside the version's export, keyed by the
SHA-256 of the image bytes. Embedding the catalog with that version uses them, and only an
image with other bytes (a re-upload, a product not in the dataset) goes through the model
server.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np

from fashion_search.errors import ObjectNotFoundError
from fashion_search.storage import ObjectStore

Array = np.ndarray[Any, np.dtype[np.float32]]


def image_digest(image: bytes) -> str:
    """What the vectors are keyed by: the image bytes' SHA-256, in hex."""
    return hashlib.sha256(image).hexdigest()


def _key(model_name: str, version: str) -> str:
    return f"precomputed/{model_name}/{version}/image-embeddings.npz"


def save_image_embeddings(
    store: ObjectStore, model_name: str, version: str, digests: list[str], vectors: Array
) -> None:
    """Store the embeddings (``[N, D]`` float32) of the images with ``digests`` by a
    registered version."""
    buffer = io.BytesIO()
    np.savez(buffer, digests=np.asarray(digests, dtype="S64"), vectors=vectors)
    bucket = store.settings.storage.models_bucket
    store.put(bucket, _key(model_name, version), buffer.getvalue(), "application/octet-stream")


def load_image_embeddings(store: ObjectStore, model_name: str, version: str) -> dict[str, Array]:
    """The stored embeddings of a registered version by image digest (none stored: empty)."""
    try:
        data = store.get(store.settings.storage.models_bucket, _key(model_name, version))
    except ObjectNotFoundError:
        return {}
    with np.load(io.BytesIO(data)) as saved:
        digests, vectors = saved["digests"], saved["vectors"]
    return {d.decode(): v for d, v in zip(digests, vectors.astype(np.float32), strict=True)}
