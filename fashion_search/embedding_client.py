"""Typed client of the model server (used by the functions, the DAGs and the benchmarks).

The address may name several replicas: ``10.0.0.5:50051,10.0.0.6:50051`` (IP addresses), or
``dns:///model-server:50051`` for a name that resolves to several. gRPC balances the calls over
the ready ones (``round_robin``) and tries a call a replica could not take (UNAVAILABLE: it died
or is restarting) again on another, with backoff, up to four times.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from fashion_search.errors import FashionSearchError
from fashion_search.rpc import embedding_pb2 as pb
from fashion_search.rpc import embedding_pb2_grpc as pb_grpc

Array = np.ndarray[Any, np.dtype[np.float32]]
_MAX_MESSAGE = 96 * 1024 * 1024
#: The longest a channel waits between attempts to reach a model server that is down.
MAX_RECONNECT_BACKOFF_MS = 1000


class EmbeddingRequestError(FashionSearchError):
    """The model server refused the input (bad or oversized text or image)."""

    http_status = 422

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.grpc_code = code.name
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            self.http_status = 413


class ModelVersionNotLoadedError(EmbeddingRequestError):
    """The model server does not hold the version asked for (FAILED_PRECONDITION): it is
    still loading it, so try again shortly."""

    http_status = 503


class ModelServerUnavailableError(FashionSearchError):
    """The model server cannot be reached or did not answer in time."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class ModelServerOverloadedError(ModelServerUnavailableError):
    """The model server refused the call: it holds as many as it takes (try again shortly)."""


#: gRPC's answer (RESOURCE_EXHAUSTED) to a call past the server's ``maximum_concurrent_rpcs``.
_OVERLOADED = "Concurrent RPC limit exceeded!"


@dataclass(frozen=True)
class ModelInfo:
    """What the model server serves: the champion (what a request naming no version gets),
    and every loaded version."""

    model_name: str
    registry_name: str
    registry_version: str
    dimension: int
    execution_providers: list[str]
    quantized: bool
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> registry version
    versions: dict[str, int] = field(default_factory=dict)  # registry version -> dimension
    precision: str = ""  # the towers' variant: fp32, int8 or fp16 (empty from older servers)

    def describe(self) -> str:
        """One line for logs and benchmark tables."""
        precision = self.precision or ("int8" if self.quantized else "fp32")
        return (
            f"model {self.registry_name} v{self.registry_version} ({self.dimension}-d),"
            f" {precision}, {', '.join(self.execution_providers)}"
        )


@dataclass(frozen=True)
class Embeddings:
    """Embeddings ``[N, D]`` and the registry version that produced them."""

    vectors: Array
    model_version: str


#: Round robin over the resolved addresses; UNAVAILABLE calls retried (gRPC service config).
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": pb.DESCRIPTOR.services_by_name["EmbeddingService"].full_name}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def channel_target(address: str) -> str:
    """The gRPC target of an address: one ``host:port`` or ``scheme:...`` as it is, several
    comma-separated IP ``host:port`` as a static list (``ipv4:``/``ipv6:``)."""
    replicas = [part.strip() for part in address.split(",") if part.strip()]
    if len(replicas) < 2:
        return address.strip()
    hosts = [replica.rsplit(":", 1)[0].strip("[]") for replica in replicas]
    try:
        versions = {ipaddress.ip_address(host).version for host in hosts}
    except ValueError as error:
        raise ValueError(
            f"several model servers are given by IP address ({address!r}); for names, one that"
            " resolves to all of them: dns:///name:port"
        ) from error
    if len(versions) > 1:
        raise ValueError(f"model server addresses mix IPv4 and IPv6: {address!r}")
    return f"ipv{versions.pop()}:{','.join(replicas)}"


class EmbeddingClient:
    """Blocking gRPC client; one channel (to one or several replicas), reused."""

    def __init__(self, address: str, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            channel_target(address),
            options=[
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.enable_retries", 1),
                ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
                # reconnect to a server that was down within a second of its return (gRPC's
                # default backoff grows to two minutes)
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
            ],
        )
        self._stub = pb_grpc.EmbeddingServiceStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as error:
            code = error.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ModelServerUnavailableError(f"model server: {error.details()}") from error
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.details() == _OVERLOADED:
                raise ModelServerOverloadedError(
                    "model server: too many calls at once (FS_MODEL_MAX_CONCURRENT_RPCS)"
                ) from error
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise ModelVersionNotLoadedError(code, error.details()) from error
            raise EmbeddingRequestError(code, error.details()) from error

    @staticmethod
    def _embeddings(response: pb.EmbeddingsResponse) -> Embeddings:
        vectors = np.array([e.values for e in response.embeddings], dtype=np.float32)
        return Embeddings(vectors, response.model_version)

    def embed_texts(self, texts: Sequence[str], version: str | None = None) -> Embeddings:
        """L2-normalised embeddings of ``texts`` by registry version ``version`` (None: the
        champion); :class:`ModelVersionNotLoadedError` when the server does not hold it."""
        request = pb.EmbedTextsRequest(texts=list(texts), model_version=version or "")
        return self._embeddings(self._call(self._stub.EmbedTexts, request))

    def embed_images(self, images: Sequence[bytes], version: str | None = None) -> Embeddings:
        """L2-normalised embeddings of encoded images by registry version ``version`` (None:
        the champion); :class:`ModelVersionNotLoadedError` when the server does not hold it."""
        request = pb.EmbedImagesRequest(images=list(images), model_version=version or "")
        return self._embeddings(self._call(self._stub.EmbedImages, request))

    def info(self) -> ModelInfo:
        """The served model."""
        r = self._call(self._stub.Info, pb.InfoRequest())
        return ModelInfo(
            r.model_name, r.registry_name, r.registry_version, r.dimension,
            list(r.execution_providers), r.quantized,
            aliases={v.alias: v.registry_version for v in r.versions if v.alias},
            versions={v.registry_version: v.dimension for v in r.versions},
            precision=r.precision,
        )  # fmt: skip

    def healthy(self) -> bool:
        """Whether the server answers SERVING."""
        try:
            response = self._call(self._stub.Health, pb.HealthRequest())
        except ModelServerUnavailableError:
            return False
        return bool(response.status == pb.HealthResponse.SERVING)
