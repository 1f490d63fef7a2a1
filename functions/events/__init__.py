"""The bucket-event function and the event sources that invoke it (Kafka dispatcher, SQS poller)."""
