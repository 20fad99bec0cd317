"""The build DAG's schedule: the weekly cron, or the cron OR a burst of ECR pushes when a queue is set.

Read at parse time from the environment only (no AWS call at import): `ML_CACHE_BUILD_SCHEDULE`
(cron, default Mondays 03:00 UTC) and `ML_CACHE_PUSH_QUEUE_URL` (the SQS queue the Terraform
output `ecr_push_queue_url` names; unset or empty: cron only). `ML_CACHE_PUSH_QUIET_SECONDS`
tunes the debounce (ml_cache.triggers.ecr_push). The watcher's trigger kwargs identify it in the
metadata database, so they must not change from one parse to the next: they are plain env values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable
from airflow.timetables.trigger import CronTriggerTimetable as CoreCronTriggerTimetable

from ml_cache.triggers.ecr_push import EcrPushTrigger

DEFAULT_CRON = "0 3 * * 1"
ECR_PUSHES = "ml_container_cache_ecr_pushes"  # the Asset the watcher feeds; one event per burst


def ecr_push_asset(queue_url: str, *, aws_conn_id: str, quiet_seconds: int = 60) -> Asset:
    """The Asset whose watcher turns bursts of pushes on `queue_url` into events."""
    trigger = EcrPushTrigger(sqs_queue=queue_url, aws_conn_id=aws_conn_id, quiet_seconds=quiet_seconds,
                             max_burst_seconds=max(900, quiet_seconds))
    return Asset(ECR_PUSHES, watchers=[AssetWatcher(name="ecr_push_queue", trigger=trigger)])


def build_schedule(aws_conn_id: str, environ: Mapping[str, str] = os.environ) -> Any:
    """CronTriggerTimetable, or AssetOrTimeSchedule(cron, ECR pushes) when ML_CACHE_PUSH_QUEUE_URL is set."""
    expression = environ.get("ML_CACHE_BUILD_SCHEDULE") or DEFAULT_CRON
    queue_url = (environ.get("ML_CACHE_PUSH_QUEUE_URL") or "").strip()
    if not queue_url:
        return CoreCronTriggerTimetable(expression, timezone="UTC")  # as before this option existed
    cron = CronTriggerTimetable(expression, timezone="UTC")  # the SDK's, as AssetOrTimeSchedule wants
    quiet = int(environ.get("ML_CACHE_PUSH_QUIET_SECONDS") or 60)
    return AssetOrTimeSchedule(timetable=cron,
                               assets=ecr_push_asset(queue_url, aws_conn_id=aws_conn_id, quiet_seconds=quiet))


def pushes_of_run(triggering_asset_events: Mapping[Any, Sequence[Any]] | None) -> list[dict[str, str]]:
    """The pushes that triggered this run (empty for a cron, manual or API run), for the task log."""
    pushes: list[dict[str, str]] = []
    for asset, events in (triggering_asset_events or {}).items():
        if getattr(asset, "name", None) != ECR_PUSHES:
            continue
        for event in events:
            payload = (getattr(event, "extra", None) or {}).get("payload") or {}
            pushes.extend(payload.get("pushes") or [])
    return pushes
