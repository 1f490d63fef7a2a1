"""A served model version: tokeniser, preprocessing and the ONNX sessions of its towers (no
torch: the tokeniser is the export's ``tokenizer.json``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from fashion_search.model.preprocess import preprocess_image
from fashion_search.model.tokens import cut_tokens
from fashion_search.settings import Settings
from model_server.loader import ExportedModel
from model_server.runtime import OnnxSession
from model_server.tokenizer import TextTokenizer

Array = np.ndarray[Any, np.dtype[np.float32]]


class ServedModel:
    """Embeds texts and images with one registered version's ONNX towers."""

    def __init__(
        self, exported: ExportedModel, threads: int = 0, force_spinning_stop: bool = True
    ) -> None:
        """Each tower's session with ``threads`` intra-op threads (0 = one per core)."""
        self.version = exported.version
        self.variant = exported.variant
        facts = exported.facts
        self.architecture = facts.architecture
        self.dimension = facts.embed_dim
        self.image_size = facts.image_size
        self.mean, self.std = facts.mean, facts.std
        self._tokenizer = TextTokenizer.from_file(exported.files["tokenizer"], facts.text_cleaning)
        if self._tokenizer.context_length != facts.context_length:
            raise ValueError(
                f"tokenizer.json pads to {self._tokenizer.context_length} tokens, the model's"
                f" context is {facts.context_length}"
            )
        self.text = OnnxSession(exported.files["text"], threads, force_spinning_stop)
        self.image = OnnxSession(exported.files["image"], threads, force_spinning_stop)

    @classmethod
    def configured(cls, exported: ExportedModel, settings: Settings) -> ServedModel:
        """With the sessions' settings of ``settings.model_server``."""
        server = settings.model_server
        return cls(exported, server.threads, server.force_spinning_stop)

    @property
    def providers(self) -> list[str]:
        """Execution providers the sessions really use."""
        return sorted(set(self.text.providers) | set(self.image.providers))

    def embed_texts(self, texts: list[str]) -> Array:
        """Tokenise, cut after the last non-padding token, run the text tower."""
        return self.text.run(cut_tokens(self._tokenizer(texts)))

    def preprocess(self, data: bytes, max_pixels: int) -> Array:
        """Decoded, padded, resized, normalised ``[3, S, S]`` pixels of one image."""
        return self.preprocessor(max_pixels)(data)

    def preprocessor(self, max_pixels: int) -> Callable[[bytes], Array]:
        """:meth:`preprocess` as a picklable function (for a pool of processes)."""
        return partial(
            preprocess_image, size=self.image_size, mean=self.mean, std=self.std,
            max_pixels=max_pixels,
        )  # fmt: skip

    def embed_pixels(self, pixels: list[Array]) -> Array:
        """Run the image tower on preprocessed images."""
        return self.image.run(np.stack(pixels))
