"""The ECR push watcher against the moto server's SQS: one event per burst, messages deleted after it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.triggers.shared_stream import AdvanceItem, AdvanceOutcome

from ml_cache.triggers.ecr_push import EcrPushBurstProducer, EcrPushTrigger, read_push
from tests.conftest import AwsEndpoint, use_aws_connection
from tests.plugins.ml_cache.triggers.conftest import rebuilt

QUIET = 2


def ecr_event(repository: str, tag: str, digest: str, action: str = "PUSH", result: str = "SUCCESS") -> str:
    """The documented shape (https://docs.aws.amazon.com/AmazonECR/latest/userguide/ecr-eventbridge.html)."""
    return json.dumps({"version": "0", "id": str(uuid.uuid4()), "detail-type": "ECR Image Action",
                       "source": "aws.ecr", "account": "123456789012", "time": "2026-12-04T04:00:00Z",
                       "region": "us-west-2", "resources": [],
                       "detail": {"result": result, "repository-name": repository, "image-digest": digest,
                                  "action-type": action, "image-tag": tag}})


@pytest.fixture
def sqs(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AwsEndpoint, str]]:
    aws = use_aws_connection(monkeypatch, "ml_cache_push", moto_endpoint, "us-west-2")
    client = aws.client("sqs")
    url = client.create_queue(QueueName=f"pushes-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    yield aws, url
    client.delete_queue(QueueUrl=url)


def counts(aws: AwsEndpoint, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return (int(attributes["Attributes"]["ApproximateNumberOfMessages"]),
            int(attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"]))


def send_later(aws: AwsEndpoint, url: str, bodies: list[str], gap: float, delay: float = 0.0) -> threading.Thread:
    def send() -> None:
        time.sleep(delay)
        for body in bodies:
            aws.client("sqs").send_message(QueueUrl=url, MessageBody=body)
            time.sleep(gap)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def trigger(aws: AwsEndpoint, url: str) -> EcrPushTrigger:
    return rebuilt(EcrPushTrigger(sqs_queue=url, aws_conn_id=aws.conn_id, quiet_seconds=QUIET,
                                  max_burst_seconds=60))  # what the triggerer runs


def test_read_push_takes_successful_pushes_only() -> None:
    digest = "sha256:" + "a" * 64
    assert read_push(ecr_event("team/pytorch", "2.5", digest)) == {
        "repository": "team/pytorch", "tag": "2.5", "digest": digest, "account": "123456789012",
        "region": "us-west-2", "time": "2026-12-04T04:00:00Z"}
    assert read_push(ecr_event("team/pytorch", "2.5", digest, action="DELETE")) is None
    assert read_push(ecr_event("team/pytorch", "2.5", digest, result="FAILURE")) is None
    assert read_push("not json") is None
    assert read_push(json.dumps({"source": "aws.s3", "detail-type": "ECR Image Action", "detail": {}})) is None


def test_the_trigger_serializes_to_an_importable_event_trigger(sqs: tuple[AwsEndpoint, str]) -> None:
    aws, url = sqs
    original = EcrPushTrigger(sqs_queue=url, aws_conn_id=aws.conn_id, quiet_seconds=QUIET, max_burst_seconds=60)
    assert rebuilt(original).serialize() == original.serialize()
    assert original.serialize()[0] == "ml_cache.triggers.ecr_push.EcrPushTrigger"
    assert original.shared_stream_key() == rebuilt(original).shared_stream_key()
    with pytest.raises(ValueError, match="quiet_seconds"):
        EcrPushTrigger(sqs_queue=url, quiet_seconds=0)


def test_a_burst_makes_one_event_deleted_after_it_and_a_later_push_a_new_one(sqs: tuple[AwsEndpoint, str]) -> None:
    aws, url = sqs
    burst = [ecr_event(f"team/image-{n}", "latest", f"sha256:{n:064x}") for n in range(12)]
    burst.insert(5, ecr_event("team/image-0", "old", "sha256:" + "f" * 64, action="DELETE"))  # no push: dropped
    later = ecr_event("team/late", "v2", "sha256:" + "e" * 64)

    async def scenario() -> dict[str, Any]:
        events = rebuilt(trigger(aws, url)).run()
        sender = send_later(aws, url, burst, gap=0.3)  # 13 messages over ~4 s: more than one receive, one burst
        started = time.monotonic()
        first = (await anext(events)).payload
        elapsed = time.monotonic() - started
        sender.join()
        before_delete = counts(aws, url)
        send_later(aws, url, [later], gap=0, delay=QUIET + 1).join()  # after the burst went quiet
        second = (await anext(events)).payload  # resuming deletes the first burst, then reads the next
        after = counts(aws, url)
        await events.aclose()  # the second burst is never advanced: its message stays, to be redelivered
        return {"first": first, "second": second, "elapsed": elapsed, "before_delete": before_delete,
                "after": after}

    seen = asyncio.run(scenario())
    first = seen["first"]
    assert (first["push_count"], first["message_count"]) == (12, 13)
    assert [push["repository"] for push in first["pushes"]] == [f"team/image-{n}" for n in range(12)]
    assert seen["elapsed"] >= 12 * 0.3 + QUIET - 1  # it waited for the quiet period after the last push
    assert seen["before_delete"] == (0, 13)  # held (invisible), not deleted, until the event was handed over
    second = seen["second"]
    assert (second["push_count"], [p["repository"] for p in second["pushes"]]) == (1, ["team/late"])
    assert seen["after"] == (0, 1)  # the first burst's 13 are gone; the second's one is held


def test_a_burst_whose_event_was_not_persisted_is_released_for_a_new_event(sqs: tuple[AwsEndpoint, str]) -> None:
    aws, url = sqs
    for n in range(3):
        aws.client("sqs").send_message(QueueUrl=url, MessageBody=ecr_event("team/x", f"t{n}", f"sha256:{n:064x}"))

    async def scenario() -> tuple[dict[str, Any], tuple[int, int]]:
        producer = EcrPushBurstProducer(sqs_queue=url, aws_conn_id=aws.conn_id, region_name=None,
                                        quiet_seconds=QUIET, max_burst_seconds=60)
        stream = producer.open_stream()
        payload, receipts = await anext(stream)
        await stream.aclose()
        await producer.advance([AdvanceItem(receipts, AdvanceOutcome(acked=0, failed=1))])  # ack timeout
        return payload, counts(aws, url)

    payload, after = asyncio.run(scenario())
    assert payload["push_count"] == 3
    assert after == (3, 0)  # visible again at once: the next burst (and event) carries them
