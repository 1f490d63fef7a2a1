"""The object store on the real S3 server: key layout, round trips, typed errors."""

from __future__ import annotations

import urllib.request

import pytest

from fashion_search.errors import InvalidObjectKeyError, ObjectNotFoundError
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore, product_image_key, validate_object_key


@pytest.mark.parametrize(
    "key", ["", " ", "/abs", "a/../b", "a//b", "./a", "tab\there", "back\\slash", "k" * 1025]
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidObjectKeyError):
        validate_object_key(key)


def test_key_layout() -> None:
    assert product_image_key(15970) == "products/15970.jpg"
    assert validate_object_key("incoming/Men's navy shirt (1).jpg")


def test_buckets_exist_and_round_trip(store: ObjectStore, settings: Settings) -> None:
    names = {b["Name"] for b in store.client.list_buckets()["Buckets"]}
    assert set(settings.storage.buckets) <= names
    data = bytes(range(256)) * 100
    etag = store.put(
        settings.storage.datasets_bucket, "splits/v1/blob.bin", data, "application/x-test"
    )
    assert len(etag) == 32
    assert store.get(settings.storage.datasets_bucket, "splits/v1/blob.bin") == data
    assert store.exists(settings.storage.datasets_bucket, "splits/v1/blob.bin")
    with urllib.request.urlopen(
        store.presigned_url(settings.storage.datasets_bucket, "splits/v1/blob.bin")
    ) as r:
        assert r.read() == data


def test_missing_and_invalid_objects(store: ObjectStore, settings: Settings) -> None:
    with pytest.raises(ObjectNotFoundError, match=r"nope\.jpg"):
        store.get(settings.storage.images_bucket, "products/nope.jpg")
    assert not store.exists(settings.storage.images_bucket, "products/nope.jpg")
    with pytest.raises(InvalidObjectKeyError):
        store.put(settings.storage.images_bucket, "../escape.jpg", b"x")
    with pytest.raises(InvalidObjectKeyError):
        store.put_many(settings.storage.images_bucket, [("products/ok.jpg", b"x"), ("", b"y")])
    assert not store.exists(
        settings.storage.images_bucket, "products/ok.jpg"
    )  # nothing half-written


@pytest.mark.parametrize(
    "key", ["incoming/Men's navy shirt (1).jpg", "incoming/chemise bleue é 日本 +&=%.jpg"]
)
def test_presigned_urls_of_keys_that_need_encoding(
    store: ObjectStore, settings: Settings, key: str
) -> None:
    store.put(settings.storage.uploads_bucket, key, key.encode())
    url = store.presigned_url(settings.storage.uploads_bucket, key)
    assert "X-Amz-Signature=" in url  # SigV4, which every S3 region accepts
    with urllib.request.urlopen(url) as r:
        assert r.read() == key.encode()
    store.client.delete_object(Bucket=settings.storage.uploads_bucket, Key=key)


def test_presigned_urls_use_the_public_endpoint(store: ObjectStore, settings: Settings) -> None:
    """Behind compose the store is ``minio:9000`` for services, a host port for browsers."""
    public = settings.storage.endpoint_url.replace("127.0.0.1", "localhost")
    public_store = ObjectStore(settings.replace(storage={"public_endpoint_url": public}))
    store.put(settings.storage.datasets_bucket, "splits/v1/public.bin", b"seen from the host")
    url = public_store.presigned_url(settings.storage.datasets_bucket, "splits/v1/public.bin")
    assert url.startswith(public + "/")
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"seen from the host"
