"""The gRPC EmbeddingService: validation, the loaded versions and their batching, and the
reload as the registry aliases move.

It holds the champion (``FS_MODEL_ALIAS``) and, when the registry has one, the candidate
(``FS_MODEL_CANDIDATE_ALIAS``: the version a rollout embeds the catalog with while the
champion serves, or the previous champion during a rollback window). Each loaded version is a
:class:`Slot`, its model with text and image batchers of its own, so a batch never mixes
versions. A request picks its slot once (its ``model_version``, else the champion's),
preprocesses with that slot's model and runs on that slot's batcher. The poller loads what the
aliases name, unloads what they no longer name, and re-labels when they only move between
loaded versions; every change is a new :class:`Loaded`, assigned at once, so a request sees
the old state or the new one, never a mix.

A threaded (not ``grpc.aio``) server: each call runs on a thread of the server's pool, and the
batcher runs a batch on the thread of one of its requests. With ``grpc.aio`` a text query went
from gRPC's poller thread to the event loop, to a worker thread for the model and back, and its
model call took 0.3-0.6 ms longer (README, Search).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import numpy as np
from mlflow import MlflowClient

from fashion_search.errors import ImageTooLargeError, InvalidImageError
from fashion_search.model.registry import RegisteredVersion, champion, configure_mlflow
from fashion_search.rpc import embedding_pb2 as pb
from fashion_search.rpc import embedding_pb2_grpc as pb_grpc
from fashion_search.settings import Settings
from fashion_search.telemetry.metrics import MODEL_SERVING
from model_server.batcher import MicroBatcher
from model_server.decoding import decode_pool
from model_server.loader import fetch_version, resolve
from model_server.model import ServedModel
from model_server.runtime import CUDA, batch_limits, preferred_variant

log = logging.getLogger(__name__)
Array = np.ndarray[Any, np.dtype[np.float32]]
#: Calls served at once; more wait in gRPC's queue. Enough for a batch of waiting requests.
SERVER_THREADS = 64


def load_model(settings: Settings) -> ServedModel:
    """The model the alias points to now, fetched (or from the cache) and in sessions."""
    client = configure_mlflow(settings)
    return serve_version(settings, client, resolve(settings, client))


def serve_version(
    settings: Settings, client: MlflowClient, version: RegisteredVersion
) -> ServedModel:
    """``version`` in sessions: its fp16 towers where this ONNX Runtime offers CUDA, unless
    the sessions then do not really run on it (``get_providers()`` decides): fp32 then; int8
    with ``FS_MODEL_QUANTIZED``."""
    variant = preferred_variant(settings.model_server.quantized)
    model = ServedModel.configured(fetch_version(settings, client, version, variant), settings)
    if variant == "fp16" and CUDA not in model.providers:
        log.warning("CUDA is offered but the sessions run on %s: serving fp32", model.providers)
        exported = fetch_version(settings, client, version, "fp32")
        model = ServedModel.configured(exported, settings)
    return model


def _in_chunks(embed: Callable[[list[Any]], Array], items: list[Any], size: int) -> Array:
    """``embed`` over at most ``size`` (``model_max_batch``) items at a time: one request bigger
    than that still runs at the best batch size (ViT-B/32 int8 on 2 cores: 64 a batch is 5-10%
    slower an image than 32)."""
    return np.concatenate([embed(items[i : i + size]) for i in range(0, len(items), size)])


@dataclass(frozen=True, eq=False)
class Slot:
    """One loaded version: its model and its own batchers, whose batch functions run that model
    alone (a batch never mixes versions, and says which one computed it)."""

    model: ServedModel
    texts: MicroBatcher[str]
    images: MicroBatcher[Array]

    @classmethod
    def of(cls, model: ServedModel, settings: Settings) -> Slot:
        """``model`` with batchers of the configured batch size and wait."""
        server = settings.model_server
        size, wait = batch_limits(server.max_batch, server.max_wait_ms, model.image.on_gpu)
        version = model.version.version

        def texts(items: list[str]) -> tuple[Array, str]:
            return _in_chunks(model.embed_texts, items, size), version

        def pixels(items: list[Array]) -> tuple[Array, str]:
            return _in_chunks(model.embed_pixels, items, size), version

        return cls(
            model,
            MicroBatcher("text", texts, size, wait),
            MicroBatcher("image", pixels, size, wait),
        )


@dataclass(frozen=True)
class Loaded:
    """The loaded versions and the version each alias names; never changed once built."""

    slots: dict[str, Slot]  # registry version -> its slot
    aliases: dict[str, str]  # alias -> registry version, the champion's alias first
    champion: str  # the registry version of a request that names none

    def slot(self, version: str) -> Slot | None:
        """The slot of ``version`` (the champion's when empty); None when it is not loaded."""
        return self.slots.get(version or self.champion)

    def report(self) -> None:
        """Set the ``fashion_search_model_serving`` gauge to these versions and aliases."""
        MODEL_SERVING.clear()
        for alias, version in self.aliases.items():
            MODEL_SERVING.labels(alias, version).set(1)
        for version in set(self.slots) - set(self.aliases.values()):
            MODEL_SERVING.labels("", version).set(1)

    def describe(self) -> str:
        """E.g. ``3 as champion, 5 as candidate``."""
        named = [f"{version} as {alias}" for alias, version in self.aliases.items()]
        unnamed = [f"{v} (named by no alias)" for v in self.slots if v not in self.aliases.values()]
        return ", ".join(named + unnamed)


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
    """Serves the loaded versions, the champion by default; follows the aliases as they move."""

    def __init__(self, settings: Settings, model: ServedModel) -> None:
        """Serving ``model`` as the champion (:meth:`refresh` adds the candidate)."""
        self.settings = settings
        version = model.version.version
        self.loaded = Loaded(
            {version: Slot.of(model, settings)}, {settings.registry.model_alias: version}, version
        )
        self.loaded.report()
        self._unnamed: set[str] = set()  # loaded versions no alias named at the last poll
        # Decoding and resizing run in parallel, at a lower priority than the model runs.
        self._preprocessing = decode_pool(settings.model_server.decode_pool, model.image.on_gpu)
        self._stopped = threading.Event()

    def _slot(self, context: grpc.ServicerContext, version: str) -> Slot:
        """The slot a request runs on, picked once; FAILED_PRECONDITION when not loaded."""
        loaded = self.loaded
        slot = loaded.slot(version)
        if slot is None:
            _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model version {version} is not loaded here (loaded: {loaded.describe()})",
            )
        return slot

    def EmbedTexts(  # noqa: N802 - gRPC method name
        self, request: pb.EmbedTextsRequest, context: grpc.ServicerContext
    ) -> pb.EmbeddingsResponse:
        """Embed texts (validated: 1..max texts, each 1..max characters) with the version asked
        for, or the champion."""
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
        embeddings, version = self._slot(context, request.model_version).texts.submit(texts)
        log.info("EmbedTexts n=%d %.1f ms", len(texts), (time.perf_counter() - started) * 1000)
        return _response(embeddings, version)

    def EmbedImages(  # noqa: N802 - gRPC method name
        self, request: pb.EmbedImagesRequest, context: grpc.ServicerContext
    ) -> pb.EmbeddingsResponse:
        """Embed encoded images (validated: decodable, under the byte and pixel caps) with the
        version asked for, or the champion: preprocessed for the model that runs them."""
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
        slot = self._slot(context, request.model_version)
        try:
            pixels = list(
                self._preprocessing.map(slot.model.preprocessor(limits.max_image_pixels), images)
            )
        except (InvalidImageError, ImageTooLargeError) as error:
            _abort(context, grpc.StatusCode[error.grpc_code], str(error))
        embeddings, version = slot.images.submit(pixels)
        log.info("EmbedImages n=%d %.1f ms", len(images), (time.perf_counter() - started) * 1000)
        return _response(embeddings, version)

    def Info(  # noqa: N802 - gRPC method name
        self, request: pb.InfoRequest, context: grpc.ServicerContext
    ) -> pb.InfoResponse:
        """What is being served: the champion, and every loaded version with its alias."""
        loaded = self.loaded
        m = loaded.slots[loaded.champion].model
        named = [(version, alias) for alias, version in loaded.aliases.items()]
        named += [(v, "") for v in loaded.slots if v not in loaded.aliases.values()]
        return pb.InfoResponse(
            model_name=m.architecture,
            registry_name=m.version.name,
            registry_version=m.version.version,
            dimension=m.dimension,
            execution_providers=m.providers,
            quantized=m.variant == "int8",
            precision=m.variant,
            versions=[
                pb.ServedVersion(
                    registry_version=v, dimension=loaded.slots[v].model.dimension, alias=alias
                )
                for v, alias in named
            ],
        )

    def Health(  # noqa: N802 - gRPC method name
        self, request: pb.HealthRequest, context: grpc.ServicerContext
    ) -> pb.HealthResponse:
        """SERVING once a model is loaded (always, once the server listens)."""
        return pb.HealthResponse(status=pb.HealthResponse.SERVING)

    def watch_alias(self) -> None:
        """:meth:`refresh` every reload interval until :meth:`stop`."""
        client = configure_mlflow(self.settings)
        while not self._stopped.wait(self.settings.model_server.reload_interval_s):
            self.refresh(client)

    def refresh(self, client: MlflowClient) -> None:
        """Poll both aliases once: load the versions they name that are not loaded, re-label
        when they only moved between loaded versions, and unload a version no alias named at
        this poll nor the one before (an alias swap is two registry calls: a poll between them
        must not unload the version being swapped in).

        Requests in flight finish on the slot they picked. An alias whose version fails to
        load, and the champion's when its alias is gone, stay on the version they named.
        """
        registry = self.settings.registry
        current = self.loaded
        try:
            targets = {
                alias: champion(client, registry.model_name, alias)
                for alias in (registry.model_alias, registry.candidate_alias)
            }
        except Exception:
            log.exception("polling the registry failed; still serving %s", current.describe())
            return
        slots = dict(current.slots)
        aliases: dict[str, str] = {}
        failed: set[str] = set()
        for alias, target in targets.items():
            if target is None:
                if alias == registry.model_alias:
                    log.warning(
                        "no version has alias %s; still serving %s", alias, current.champion
                    )
                    aliases[alias] = current.champion
                continue
            if target.version not in slots and target.version not in failed:
                slot = self._load(client, alias, target)
                if slot is None:
                    failed.add(target.version)
                else:
                    slots[target.version] = slot
            if target.version in slots:
                aliases[alias] = target.version
            elif alias in current.aliases:
                aliases[alias] = current.aliases[alias]
        unnamed = set(slots) - set(aliases.values())
        dropped = unnamed & self._unnamed
        for version in dropped:
            del slots[version]
            log.info("version %s is named by no alias: unloaded", version)
        self._unnamed = unnamed - dropped
        new = Loaded(slots, aliases, aliases[registry.model_alias])
        if new != current:
            self.loaded = new  # one assignment: a request sees the old state or the new one
            new.report()
            log.info("now serving %s", new.describe())

    def _load(self, client: MlflowClient, alias: str, target: RegisteredVersion) -> Slot | None:
        """The version's slot; None (logged) when it fails to load."""
        log.info("alias %s moved to version %s: loading", alias, target.version)
        try:
            return Slot.of(serve_version(self.settings, client, target), self.settings)
        except Exception:
            log.exception("loading version %s failed; still serving the others", target.version)
            return None

    def stop(self) -> None:
        """End :meth:`watch_alias` and the preprocessing threads."""
        self._stopped.set()
        self._preprocessing.shutdown(wait=False, cancel_futures=True)


