"""Create the LocalStack side of fashion-search: buckets, the upload-event queue with its
dead-letter queue, and the S3 -> SQS notification of new uploads.

LocalStack runs this file itself once it is ready (natively, through
``python -m stack up``). Names come from the same FS_* variables as the project's settings.
"""

import json
import os

import boto3

endpoint = os.environ.get("AWS_ENDPOINT_URL") or "http://{}".format(
    os.environ.get("GATEWAY_LISTEN", "localhost:4566").split(",")[0]
)
region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
session = boto3.session.Session(
    aws_access_key_id="test", aws_secret_access_key="test", region_name=region
)
s3 = session.client("s3", endpoint_url=endpoint)
sqs = session.client("sqs", endpoint_url=endpoint)

buckets = [
    os.environ.get("FS_IMAGES_BUCKET", "fashion-images"),
    os.environ.get("FS_DATASETS_BUCKET", "fashion-datasets"),
    os.environ.get("FS_MODELS_BUCKET", "fashion-models"),
    os.environ.get("FS_UPLOADS_BUCKET", "fashion-uploads"),
]
uploads_bucket = buckets[-1]
queue_name = os.environ.get("FS_UPLOADS_QUEUE", "fashion-uploads-events")

for bucket in buckets:
    s3.create_bucket(Bucket=bucket)  # idempotent in us-east-1

dead_letter_url = sqs.create_queue(QueueName=f"{queue_name}-dlq")["QueueUrl"]
dead_letter_arn = sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])[
    "Attributes"
]["QueueArn"]
queue_url = sqs.create_queue(
    QueueName=queue_name,
    Attributes={
        "VisibilityTimeout": "360",  # as template.yaml: 6x the function timeout
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": "5"}
        ),
    },
)["QueueUrl"]
queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
    "QueueArn"
]

s3.put_bucket_notification_configuration(
    Bucket=uploads_bucket,
    NotificationConfiguration={
        "QueueConfigurations": [
            {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
        ]
    },
)
print(f"fashion-search resources ready: buckets {buckets}, queue {queue_url}")
