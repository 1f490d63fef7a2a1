"""A served model version: tokeniser, preprocessing and the ONNX sessions of its towers (no
torch: the tokeniser is the export's ``tokenizer.json``)."""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from fashion_search.model.preprocess import preprocess_image
from fashion_search.model.tokens import cut_tokens
from fashion_search.settings import Settings
from model_server.loader import ExportedModel
from model_server.runtime import OnnxSession, thread_count
from model_server.tokenizer import TextTokenizer

Array = np.ndarray[Any, np.dtype[np.float32]]
#: How long the text tower must have been idle for a lone text to take the lone-text session.
#: At concurrency 1 a query leaves 8-10 ms between text runs; under load they follow closer,
#: and the cores are better left to the API and the database (README, Search).
LONE_TEXT_IDLE_S = 0.004


class ServedModel:
    """Embeds texts and images with one registered version's ONNX towers."""

    def __init__(
        self,
        exported: ExportedModel,
        image_threads: int = 0,
        text_threads: int = 0,
        lone_text_threads: int = 0,
    ) -> None:
        """Intra-op threads of each session, 0 = one per core. On CPU, with ``lone_text_threads``
        more than ``text_threads``, a second text session runs a lone text on an idle model."""
        self.version = exported.version
        self.variant = exported.variant
        facts = exported.facts
        self.architecture = facts.architecture
        self.dimension = facts.embed_dim
        self.image_size = facts.image_size
        self.mean, self.std = facts.mean, facts.std
        self._tokenizer = TextTokenizer.from_file(exported.files["tokenizer"])
        if self._tokenizer.context_length != facts.context_length:
            raise ValueError(
                f"tokenizer.json pads to {self._tokenizer.context_length} tokens, the model's"
                f" context is {facts.context_length}"
            )
        self.text = OnnxSession(exported.files["text"], text_threads)
        on_cpu = self.text.providers[0] == "CPUExecutionProvider"
        self.lone_text = (
            OnnxSession(exported.files["text"], lone_text_threads)
            if on_cpu and thread_count(lone_text_threads) > thread_count(text_threads)
            else None
        )
        self.image = OnnxSession(exported.files["image"], image_threads)
        self._text_ended = -math.inf  # perf_counter() when the last text run ended
        self._image_running = False

    @classmethod
    def configured(cls, exported: ExportedModel, settings: Settings) -> ServedModel:
        """With the thread counts of ``settings`` (the text tower's: half the cores unless set;
        a lone text's: every core unless set)."""
        text_threads = settings.model_server.text_threads or max(1, (os.cpu_count() or 1) // 2)
        return cls(
            exported,
            settings.model_server.threads,
            text_threads,
            settings.model_server.lone_text_threads,
        )

    @property
    def providers(self) -> list[str]:
        """Execution providers the sessions really use."""
        return sorted(set(self.text.providers) | set(self.image.providers))

    def embed_texts(self, texts: list[str]) -> Array:
        """Tokenise, cut after the last end-of-text token, run the text tower: a lone text on
        an idle model (no image batch running, no text run for ``LONE_TEXT_IDLE_S``) on the
        lone-text session, everything else on the text session."""
        tokens = cut_tokens(self._tokenizer(texts))
        session = self.text
        idle = time.perf_counter() - self._text_ended >= LONE_TEXT_IDLE_S
        if self.lone_text is not None and len(texts) == 1 and idle and not self._image_running:
            session = self.lone_text
        try:
            return session.run(tokens)
        finally:
            self._text_ended = time.perf_counter()

    def preprocess(self, data: bytes, max_pixels: int) -> Array:
        """Decoded, padded, resized, normalised ``[3, S, S]`` pixels of one image."""
        return preprocess_image(data, self.image_size, self.mean, self.std, max_pixels)

    def embed_pixels(self, pixels: list[Array]) -> Array:
        """Run the image tower on preprocessed images."""
        self._image_running = True
        try:
            return self.image.run(np.stack(pixels))
        finally:
            self._image_running = False
