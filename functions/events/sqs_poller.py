"""SQS queue -> the bucket-event function, with Lambda's SQS event-source semantics.

Long-polls up to 10 messages, invokes the function with an SQS event, deletes the messages
it did not report in ``batchItemFailures``; failed ones become visible again after the queue's
visibility timeout and, after its ``maxReceiveCount``, move to its dead-letter queue.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import boto3

from fashion_search.settings import Settings
from functions.events.kafka_dispatcher import Function

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

log = logging.getLogger(__name__)


def make_sqs_client(settings: Settings) -> SQSClient:
    """SQS on the LocalStack endpoint (or AWS when FS_LOCALSTACK_ENDPOINT_URL names it)."""
    client: SQSClient = boto3.client(
        "sqs",
        endpoint_url=settings.ingest.sqs_endpoint_url,
        aws_access_key_id=settings.storage.access_key,
        aws_secret_access_key=settings.storage.secret_key,
        region_name=settings.storage.region,
    )
    return client


class SqsPoller:
    """Polls ``settings.ingest.uploads_queue``."""

    def __init__(self, settings: Settings, function: Function, wait_s: int = 1) -> None:
        self.settings = settings
        self.function = function
        self.wait_s = wait_s
        self.sqs = make_sqs_client(settings)
        self.queue_url = self.sqs.get_queue_url(QueueName=settings.ingest.uploads_queue)["QueueUrl"]
        self.queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set (the batch in hand is finished first)."""
        log.info("polling %s for the bucket-event function", self.queue_url)
        while not stop.is_set():
            self.poll_once()
        log.info("poller stopped")

    def poll_once(self) -> int:
        """Receive, invoke and delete one batch; returns how many messages were received."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(10, self.settings.ingest.batch_size),
            WaitTimeSeconds=self.wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [self._record(m) for m in messages]}
        try:
            response = self.function(event) or {}
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception:
            log.exception("invocation failed; %d messages will be retried", len(messages))
            failed = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        return len(messages)

    def _record(self, message: MessageTypeDef) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": message.get("MessageAttributes", {}),
            "md5OfBody": message.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.settings.storage.region,
        }
