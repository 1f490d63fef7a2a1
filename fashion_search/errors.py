"""Typed errors: each says what was wrong with the input; nothing was changed.

Each class carries how it is answered: its HTTP status (REST and GraphQL) and its gRPC status
code, by name (the model server); a subclass answers as its base unless it says otherwise.
"""

from __future__ import annotations


class FashionSearchError(Exception):
    """Base of every error the project raises on purpose: by default, what the caller sent
    is wrong."""

    http_status: int = 400
    grpc_code: str = "INVALID_ARGUMENT"


class DependencyUnavailableError(FashionSearchError):
    """A dependency did not do its part (the same work succeeds once it is back)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class CatalogError(FashionSearchError):
    """A catalog operation was refused; the catalog is unchanged."""


class ProductNotFoundError(CatalogError):
    """No product has the requested id."""

    http_status = 404
    grpc_code = "NOT_FOUND"

    def __init__(self, product_id: int) -> None:
        super().__init__(f"product {product_id} does not exist")
        self.product_id = product_id


class RuleNotFoundError(CatalogError):
    """No merchandising rule or synonym set has the requested id."""

    http_status = 404
    grpc_code = "NOT_FOUND"

    def __init__(self, rule_id: int) -> None:
        super().__init__(f"rule {rule_id} does not exist")


class ExperimentNotFoundError(CatalogError):
    """No experiment has the requested id (or none has run yet)."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class ExperimentStateError(CatalogError):
    """An experiment already runs (one at a time), or the one named has stopped."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"


class EmbeddingDimensionError(CatalogError):
    """A vector does not have the catalog's embedding dimension."""

    http_status = 503
    grpc_code = "FAILED_PRECONDITION"

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"embedding has dimension {got}, the catalog stores dimension {expected}")
        self.expected = expected
        self.got = got


class ProductNotEmbeddedError(CatalogError):
    """The product has no embedding yet (the catalog is still being embedded)."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"

    def __init__(self, product_id: int) -> None:
        super().__init__(f"product {product_id} has no embedding yet")
        self.product_id = product_id


class InvalidFilterError(CatalogError):
    """A metadata filter names an unknown field or has an unusable value."""


class InvalidProductError(CatalogError):
    """A product record is malformed (missing field, bad image key, duplicate id in a batch)."""


class InvalidArgumentError(CatalogError):
    """A paging or search argument is out of range."""


class InvalidRequestError(InvalidArgumentError):
    """A search request has a value that does not validate (the same answer over REST and
    GraphQL)."""

    http_status = 422


class StorageError(FashionSearchError):
    """An object-store operation was refused."""


class InvalidObjectKeyError(StorageError):
    """An object key is empty, too long, or escapes the key layout."""


class ObjectNotFoundError(StorageError):
    """The bucket has no object under that key."""

    http_status = 404
    grpc_code = "NOT_FOUND"

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"s3://{bucket}/{key} does not exist")
        self.bucket = bucket
        self.key = key


class ObjectChangedError(StorageError):
    """The object was overwritten since the event that names it (its ETag differs)."""

    def __init__(self, bucket: str, key: str, etag: str) -> None:
        super().__init__(f"s3://{bucket}/{key} no longer has ETag {etag}")


class DatasetError(FashionSearchError):
    """The dataset source cannot be read."""


class InvalidImageError(FashionSearchError):
    """The bytes are not a decodable image."""

    http_status = 422


class ImageTooLargeError(FashionSearchError):
    """The image exceeds the byte or pixel cap."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class VersionNotFoundError(CatalogError):
    """The catalog holds no embeddings of the model version named."""


class NoServingVersionError(CatalogError):
    """No model version serves the catalog yet: nothing can be searched."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class ServingVersionUnavailableError(FashionSearchError):
    """The model server could not embed with the version the catalog serves (it does not hold
    it, or answered with another): the query is refused rather than compared across versions."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class ServingVersionChangedError(CatalogError):
    """The catalog switched its serving version while an upload was embedded: embed again."""

    http_status = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, serving: str) -> None:
        super().__init__(f"the catalog now serves model version {serving}: embed again")
        self.serving = serving


class AccessError(FashionSearchError):
    """The caller may not do this (HTTP 401 or 403)."""


class MissingApiKeyError(AccessError):
    """The route needs an API key and none was sent (HTTP 401)."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class InvalidApiKeyError(AccessError):
    """The key sent is unknown or revoked (HTTP 401)."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class InsufficientScopeError(AccessError):
    """The key is valid but its scope does not cover the route (HTTP 403)."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class RateLimitedError(FashionSearchError):
    """Too many requests from this key or address (HTTP 429, ``retry_after_s``)."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTooLargeError(FashionSearchError):
    """The request body is over the route's limit (HTTP 413)."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
