"""ECR pushes, read from the SQS queue an EventBridge rule fills, as one Asset event per burst.

Why a burst makes one event (the de-duplication, in three layers):

1. Debounce, here: after the first message the queue is read until it has been quiet for
   `quiet_seconds` (capped at `max_burst_seconds`, so a steady stream still fires), then ONE event
   carries every push of the burst (repository, tag, digest). A CI job pushing ten images is one
   event, hence at most one asset-triggered run.
2. Delete after the event is safe: the triggerer runs this trigger as an "ack mode" shared stream
   (Airflow 3.3, `create_shared_stream_producer`): `advance` deletes the burst's messages only once
   the Asset event derived from it is persisted in the metadata database. A triggerer that dies in
   between deletes nothing; the messages reappear after their visibility timeout and make one
   more event. So delivery is at least once, never lost (SQS itself is at least once too).
3. A duplicate event is cheap: the build DAG runs one at a time (`max_active_runs=1`; asset events
   queued meanwhile make one run, not one each), and a run whose resolved digests equal the
   published fingerprint ends at `up_to_date` with no instance launched. That same decision makes
   a push of a tag or repository the image set does not name a no-op: the run resolves the
   configured refs, their digests did not change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from typing import Any

from airflow.providers.amazon.aws.hooks.sqs import SqsHook
from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from airflow.triggers.shared_stream import AdvanceItem, AdvanceOutcome, SharedStreamProducer
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

EVENT_DETAIL_TYPE = "ECR Image Action"  # https://docs.aws.amazon.com/AmazonECR/latest/userguide/ecr-eventbridge.html
MAX_PUSHES_IN_EVENT = 200  # the event's extra stays small; push_count says how many there were
RECEIVE_BATCH = 10  # SQS ReceiveMessage maximum
IDLE_WAIT_SECONDS = 20  # SQS long-poll maximum
ACK_MARGIN_SECONDS = 600  # past the burst: the persist confirmation (ack timeout 300 s) and the delete


def read_push(body: str) -> dict[str, str] | None:
    """The push an EventBridge-delivered message reports, or None (not a successful ECR image push)."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    detail = event.get("detail") if isinstance(event, dict) else None
    if (event.get("source") if isinstance(event, dict) else None) != "aws.ecr" \
            or event.get("detail-type") != EVENT_DETAIL_TYPE or not isinstance(detail, dict):
        return None
    if detail.get("action-type") != "PUSH" or detail.get("result") != "SUCCESS" \
            or not isinstance(detail.get("repository-name"), str):
        return None
    return {"repository": detail["repository-name"], "tag": str(detail.get("image-tag") or ""),
            "digest": str(detail.get("image-digest") or ""), "account": str(event.get("account") or ""),
            "region": str(event.get("region") or ""), "time": str(event.get("time") or "")}


def burst_payload(pushes: Sequence[Mapping[str, str]], message_count: int) -> dict[str, Any]:
    """The event one burst makes: its pushes (first MAX_PUSHES_IN_EVENT, in arrival order) and counts."""
    return {"source": "ecr_push", "push_count": len(pushes), "message_count": message_count,
            "pushes": [dict(push) for push in pushes[:MAX_PUSHES_IN_EVENT]]}


