"""Notification messages (one line: DAG, run, task, cause; no traceback, no secret) and their delivery to an SNS
topic of a moto server, read back from an SQS queue subscribed to it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace

import pytest
import yaml

from ml_cache.notify import (
    CAUSE_MAX_CHARS,
    NotificationFailed,
    PipelineNotifier,
    alert_late_build,
    late_build_alert,
    one_line,
)
from ml_cache.settings.config import DEFAULT_CONFIG_PATH
from tests.conftest import AwsEndpoint, use_aws_connection
from tests.plugins.ml_cache.sns_inbox import subscribe_queue

DAG_ID = "ml_container_cache_build"
RUN_ID = "scheduled__2026-12-07T03:00:00+00:00"


def _dag():
    from airflow.sdk import DAG

    return DAG(dag_id=DAG_ID, schedule=None)


def _context(exception: BaseException | None = None, *, task_id: str = "run_build_script", map_index: int = -1,
             reason: str | None = None) -> dict:
    ti = SimpleNamespace(task_id=task_id, map_index=map_index, run_id=RUN_ID)
    return {"dag": _dag(), "run_id": RUN_ID, "ti": ti, "exception": exception,
            "reason": reason}


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:  # a real traceback attached
        return caught


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    """Writes `notifications:` into a copy of the repo config that ML_CACHE_CONFIG points at."""
    def write(**notifications):
        config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
        config["notifications"] = notifications
        path = tmp_path / "ml_container_cache.yaml"
        path.write_text(yaml.safe_dump(config))
        monkeypatch.setenv("ML_CACHE_CONFIG", str(path))
    return write


@pytest.fixture
def moto_conn(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> AwsEndpoint:
    return use_aws_connection(monkeypatch, "ml_cache_notify", moto_endpoint, "us-east-2")


@pytest.fixture
def inbox(moto_conn):
    return subscribe_queue(moto_conn.client("sns"), moto_conn.client("sqs"))


def test_a_failed_task_message_names_dag_run_task_and_cause_on_one_line(monkeypatch):
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    error = _raised(RuntimeError("SSM command abc Failed on i-0123:\n  build_cache.sh: image not found\n"))
    title, message = PipelineNotifier("task_failure").message(_context(error))
    assert message == (f"{DAG_ID} run {RUN_ID} FAILED at task run_build_script: RuntimeError: SSM command abc Failed "
                       "on i-0123: build_cache.sh: image not found")
    assert "\n" not in message and "Traceback" not in message
    assert title == f"{DAG_ID} failed at run_build_script"


def test_a_mapped_task_is_named_with_its_index():
    _, message = PipelineNotifier("task_failure").message(_context(ValueError("x"), map_index=2))
    assert "at task run_build_script[2]:" in message


def test_the_run_page_is_linked_when_the_base_url_is_known(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    _, message = PipelineNotifier("task_failure").message(_context(ValueError("x")))
    assert message.endswith(" | https://airflow.example.com/dags/ml_container_cache_build/runs/"
                            "scheduled__2026-12-07T03%3A00%3A00%2B00%3A00")


def test_a_secret_the_masker_knows_never_reaches_the_message():
    from airflow.sdk._shared.secrets_masker import mask_secret

    secret = "s3cr3t-Registry-Passw0rd"
    mask_secret(secret)
    _, message = PipelineNotifier("task_failure").message(_context(RuntimeError(f"login refused for {secret}")))
    assert secret not in message and "***" in message


def test_a_long_cause_is_cut_and_a_lost_task_says_so():
    assert len(one_line(RuntimeError("x" * 5000))) == CAUSE_MAX_CHARS
    assert "no exception recorded" in one_line(None)


def test_a_run_failed_by_a_task_is_left_to_the_task_and_a_timed_out_run_is_told():
    notifier = PipelineNotifier("run_failure")
    assert notifier.message(_context(reason="task_failure")) is None
    title, message = notifier.message({"dag": _dag(), "run_id": RUN_ID, "reason": "timed_out"})
    assert message.startswith(f"{DAG_ID} run {RUN_ID} FAILED: the run passed its dagrun_timeout")
    assert title == f"{DAG_ID} failed"


def test_the_subject_is_what_sns_accepts():
    title, _ = PipelineNotifier("task_failure").message(_context(ValueError("x"), task_id="t" * 200 + "é"))
    assert len(title) <= 100 and title.isascii()


def test_a_failure_is_published_to_the_configured_topic(config_file, inbox, moto_conn):
    config_file(sns_topic_arn=inbox.topic_arn)
    PipelineNotifier("task_failure", aws_conn_id=moto_conn.conn_id)(_context(_raised(KeyError("snapshot_id"))))
    (received,) = inbox.messages()
    assert received["Message"].startswith(f"{DAG_ID} run {RUN_ID} FAILED at task run_build_script: KeyError:")
    assert received["Subject"] == f"{DAG_ID} failed at run_build_script"


def test_a_message_is_never_rendered_as_a_template(config_file, inbox, moto_conn):
    """An exception's text is data: `{{ conn... }}` in it stays as written."""
    config_file(sns_topic_arn=inbox.topic_arn)
    PipelineNotifier("task_failure", aws_conn_id=moto_conn.conn_id)(
        _context(ValueError("bad ref {{ conn.aws_default.password }}")))
    (received,) = inbox.messages()
    assert "{{ conn.aws_default.password }}" in received["Message"]


