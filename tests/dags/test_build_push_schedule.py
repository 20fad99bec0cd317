"""The build DAG's schedule: cron only without a queue; cron OR ECR pushes (an Asset watcher) with one."""

from __future__ import annotations

import pytest

from tests.conftest import REPO


def _build_dag(monkeypatch: pytest.MonkeyPatch, **env: str):
    from airflow.dag_processing.dagbag import DagBag

    for name in ("ML_CACHE_PUSH_QUEUE_URL", "ML_CACHE_BUILD_SCHEDULE", "ML_CACHE_PUSH_QUIET_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bag = DagBag(dag_folder=str(REPO / "dags" / "ml_container_cache_build.py"))
    assert bag.import_errors == {}
    return bag.dags["ml_container_cache_build"]


def test_without_a_queue_the_build_is_weekly_cron_only(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = _build_dag(monkeypatch, ML_CACHE_PUSH_QUEUE_URL="  ")
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert dag.timetable.summary == "0 3 * * 1"


def test_with_a_queue_the_build_runs_on_cron_or_pushes_watched_on_that_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    url = "https://sqs.us-west-2.amazonaws.com/123456789012/ml-container-cache-ecr-push"
    dag = _build_dag(monkeypatch, ML_CACHE_PUSH_QUEUE_URL=url, ML_CACHE_BUILD_SCHEDULE="0 4 * * 2",
                     ML_CACHE_PUSH_QUIET_SECONDS="120")
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert dag.timetable.timetable.expression == "0 4 * * 2"
    (watcher,) = dag.timetable.asset_condition.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "ml_cache.triggers.ecr_push.EcrPushTrigger"
    assert (kwargs["sqs_queue"], kwargs["aws_conn_id"], kwargs["quiet_seconds"]) == (url, "aws_default", 120)
    assert dag.max_active_runs == 1  # events queued while a build runs make one run after it, not one each

    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))  # what the scheduler stores
    assert serialized.timetable.summary == "Asset or 0 4 * * 2"
    assert [key.name for key, _ in serialized.timetable.asset_condition.iter_assets()] == [
        "ml_container_cache_ecr_pushes"]


def test_pushes_of_run_reads_the_watcher_events_only() -> None:
    from types import SimpleNamespace

    from airflow.sdk import Asset

    from ml_cache.push_schedule import ECR_PUSHES, pushes_of_run

    push = {"repository": "team/pytorch", "tag": "2.5", "digest": "sha256:" + "a" * 64}
    events = {Asset(ECR_PUSHES): [SimpleNamespace(extra={"from_trigger": True, "payload": {"pushes": [push]}})],
              Asset("other"): [SimpleNamespace(extra={"payload": {"pushes": [{"repository": "x"}]}})]}
    assert pushes_of_run(events) == [push]
    assert pushes_of_run(None) == pushes_of_run({}) == []
