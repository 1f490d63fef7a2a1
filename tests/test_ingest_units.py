"""Pure parts of ingestion: notification parsing, Lambda envelopes, the label vote, which
errors are transient and the backoff."""

from __future__ import annotations

import json

import pytest

from fashion_search.catalog.models import ProductFields
from fashion_search.catalog.vote import vote
from fashion_search.ingest.classify import PREDICTED_LABELS
from fashion_search.ingest.events import MalformedEventError, ObjectRemoved, parse_notification
from functions.events.envelopes import kafka_event, unwrap

MINIO_EVENT = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "fashion-uploads/incoming/navy shirt.jpg",
    "Records": [
        {
            "eventName": "s3:ObjectCreated:Put",
            "s3": {
                "bucket": {"name": "fashion-uploads"},
                "object": {"key": "incoming%2Fnavy+shirt.jpg", "eTag": "abc", "size": 10},
            },
        }
    ],
}


def test_minio_and_aws_notifications_parse_to_decoded_keys() -> None:
    [event] = parse_notification(json.dumps(MINIO_EVENT))
    assert (event.bucket, event.key, event.etag, event.size) == (
        "fashion-uploads", "incoming/navy shirt.jpg", "abc", 10,
    )  # fmt: skip
    aws = {"Records": [{**MINIO_EVENT["Records"][0], "eventName": "ObjectCreated:Put"}]}  # type: ignore[dict-item]
    [from_aws] = parse_notification(aws)
    assert (from_aws.bucket, from_aws.key, from_aws.etag) == (event.bucket, event.key, event.etag)


def test_removals_parse_and_test_events_are_not_uploads() -> None:
    removed = {"Records": [{**MINIO_EVENT["Records"][0], "eventName": "s3:ObjectRemoved:Delete"}]}  # type: ignore[dict-item]
    assert parse_notification(removed) == [
        ObjectRemoved("fashion-uploads", "incoming/navy shirt.jpg", "s3:ObjectRemoved:Delete")
    ]
    assert parse_notification({"Event": "s3:TestEvent", "Bucket": "b"}) == []
    other = {"Records": [{**MINIO_EVENT["Records"][0], "eventName": "s3:ObjectAccessed:Get"}]}  # type: ignore[dict-item]
    assert parse_notification(other) == []


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe",
        "[1, 2]",
        "{}",
        '{"Records": []}',
        '{"Records": [{"eventName": "s3:ObjectCreated:Put"}]}',
        '{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": ""},'
        ' "object": {"key": "a.jpg"}}}]}',
        '{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "b"},'
        ' "object": {"key": "..%2Fescape.jpg"}}}]}',
        '{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "b"},'
        ' "object": {"key": "a.jpg", "size": "big"}}}]}',
    ],
)
def test_malformed_notifications_say_why(payload: str | bytes) -> None:
    with pytest.raises(MalformedEventError):
        parse_notification(payload)


def test_envelopes_unwrap_kafka_sqs_and_direct_events() -> None:
    body = json.dumps(MINIO_EVENT)
    record = {"topic": "t", "partition": 1, "offset": 7, "timestamp": 0, "key": b"k",
              "value": body.encode()}  # fmt: skip
    kind, [delivery] = unwrap(kafka_event([record], "bootstrap"))
    assert (kind, delivery.body, delivery.source) == (
        "kafka", body, {"topic": "t", "partition": 1, "offset": 7},
    )  # fmt: skip
    sqs = {"Records": [{"eventSource": "aws:sqs", "messageId": "m1", "body": body}]}
    kind, [delivery] = unwrap(sqs)
    assert (kind, delivery.id, delivery.body) == ("sqs", "m1", body)
    kind, [delivery] = unwrap(MINIO_EVENT)
    assert kind == "s3" and json.loads(delivery.body) == MINIO_EVENT


def _fields(article: str, colour: str) -> ProductFields:
    return ProductFields(id=1, product_display_name="x", article_type=article, base_colour=colour)


def test_vote_weights_neighbours_by_similarity() -> None:
    neighbours = [_fields("Shirts", "Blue"), _fields("Tshirts", "Blue"), _fields("Tshirts", "Red")]
    predicted = vote(neighbours, [0.9, 0.6, 0.5], ["article_type", "base_colour"])
    assert predicted["article_type"].value == "Tshirts"  # 0.6 + 0.5 outweigh 0.9
    assert predicted["article_type"].confidence == pytest.approx(1.1 / 2.0)
    assert predicted["base_colour"].value == "Blue"
    assert predicted["base_colour"].confidence == pytest.approx(1.5 / 2.0)


def test_vote_without_neighbours_or_positive_similarity() -> None:
    assert vote([], [], ["article_type"])["article_type"].confidence == 0.0
    predicted = vote(
        [_fields("Shirts", "Blue"), _fields("Jeans", "Blue")], [-0.2, -0.1], PREDICTED_LABELS
    )
    assert predicted["article_type"].confidence == pytest.approx(0.5)
    assert predicted["article_type"].value == "Shirts"  # a tie goes to the nearest


def _raised_from(cause: Exception) -> Exception:
    try:
        try:
            raise cause
        except Exception as error:
            raise RuntimeError("wrapped") from error
    except RuntimeError as wrapped:
        return wrapped


def test_dependency_errors_are_transient_and_input_errors_are_not() -> None:
    import psycopg
    from botocore.exceptions import ClientError, EndpointConnectionError
    from confluent_kafka import KafkaError, KafkaException
    from psycopg_pool import PoolTimeout

    from fashion_search.embedding_client import ModelServerOverloadedError
    from fashion_search.errors import ImageTooLargeError, InvalidImageError
    from fashion_search.faults import is_transient
    from fashion_search.ingest.publisher import PublishError

    def s3(code: str, status: int) -> ClientError:
        response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(response, "GetObject")  # type: ignore[arg-type]

    transient = [
        psycopg.OperationalError("server closed the connection"),
        PoolTimeout("couldn't get a connection after 5 s"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:19000"),
        s3("SlowDown", 503),
        s3("XMinioServerNotInitialized", 503),
        KafkaException(KafkaError(KafkaError._TRANSPORT)),
        ModelServerOverloadedError("busy"),
        PublishError("2 messages not delivered"),
        _raised_from(psycopg.OperationalError("down")),
    ]
    permanent = [
        s3("NoSuchKey", 404),
        s3("AccessDenied", 403),
        InvalidImageError("not an image"),
        ImageTooLargeError("too large"),
        psycopg.errors.UniqueViolation("duplicate key"),
        ValueError("a bug"),
        _raised_from(ValueError("a bug")),
    ]
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in permanent] == [False] * len(permanent)


def test_backoff_doubles_up_to_its_cap_and_never_overflows() -> None:
    from fashion_search.faults import backoff

    assert [backoff(n, 0.5, 10.0) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert backoff(10_000, 0.5, 10.0) == 10.0