def test_successes_other_dags_and_an_unconfigured_file_send_nothing(config_file, inbox, moto_conn):
    success = {"dag": _dag(), "run_id": RUN_ID, "reason": "success"}
    config_file(sns_topic_arn=inbox.topic_arn)  # on_success defaults to off
    PipelineNotifier("run_success", aws_conn_id=moto_conn.conn_id)(success)
    config_file(sns_topic_arn=inbox.topic_arn, dags=["rollout", "janitor"])
    PipelineNotifier("task_failure", aws_conn_id=moto_conn.conn_id)(_context(ValueError("x")))
    config_file()
    PipelineNotifier("task_failure", aws_conn_id=moto_conn.conn_id)(_context(ValueError("x")))
    config_file(sns_topic_arn=inbox.topic_arn, on_success=True)
    PipelineNotifier("run_success", aws_conn_id=moto_conn.conn_id)(success)
    assert [m["Message"] for m in inbox.messages(count=2, wait_seconds=3)] == [f"{DAG_ID} run {RUN_ID} succeeded"]


def test_a_channel_that_fails_is_named(config_file, moto_conn):
    config_file(sns_topic_arn="arn:aws:sns:us-east-2:123456789012:no-such-topic")
    with pytest.raises(NotificationFailed, match=r"SnsNotifier: .*(NotFound|does not exist)"):
        PipelineNotifier("task_failure", aws_conn_id=moto_conn.conn_id)(_context(ValueError("x")))


def test_the_late_build_alert_is_an_airflow_deadline_alert_only_when_configured(config_file):
    from airflow.sdk import DeadlineAlert
    from airflow.sdk.definitions.deadline import AverageRuntimeDeadline

    config_file(sns_topic_arn="arn:aws:sns:us-west-2:123456789012:ml-cache")
    assert late_build_alert("aws_default") is None
    config_file(sns_topic_arn="arn:aws:sns:us-west-2:123456789012:ml-cache", late_build_minutes=90)
    alert = late_build_alert("aws_default")
    assert isinstance(alert, DeadlineAlert) and isinstance(alert.reference, AverageRuntimeDeadline)
    assert alert.interval == timedelta(minutes=90)
    assert alert.callback.kwargs == {"aws_conn_id": "aws_default", "minutes": 90,
                                     "topic_arn": "arn:aws:sns:us-west-2:123456789012:ml-cache"}


def test_the_late_build_callback_publishes_from_the_triggerers_context(inbox, moto_conn):
    """What the scheduler hands the triggerer when the deadline passes (Deadline.handle_miss's simple context)."""
    context = {"dag_run": {"dag_id": DAG_ID, "dag_run_id": RUN_ID}, "deadline": {"deadline_time": "2026-12-07 05:10"}}
    asyncio.run(alert_late_build(aws_conn_id=moto_conn.conn_id, topic_arn=inbox.topic_arn, minutes=90,
                                 context=context))
    (received,) = inbox.messages()
    assert received["Message"].startswith(f"{DAG_ID} run {RUN_ID} is LATE: still running 90 min past the average")
    assert received["Subject"] == f"{DAG_ID} is running late"


def test_a_topic_in_another_region_than_the_connection_is_reached(config_file, moto_conn):
    import boto3

    def client(service):
        return boto3.client(service, region_name="eu-west-1", endpoint_url=moto_conn.endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    inbox = subscribe_queue(client("sns"), client("sqs"))
    config_file(sns_topic_arn=inbox.topic_arn)
    PipelineNotifier("task_failure", aws_conn_id=moto_conn.conn_id)(_context(ValueError("x")))  # us-east-2
    (received,) = inbox.messages()
    assert received["Message"].startswith(f"{DAG_ID} run {RUN_ID} FAILED at task run_build_script: ValueError: x")
