"""The object store on the real S3 server: key layout, round trips, typed errors."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.exceptions import NoCredentialsError, PartialCredentialsError

from fashion_search.errors import InvalidObjectKeyError, ObjectNotFoundError
from fashion_search.settings import REPO_ROOT, Settings, variable
from fashion_search.storage import ObjectStore, product_image_key, validate_object_key
from tests.helpers import child_env


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


def test_empty_keys_leave_the_credentials_to_boto3s_chain(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No fixed keys: the chain's (here the environment's, with a session token) sign; one of
    the two keys alone is refused; no credentials at all is an error, not an unsigned URL."""
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    no_keys = Settings().replace(storage={"access_key": "", "secret_key": ""})
    with pytest.raises(NoCredentialsError):
        ObjectStore(no_keys, session=boto3.Session()).presigned_url("b", "k")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIATEMPORARY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token/with+chars=")
    query = parse_qs(urlsplit(ObjectStore(no_keys, session=boto3.Session()).presigned_url(
        "b", "k")).query)  # fmt: skip
    assert query["X-Amz-Credential"][0].startswith("ASIATEMPORARY/")
    assert query["X-Amz-Security-Token"] == ["token/with+chars="]
    keyed = Settings().replace(storage={"access_key": "fixed-user", "secret_key": "fixed-key"})
    fixed = ObjectStore(keyed, session=boto3.Session())  # the settings' keys win
    query = parse_qs(urlsplit(fixed.presigned_url("b", "k")).query)
    assert query["X-Amz-Credential"][0].startswith("fixed-user/")
    assert "X-Amz-Security-Token" not in query
    with pytest.raises(PartialCredentialsError):
        ObjectStore(keyed.replace(storage={"secret_key": ""}), session=boto3.Session())


def _temporary_credentials(settings: Settings) -> dict[str, str]:
    """Credentials with a session token from MinIO's STS (AssumeRole, signed with the stack's
    keys)."""
    sts = boto3.client(
        "sts", endpoint_url=settings.storage.endpoint_url, region_name=settings.storage.region,
        aws_access_key_id=settings.storage.access_key,
        aws_secret_access_key=settings.storage.secret_key,
    )  # fmt: skip
    credentials = sts.assume_role(
        RoleArn="arn:minio:iam:::role/fashion-presign", RoleSessionName="presign-test",
        DurationSeconds=900,
    )["Credentials"]  # fmt: skip
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


SIGN_FROM_THE_ENVIRONMENT = """
import sys
from fashion_search.settings import get_settings
from fashion_search.storage import ObjectStore
store = ObjectStore(get_settings())
assert store.get(sys.argv[1], sys.argv[2]) == b"signed with a session token"
print(store.presigned_url(sys.argv[1], sys.argv[2], expires_s=300))
"""


def test_presigned_urls_carry_the_session_token_of_temporary_credentials(
    store: ObjectStore, settings: Settings, tmp_path: Path
) -> None:
    """As on Lambda: no fixed keys, the role's temporary credentials in the environment. The
    store's requests and its presigned URLs use them; the real object store serves the URL,
    and refuses the same URL signed without the token."""
    server = store.client.list_buckets()["ResponseMetadata"]["HTTPHeaders"].get("server", "")
    if "minio" not in server.lower():
        pytest.skip(f"the stack's S3 is {server or 'the fallback'}, not MinIO: no STS")
    bucket, key = settings.storage.datasets_bucket, "splits/v1/temporary credentials.bin"
    store.put(bucket, key, b"signed with a session token", "application/octet-stream")
    temporary = _temporary_credentials(settings)
    env = {
        **child_env(settings), **temporary,
        variable("storage.access_key"): "", variable("storage.secret_key"): "",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true",
    }  # fmt: skip
    env.pop("AWS_PROFILE", None)
    result = subprocess.run(
        [sys.executable, "-c", SIGN_FROM_THE_ENVIRONMENT, bucket, key],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    url = result.stdout.split()[-1]
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Security-Token"] == [temporary["AWS_SESSION_TOKEN"]]
    assert query["X-Amz-Credential"][0].startswith(temporary["AWS_ACCESS_KEY_ID"] + "/")
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"signed with a session token"
    without_token = ObjectStore(settings.replace(storage={
        "access_key": temporary["AWS_ACCESS_KEY_ID"],
        "secret_key": temporary["AWS_SECRET_ACCESS_KEY"],
    })).presigned_url(bucket, key, expires_s=300)  # fmt: skip
    assert "X-Amz-Security-Token" not in without_token
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(without_token)
    assert refused.value.code == 403