def create_server(settings: Settings, service: EmbeddingService) -> grpc.Server:
    """A gRPC server for ``service`` on the configured address (not started)."""
    limit = settings.model_server.max_image_bytes * 4 + 1024 * 1024
    server = grpc.server(
        ThreadPoolExecutor(SERVER_THREADS, thread_name_prefix="grpc"),
        # Calls beyond this (running or queued) are answered RESOURCE_EXHAUSTED at once: an
        # overload is refused quickly instead of queueing until the callers time out.
        maximum_concurrent_rpcs=settings.model_server.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    pb_grpc.add_EmbeddingServiceServicer_to_server(service, server)
    server.add_insecure_port(f"{settings.model_server.bind}:{settings.model_server.port}")
    return server


def serve(settings: Settings) -> None:
    """Load the champion (and the candidate, if any), listen on the configured port, serve until
    SIGTERM or SIGINT (which end the process at once while it is still loading)."""
    model = load_model(settings)
    service = EmbeddingService(settings, model)
    service.refresh(configure_mlflow(settings))  # the candidate, if the registry names one
    server = create_server(settings, service)
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "serving %s versions %s (%s, %s) on %s:%d",
        settings.registry.model_name, service.loaded.describe(), model.variant, model.providers,
        settings.model_server.bind, settings.model_server.port,
    )  # fmt: skip
    watcher = threading.Thread(target=service.watch_alias, name="watch-alias", daemon=True)
    watcher.start()
    stop.wait()
    service.stop()
    server.stop(grace=5).wait()
