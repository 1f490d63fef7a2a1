"""A served model version: tokeniser + preprocessing + the two ONNX sessions."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fashion_search.model.factory import tokenizer_for
from fashion_search.model.preprocess import preprocess_image
from fashion_search.model.towers import cut_tokens
from fashion_search.settings import Settings
from model_server.loader import ExportedModel
from model_server.runtime import OnnxSession

Array = np.ndarray[Any, np.dtype[np.float32]]


class ServedModel:
    """Embeds texts and images with one registered version's ONNX towers."""

    def __init__(
        self, exported: ExportedModel, image_threads: int = 0, text_threads: int = 0
    ) -> None:
        self.version = exported.version
        self.variant = exported.variant
        facts = exported.facts
        self.architecture = facts.architecture
        self.dimension = facts.embed_dim
        self.image_size = facts.image_size
        self.mean, self.std = facts.mean, facts.std
        self._tokenizer = tokenizer_for(facts.architecture)
        self.text = OnnxSession(exported.files["text"], text_threads)
        self.image = OnnxSession(exported.files["image"], image_threads)

    @classmethod
    def configured(cls, exported: ExportedModel, settings: Settings) -> ServedModel:
        """With the thread counts of ``settings`` (the text tower's: half the cores unless set)."""
        text_threads = settings.model_text_threads or max(1, (os.cpu_count() or 1) // 2)
        return cls(exported, settings.model_threads, text_threads)

    @property
    def providers(self) -> list[str]:
        """Execution providers the sessions really use."""
        return sorted(set(self.text.providers) | set(self.image.providers))

    def embed_texts(self, texts: list[str]) -> Array:
        """Tokenise, cut after the last end-of-text token, run the text tower."""
        tokens = self._tokenizer(texts).numpy().astype(np.int64)
        return self.text.run(cut_tokens(tokens))

    def preprocess(self, data: bytes, max_pixels: int) -> Array:
        """Decoded, padded, resized, normalised ``[3, S, S]`` pixels of one image."""
        return preprocess_image(data, self.image_size, self.mean, self.std, max_pixels)

    def embed_pixels(self, pixels: list[Array]) -> Array:
        """Run the image tower on preprocessed images."""
        return self.image.run(np.stack(pixels))
