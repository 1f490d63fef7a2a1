"""Object store on boto3 for the configured S3 endpoint (MinIO, LocalStack, moto or AWS).

Key layout (one bucket per kind of object, names from settings):

| bucket            | key                                        | what                            |
|-------------------|--------------------------------------------|---------------------------------|
| ``images``        | ``products/{id}.jpg``                      | catalog product images          |
| ``uploads``       | ``incoming/{merchant file name}``          | merchant drops (bucket events)  |
| ``datasets``      | ``splits/{version}/{train,test}.parquet``  | train/test splits + manifest    |
| ``models``        | ``mlflow/...``                             | MLflow artifacts (ONNX exports) |
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import boto3
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError
from botocore.utils import percent_encode

from fashion_search.errors import (
    ImageTooLargeError,
    InvalidObjectKeyError,
    ObjectChangedError,
    ObjectNotFoundError,
)
from fashion_search.settings import Settings, variable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CopySourceTypeDef

MAX_KEY_BYTES = 1024
_UNSAFE_KEY = re.compile(r"[\x00-\x1f\x7f\\]")
_MISSING = ("NoSuchKey", "NoSuchBucket", "404", "NotFound")


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes with its ETag, content type and user metadata."""

    data: bytes
    etag: str
    content_type: str
    metadata: dict[str, str]


def _typed(error: ClientError, bucket: str, key: str, etag: str | None) -> Exception:
    """The typed error for a refused read of ``key`` (of ``etag`` when given):
    ObjectNotFoundError, ObjectChangedError, or ``error`` itself."""
    code = error.response.get("Error", {}).get("Code")
    if code in _MISSING:
        return ObjectNotFoundError(bucket, key)
    if code in ("PreconditionFailed", "412") and etag:
        return ObjectChangedError(bucket, key, etag)
    return error


def product_image_key(product_id: int) -> str:
    """Key of a catalog product's image in the images bucket."""
    return f"products/{product_id}.jpg"


def validate_object_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise InvalidObjectKeyError."""
    if not key or not key.strip():
        raise InvalidObjectKeyError("object key is empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidObjectKeyError(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/") or _UNSAFE_KEY.search(key):
        raise InvalidObjectKeyError(f"object key {key!r} is absolute or has control characters")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidObjectKeyError(f"object key {key!r} has an empty, '.' or '..' segment")
    return key


def fixed_keys(settings: Settings) -> tuple[str, str] | None:
    """The settings' key pair (``storage.access_key``, ``storage.secret_key``); None when both are
    empty, so boto3's standard chain decides (environment with a session token, shared files,
    container or instance role: on Lambda, the function's role). PartialCredentialsError when
    only one of them is set."""
    storage = settings.storage
    if not (storage.access_key or storage.secret_key):
        return None
    if not (storage.access_key and storage.secret_key):
        missing = variable("storage.secret_key" if storage.access_key else "storage.access_key")
        raise PartialCredentialsError(provider="settings", cred_var=missing)
    return storage.access_key, storage.secret_key


def make_s3_client(settings: Settings, session: boto3.Session | None = None) -> S3Client:
    """A boto3 S3 client for the configured endpoint (path-style, retried), on the settings'
    fixed keys or else the credentials ``session`` (default: boto3's) resolves."""
    session = session or boto3._get_default_session()
    access_key, secret_key = fixed_keys(settings) or (None, None)
    client: S3Client = session.client(
        "s3",
        endpoint_url=settings.storage.endpoint_url or None,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=settings.storage.region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            # A store that takes the connection and never answers must not stall a caller for
            # botocore's default minutes (a refused connection fails at once anyway).
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=32,
        ),
    )
    return client


