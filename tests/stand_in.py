"""A deterministic stand-in for the model server: a text's vector is the normalised sum of
one fixed random unit vector per word (so texts that share words are near), an image's is
fixed by its bytes. Products embedded by their titles make a catalog whose nearest neighbours
are predictable, for tests of the search pipeline without a model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fashion_search.embedding_client import Array, Embeddings, ModelInfo
from fashion_search.search.understanding import words

DIMENSION = 64


def _unit(seed: bytes) -> Array:
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(seed, digest_size=8).digest()))
    vector = rng.standard_normal(DIMENSION).astype(np.float32)
    return vector / np.linalg.norm(vector)


def text_vector(text: str) -> Array:
    """The stand-in embedding of ``text``."""
    total = np.sum([_unit(word.encode()) for word in words(text) or [""]], axis=0)
    return (total / np.linalg.norm(total)).astype(np.float32)


@dataclass
class StandInEmbedder:
    """Embeds as the module says, answering with ``version`` (what a test sets it to);
    ``calls`` counts the calls."""

    version: str = "stand-in-1"
    calls: list[str] = field(default_factory=list)

    def _answer(self, vectors: list[Array], asked: str | None) -> Embeddings:
        self.calls.append(asked or "")
        return Embeddings(np.stack(vectors), self.version)

    def embed_texts(self, texts: Sequence[str], version: str | None = None) -> Embeddings:
        """Each text's :func:`text_vector`."""
        return self._answer([text_vector(t) for t in texts], version)

    def embed_images(self, images: Sequence[bytes], version: str | None = None) -> Embeddings:
        """A unit vector fixed by each image's bytes."""
        return self._answer([_unit(image) for image in images], version)

    def info(self) -> ModelInfo:
        """The stand-in model."""
        return ModelInfo(
            "stand-in", "stand-in", self.version, DIMENSION, ["none"], False,
            versions={self.version: DIMENSION},
        )  # fmt: skip
