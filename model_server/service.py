"""The gRPC EmbeddingService: validation, batching, hot reload when the registry alias moves.

A threaded (not ``grpc.aio``) server: each call runs on a thread of the server's pool, and the
batcher runs a batch on the thread of one of its requests. With ``grpc.aio`` a text query went
from gRPC's poller thread to the event loop, to a worker thread for the model and back, and its
model call took 0.3-0.6 ms longer (README, Search).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
import numpy as np

from fashion_search.background import background_pool
from fashion_search.errors import ImageTooLargeError, InvalidImageError
from fashion_search.model.registry import configure_mlflow
from fashion_search.rpc import embedding_pb2 as pb
from fashion_search.rpc import embedding_pb2_grpc as pb_grpc
from fashion_search.settings import Settings
from model_server.batcher import MicroBatcher
from model_server.loader import fetch_version, resolve
from model_server.model import ServedModel

log = logging.getLogger(__name__)
Array = np.ndarray[Any, np.dtype[np.float32]]
#: Calls served at once; more wait in gRPC's queue. Enough for a batch of waiting requests.
SERVER_THREADS = 64


def load_model(settings: Settings) -> ServedModel:
    """The model the alias points to now, fetched (or from the cache) and in sessions."""
    client = configure_mlflow(settings)
    exported = fetch_version(settings, client, resolve(settings, client))
    return ServedModel.configured(exported, settings)


def _response(embeddings: Array, version: str) -> pb.EmbeddingsResponse:
    return pb.EmbeddingsResponse(
        embeddings=[pb.Embedding(values=row.tolist()) for row in embeddings],
        model_version=version,
    )


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: abort raises")  # for the type checker


def _check_count(context: grpc.ServicerContext, what: str, count: int, limit: int) -> None:
    if count == 0:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{what} is empty")
    if count > limit:
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{count} {what} in one call; at most {limit}",
        )


class EmbeddingService(pb_grpc.EmbeddingServiceServicer):
    """Serves the current model; swaps in a new one when the alias moves."""

    def __init__(self, settings: Settings, model: ServedModel) -> None:
        self.settings = settings
        self.model = model
        wait = settings.model_server.max_wait_ms / 1000
        self.texts: MicroBatcher[str] = MicroBatcher(
            "text", self._embed_texts, settings.model_server.max_batch, wait
        )
        self.images: MicroBatcher[Array] = MicroBatcher(
            "image", self._embed_pixels, settings.model_server.max_batch, wait
        )
        # Decoding and resizing run in parallel, at a lower priority than the model runs.
        self._preprocessing = background_pool(os.cpu_count() or 1, "preprocess")
        self._stopped = threading.Event()

    # Batch functions read self.model once: a batch never mixes two versions, and says which.
    def _embed_texts(self, texts: list[str]) -> tuple[Array, str]:
        model = self.model
        return self._in_chunks(model.embed_texts, texts), model.version.version

    def _embed_pixels(self, pixels: list[Array]) -> tuple[Array, str]:
        model = self.model
        return self._in_chunks(model.embed_pixels, pixels), model.version.version

    def _in_chunks(self, embed: Callable[[list[Any]], Array], items: list[Any]) -> Array:
        """``embed`` over at most ``model_max_batch`` items at a time: one request bigger than
        that still runs at the best batch size (ViT-B/32 int8 on 2 cores: 64 a batch is 5-10%
        slower an image than 32)."""
        size = self.settings.model_server.max_batch
        return np.concatenate([embed(items[i : i + size]) for i in range(0, len(items), size)])

    def EmbedTexts(  # noqa: N802 - gRPC method name
        self, request: pb.EmbedTextsRequest, context: grpc.ServicerContext
    ) -> pb.EmbeddingsResponse:
        """Embed texts (validated: 1..max texts, each 1..max characters)."""
        started = time.perf_counter()
        texts = list(request.texts)
        limits = self.settings.model_server
        _check_count(context, "texts", len(texts), limits.max_items)
        for i, text in enumerate(texts):
            if not text.strip():
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"text {i} is empty")
            if len(text) > limits.max_text_chars:
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"text {i} has {len(text)} characters; at most {limits.max_text_chars}",
                )
        embeddings, version = self.texts.submit(texts)
        log.info("EmbedTexts n=%d %.1f ms", len(texts), (time.perf_counter() - started) * 1000)
        return _response(embeddings, version)

    def EmbedImages(  # noqa: N802 - gRPC method name
        self, request: pb.EmbedImagesRequest, context: grpc.ServicerContext
    ) -> pb.EmbeddingsResponse:
        """Embed encoded images (validated: decodable, under the byte and pixel caps)."""
        started = time.perf_counter()
        images = list(request.images)
        limits = self.settings.model_server
        _check_count(context, "images", len(images), limits.max_items)
        limit = limits.max_image_bytes
        for i, data in enumerate(images):
            if len(data) > limit:
                _abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"image {i} has {len(data):,} bytes; at most {limit:,}",
                )
        model = self.model
        try:
            pixels = list(
                self._preprocessing.map(
                    lambda data: model.preprocess(data, limits.max_image_pixels), images
                )
            )
        except InvalidImageError as error:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except ImageTooLargeError as error:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        embeddings, version = self.images.submit(pixels)
        log.info("EmbedImages n=%d %.1f ms", len(images), (time.perf_counter() - started) * 1000)
        return _response(embeddings, version)

    def Info(  # noqa: N802 - gRPC method name
        self, request: pb.InfoRequest, context: grpc.ServicerContext
    ) -> pb.InfoResponse:
        """What is being served."""
        m = self.model
        return pb.InfoResponse(
            model_name=m.architecture,
            registry_name=m.version.name,
            registry_version=m.version.version,
            dimension=m.dimension,
            execution_providers=m.providers,
            quantized=m.variant == "int8",
        )

    def Health(  # noqa: N802 - gRPC method name
        self, request: pb.HealthRequest, context: grpc.ServicerContext
    ) -> pb.HealthResponse:
        """SERVING once a model is loaded (always, once the server listens)."""
        return pb.HealthResponse(status=pb.HealthResponse.SERVING)

    def watch_alias(self) -> None:
        """Poll the registry until :meth:`stop`; load and swap in the new version when the
        alias moves.

        Requests in flight finish on the model they started with; a failed load keeps the
        current model serving.
        """
        client = configure_mlflow(self.settings)
        while not self._stopped.wait(self.settings.model_server.reload_interval_s):
            try:
                target = resolve(self.settings, client)
                if target.version == self.model.version.version:
                    continue
                log.info(
                    "alias %s moved to version %s: loading",
                    self.settings.registry.model_alias,
                    target.version,
                )
                exported = fetch_version(self.settings, client, target)
                self.model = ServedModel.configured(exported, self.settings)
                log.info("now serving version %s", self.model.version.version)
            except Exception:
                log.exception("reload failed; still serving version %s", self.model.version.version)

    def stop(self) -> None:
        """End :meth:`watch_alias` and the preprocessing threads."""
        self._stopped.set()
        self._preprocessing.shutdown(wait=False, cancel_futures=True)


def create_server(settings: Settings, service: EmbeddingService) -> grpc.Server:
    """A gRPC server for ``service`` on the configured address (not started)."""
    limit = settings.model_server.max_image_bytes * 4 + 1024 * 1024
    server = grpc.server(
        ThreadPoolExecutor(SERVER_THREADS, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    pb_grpc.add_EmbeddingServiceServicer_to_server(service, server)
    server.add_insecure_port(f"{settings.model_server.bind}:{settings.model_server.port}")
    return server


def serve(settings: Settings) -> None:
    """Load the champion, listen on the configured port, serve until SIGTERM or SIGINT (which
    end the process at once while it is still loading)."""
    model = load_model(settings)
    service = EmbeddingService(settings, model)
    server = create_server(settings, service)
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "serving %s version %s (%s, %s) on %s:%d",
        settings.registry.model_name, model.version.version, model.variant, model.providers,
        settings.model_server.bind, settings.model_server.port,
    )  # fmt: skip
    watcher = threading.Thread(target=service.watch_alias, name="watch-alias", daemon=True)
    watcher.start()
    stop.wait()
    service.stop()
    server.stop(grace=5).wait()