class ObjectStore:
    """Buckets and objects of fashion-search."""

    def __init__(
        self,
        settings: Settings,
        client: S3Client | None = None,
        session: boto3.Session | None = None,
    ) -> None:
        """``session`` (default: boto3's) resolves the credentials when the settings have no
        fixed keys; presigned URLs are signed with the same ones as the client's requests."""
        self.settings = settings
        session = session or boto3._get_default_session()
        self.client = client or make_s3_client(settings, session)
        self._url_base = (
            settings.storage.public_endpoint_url
            or settings.storage.endpoint_url
            or self.client.meta.endpoint_url
        ).rstrip("/")
        keys = fixed_keys(settings)
        # The session caches what it resolved: a client it created holds the same object,
        # refreshed in place when the credentials are temporary (container or instance role).
        self._credentials: Credentials | None = (
            Credentials(*keys) if keys else session.get_credentials()
        )

    def ensure_buckets(self, buckets: Iterable[str] | None = None) -> None:
        """Create the configured buckets that do not exist yet."""
        existing = {b["Name"] for b in self.client.list_buckets().get("Buckets", [])}
        for bucket in buckets or self.settings.storage.buckets:
            if bucket not in existing:
                self.client.create_bucket(Bucket=bucket)

    def put(self, bucket: str, key: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Store ``data`` under ``key``; returns the object's ETag."""
        validate_object_key(key)
        response = self.client.put_object(
            Bucket=bucket, Key=key, Body=data, ContentType=content_type
        )
        return response["ETag"].strip('"')

    def put_many(
        self,
        bucket: str,
        objects: Iterable[tuple[str, bytes]],
        content_type: str = "image/jpeg",
        workers: int = 16,
    ) -> int:
        """Store many objects concurrently; returns how many were written."""
        items = [(validate_object_key(key), data) for key, data in objects]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda kv: self.put(bucket, kv[0], kv[1], content_type), items))
        return len(items)

    def get(self, bucket: str, key: str) -> bytes:
        """Read an object; ObjectNotFoundError when it does not exist."""
        return self.read(bucket, key).data

    def read(
        self, bucket: str, key: str, etag: str | None = None, max_bytes: int | None = None
    ) -> StoredObject:
        """Read an object with its metadata.

        ObjectNotFoundError when it does not exist, ObjectChangedError when ``etag`` is given
        and the object now has another, ImageTooLargeError over ``max_bytes`` (not downloaded).
        """
        validate_object_key(key)
        try:
            if etag:
                response = self.client.get_object(Bucket=bucket, Key=key, IfMatch=etag)
            else:
                response = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise _typed(error, bucket, key, etag) from error
        body = response["Body"]
        if max_bytes is not None and response["ContentLength"] > max_bytes:
            body.close()
            raise ImageTooLargeError(
                f"s3://{bucket}/{key} has {response['ContentLength']:,} bytes,"
                f" more than the {max_bytes:,} allowed"
            )
        return StoredObject(
            data=body.read(),
            etag=response["ETag"].strip('"'),
            content_type=response.get("ContentType", "application/octet-stream"),
            metadata=dict(response.get("Metadata", {})),
        )

    def copy(
        self,
        source_bucket: str,
        source_key: str,
        bucket: str,
        key: str,
        if_match: str = "",
        content_type: str = "",
    ) -> None:
        """Server-side copy of an object; with ``if_match``, only of that ETag
        (ObjectChangedError when the object now has another, ObjectNotFoundError when it is
        gone); with ``content_type``, stored with that type and no user metadata, else both
        kept."""
        validate_object_key(key)
        source: CopySourceTypeDef = {"Bucket": source_bucket, "Key": source_key}
        options: dict[str, str] = {}
        if if_match:
            options["CopySourceIfMatch"] = if_match
        if content_type:
            options |= {"MetadataDirective": "REPLACE", "ContentType": content_type}
        try:
            self.client.copy_object(Bucket=bucket, Key=key, CopySource=source, **options)  # type: ignore[arg-type]
        except ClientError as error:
            raise _typed(error, source_bucket, source_key, if_match) from error

    def etag(self, bucket: str, key: str) -> str | None:
        """The ETag of the object under ``key`` now, or None when there is none."""
        validate_object_key(key)
        try:
            response = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        return response["ETag"].strip('"')

    def exists(self, bucket: str, key: str) -> bool:
        """Whether ``key`` exists in ``bucket``."""
        return self.etag(bucket, key) is not None

    def presigned_url(self, bucket: str, key: str, expires_s: int = 3600) -> str:
        """A time-limited GET URL for an object (SigV4, path style), on the public endpoint
        when one is set, signed with the store's credentials: the fixed keys of the settings,
        or those boto3's chain resolved, with their session token (``X-Amz-Security-Token``)
        when they are temporary. A URL outlives neither its ``expires_s`` nor the credentials
        that signed it (on Lambda, the role's session: hours).

        botocore's SigV4 query signer is called directly: the client's
        ``generate_presigned_url`` resolves the endpoint and emits its events on every call,
        twice the cost of signing (search signs ten URLs a query).
        """
        validate_object_key(key)
        if self._credentials is None:
            raise NoCredentialsError()
        path = f"/{bucket}/{percent_encode(key, safe='/~')}"
        request = AWSRequest(method="GET", url=self._url_base + path)
        # A consistent snapshot (key, secret, token), refreshed first if about to expire.
        credentials = self._credentials.get_frozen_credentials()
        S3SigV4QueryAuth(
            credentials, "s3", self.settings.storage.region, expires=expires_s
        ).add_auth(request)
        return str(request.url)

    def list_etags(self, bucket: str, prefix: str = "") -> dict[str, tuple[str, datetime]]:
        """Every object of ``bucket`` under ``prefix``: key -> (ETag, last modified)."""
        paginator = self.client.get_paginator("list_objects_v2")
        return {
            obj["Key"]: (obj["ETag"].strip('"'), obj["LastModified"])
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        }

    def delete_bucket(self, bucket: str) -> None:
        """Delete a bucket and everything in it (used to clean up test buckets)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            keys = [obj["Key"] for obj in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys]}
                )
        self.client.delete_bucket(Bucket=bucket)
