"""An SNS topic with an SQS queue subscribed to it, on a moto server or the local cloud: what a subscriber
of the notifications topic receives, read over the AWS API (no patching of the sender)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass
class SnsInbox:
    topic_arn: str
    queue_url: str
    sqs: Any

    def messages(self, *, count: int = 1, wait_seconds: float = 20) -> list[dict[str, str]]:
        """At least `count` notifications ({"Subject", "Message"}), or as many as arrived within `wait_seconds`."""
        received: list[dict[str, str]] = []
        deadline = time.monotonic() + wait_seconds
        while len(received) < count and time.monotonic() < deadline:
            answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in answer.get("Messages", []):
                envelope = json.loads(message["Body"])  # SNS's JSON envelope (no raw delivery)
                received.append({"Subject": envelope.get("Subject", ""), "Message": envelope["Message"]})
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return received


def subscribe_queue(sns: Any, sqs: Any) -> SnsInbox:
    """A new topic and a new queue subscribed to it (unique names: moto's state outlives a test)."""
    name = f"ml-cache-notify-{uuid.uuid4().hex[:12]}"
    topic_arn = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return SnsInbox(topic_arn=topic_arn, queue_url=queue_url, sqs=sqs)
