"""Messages the ingestion path produces: one per processed upload on the output topic, one per
event it gave up on on the dead-letter topic. JSON, camelCase like the S3 events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer
from pydantic.alias_generators import to_camel

#: ``created``: a new product; ``updated``: a new version of an uploaded object replaced the
#: product's image and labels; ``duplicate``: this version was processed before (redelivery);
#: ``superseded``: the object changed after this event, whose own event will follow;
#: ``removed``: the object was deleted and its product left the catalog (``results`` names it;
#: empty when there was none, e.g. a removal delivered again).
Status = Literal["created", "updated", "duplicate", "superseded", "removed"]


class _Message(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_json(self) -> bytes:
        """The message as sent."""
        return self.model_dump_json(by_alias=True).encode()


class ClassifiedProduct(_Message):
    """The catalog product made from an upload, with its predicted labels (sent as fields of
    their own, camelCase: ``"articleType": "Shirts"``)."""

    id: int
    filename: str
    s3_path: str = Field(alias="s3_path")
    labels: dict[str, str | None]  # snake_case product field -> predicted value
    confidence: dict[str, float]  # camelCase label -> share of the neighbours' vote
    model_version: str | None

    @model_serializer(mode="wrap")
    def _labels_as_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        labels = data.pop("labels")
        return {**data, **{to_camel(name): value for name, value in labels.items()}}


class UploadProcessed(_Message):
    """Output-topic message for one object-created or object-removed event."""

    bucket: str
    key: str
    e_tag: str = Field(alias="eTag")
    status: Status
    results: list[ClassifiedProduct]


class DeadLetter(_Message):
    """Dead-letter record: why an event was given up on, and the event as received."""

    reason: str  # a stable slug: malformed-event, object-not-found, not-an-image, ...
    error: str
    bucket: str | None = None
    key: str | None = None
    e_tag: str | None = Field(default=None, alias="eTag")
    source: dict[str, Any]  # where the event came from: topic/partition/offset or queue message
    original_event: str
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