class EcrPushBurstProducer(SharedStreamProducer):
    """Reads the queue in bursts; yields (payload, receipt entries); deletes a burst once it is persisted."""

    def __init__(self, *, sqs_queue: str, aws_conn_id: str | None, region_name: str | None,
                 quiet_seconds: int, max_burst_seconds: int) -> None:
        self.sqs_queue, self.quiet_seconds, self.max_burst_seconds = sqs_queue, quiet_seconds, max_burst_seconds
        self.hook = SqsHook(aws_conn_id=aws_conn_id, region_name=region_name)

    async def open_stream(self) -> AsyncIterator[tuple[dict[str, Any], list[dict[str, str]]]]:
        """Forever: one (payload, receipts) per burst holding at least one push; errors retried."""
        backoff = 1.0
        while True:
            try:
                async with await self.hook.get_async_conn() as client:
                    while True:
                        pushes, receipts = await self._burst(client)
                        backoff = 1.0
                        if pushes:
                            yield burst_payload(pushes, len(receipts)), receipts
                        else:  # only messages that are no push: nothing to build from them
                            await self._delete(client, receipts)
            except (OSError, TimeoutError, BotoCoreError, ClientError) as error:  # the queue may come back
                log.warning("SQS %s: %s; retrying in %.0f s", self.sqs_queue, error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 300.0)

    async def _burst(self, client: Any) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """Wait for a first message, then read until quiet_seconds pass without one (or max_burst_seconds)."""
        pushes: list[dict[str, str]] = []
        receipts: dict[str, dict[str, str]] = {}  # by MessageId: a redelivery within the burst counts once
        first = last = None
        while True:
            now = time.monotonic()
            if first is None:
                wait = IDLE_WAIT_SECONDS
            else:
                left = min(self.quiet_seconds - (now - last), self.max_burst_seconds - (now - first))
                if left <= 0:
                    return pushes, list(receipts.values())
                wait = max(0, min(IDLE_WAIT_SECONDS, int(left + 0.999)))
            response = await client.receive_message(
                QueueUrl=self.sqs_queue, MaxNumberOfMessages=RECEIVE_BATCH, WaitTimeSeconds=wait,
                VisibilityTimeout=self.max_burst_seconds + ACK_MARGIN_SECONDS)
            messages = response.get("Messages") or []
            if not messages:
                continue
            last = time.monotonic()
            first = first if first is not None else last
            for message in messages:
                if message["MessageId"] in receipts:
                    continue
                receipts[message["MessageId"]] = {"Id": message["MessageId"],
                                                  "ReceiptHandle": message["ReceiptHandle"]}
                push = read_push(message.get("Body") or "")
                if push is None:
                    log.warning("SQS %s: message %s is no successful ECR push; dropped",
                                self.sqs_queue, message["MessageId"])
                else:
                    pushes.append(push)

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        """Persisted bursts: delete their messages. Failed ones: visible again at once, for a new event."""
        async with await self.hook.get_async_conn() as client:
            for item in batch:
                if item.outcome.is_clean or item.outcome.rejected:
                    await self._delete(client, item.broker_payload)
                else:
                    await self._release(client, item.broker_payload)

    async def _delete(self, client: Any, receipts: Sequence[Mapping[str, str]]) -> None:
        for start in range(0, len(receipts), RECEIVE_BATCH):
            chunk = [dict(entry) for entry in receipts[start:start + RECEIVE_BATCH]]
            response = await client.delete_message_batch(QueueUrl=self.sqs_queue, Entries=chunk)
            for failed in response.get("Failed") or []:  # it reappears later: one more (cheap) event
                log.warning("SQS %s: could not delete %s: %s", self.sqs_queue, failed.get("Id"), failed.get("Message"))

    async def _release(self, client: Any, receipts: Sequence[Mapping[str, str]]) -> None:
        for start in range(0, len(receipts), RECEIVE_BATCH):
            chunk = [{**entry, "VisibilityTimeout": 0} for entry in receipts[start:start + RECEIVE_BATCH]]
            await client.change_message_visibility_batch(QueueUrl=self.sqs_queue, Entries=chunk)


class EcrPushTrigger(BaseEventTrigger):
    """An AssetWatcher trigger: one event per burst of ECR pushes on `sqs_queue` (see the module doc).

    Not the provider's SqsSensorTrigger: that one deletes each message as it reads it, before any
    event exists, and fires once per poll, so a burst spread over polls makes several events.
    """

    def __init__(self, *, sqs_queue: str, aws_conn_id: str | None = "aws_default", region_name: str | None = None,
                 quiet_seconds: int = 60, max_burst_seconds: int = 900) -> None:
        super().__init__()
        if quiet_seconds < 1 or max_burst_seconds < quiet_seconds:
            raise ValueError(f"need 1 <= quiet_seconds ({quiet_seconds}) <= max_burst_seconds ({max_burst_seconds})")
        self.sqs_queue, self.aws_conn_id, self.region_name = sqs_queue, aws_conn_id, region_name
        self.quiet_seconds, self.max_burst_seconds = quiet_seconds, max_burst_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"sqs_queue": self.sqs_queue, "aws_conn_id": self.aws_conn_id, "region_name": self.region_name,
                 "quiet_seconds": self.quiet_seconds, "max_burst_seconds": self.max_burst_seconds})

    def shared_stream_key(self) -> Hashable | None:
        return ("ml_cache.ecr_push", self.sqs_queue, self.aws_conn_id, self.region_name)

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> EcrPushBurstProducer:
        return EcrPushBurstProducer(**kwargs)

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        async for payload in shared_stream:
            yield TriggerEvent(payload)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Without the shared stream (tests, an older triggerer): delete right after the event is handed over."""
        producer = EcrPushBurstProducer(**self.serialize()[1])
        async for payload, receipts in producer.open_stream():
            yield TriggerEvent(payload)
            await producer.advance([AdvanceItem(receipts, AdvanceOutcome(acked=1, failed=0))])
