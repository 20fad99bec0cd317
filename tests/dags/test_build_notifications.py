"""A failed build on the local cloud notifies: the SNS message (moto's SNS, read from an SQS queue subscribed to
the topic) names the DAG, the run, the failed task and the cause in one line; the cleanups run as before, also
when the notification cannot be sent."""

from __future__ import annotations

import logging

import pytest
import yaml

from tests.dags.conftest import assert_clean_failure, needs_data_plane, run_dag
from tests.plugins.ml_cache.sns_inbox import subscribe_queue

DAG_ID = "ml_container_cache_build"


def notify_to(cloud, **notifications) -> None:
    config = yaml.safe_load(cloud.config_path.read_text())
    config["notifications"] = notifications
    cloud.config_path.write_text(yaml.safe_dump(config))


@pytest.fixture
def inbox(cloud):
    inbox = subscribe_queue(cloud.client("sns"), cloud.client("sqs"))
    notify_to(cloud, sns_topic_arn=inbox.topic_arn)
    return inbox


@needs_data_plane
def test_a_build_failing_mid_way_sends_one_message_naming_dag_run_task_and_cause(cloud, build_dag, inbox, capfd):
    """The builder ran, SSM answered AccessDenied: one message (the task's own; the run's callback leaves it to
    the task), the run's clean failure unchanged (builder terminated, parameter and previous snapshot intact)."""
    cloud.set_faults(ssm_command_status="AccessDenied")
    run, states = run_dag(build_dag)
    assert_clean_failure(cloud, run, states, "run_build_script", r"ended Failed: AccessDenied", capfd, retried=False)
    (message,) = inbox.messages(count=2, wait_seconds=5)
    text = message["Message"]
    assert text.startswith(f"{DAG_ID} run {run.run_id} FAILED at task run_build_script: ")
    assert "ended Failed: AccessDenied" in text and "\n" not in text and "Traceback" not in text
    assert "testing" not in text  # the connection's keys
    assert message["Subject"] == f"{DAG_ID} failed at run_build_script"


def test_a_build_refused_before_any_aws_call_is_notified(cloud, build_dag, inbox):
    run, states = run_dag(build_dag, image=["busybox:1.37"])  # a typo of `images`
    assert states["validate_inputs"] == "failed"
    (message,) = inbox.messages()
    assert message["Message"].startswith(f"{DAG_ID} run {run.run_id} FAILED at task validate_inputs: ")
    assert "unknown parameter(s) ['image']: 'image' (did you mean 'images'?)" in message["Message"]


def test_a_notification_that_cannot_be_sent_stops_no_cleanup(cloud, build_dag, caplog):
    """A topic that does not exist: the failure is logged, the run fails for its own cause, and its builder is
    terminated all the same (the teardown and the DAG's cleanup callback do not depend on the notifier)."""
    notify_to(cloud, sns_topic_arn="arn:aws:sns:us-west-2:123456789012:ml-cache-no-such-topic")
    cloud.set_faults(ssm_command_status="AccessDenied")
    with caplog.at_level(logging.ERROR):
        run, states = run_dag(build_dag)
    assert str(run.state) == "failed"
    failed = {task for task, state in states.items() if state == "failed"}
    assert failed == ({"run_build_script"} if cloud.registry else {"resolve_images"}), states
    assert cloud.live_instances() == []
    assert "Notification through SnsNotifier failed" in caplog.text


@needs_data_plane
def test_a_successful_build_is_notified_when_asked(cloud, build_dag, inbox):
    """The DAG's on_success_callback (a run-level notifier): one message; no failure message."""
    notify_to(cloud, sns_topic_arn=inbox.topic_arn, on_success=True)
    run, states = run_dag(build_dag)
    assert str(run.state) == "success", states
    (message,) = inbox.messages(count=2, wait_seconds=5)
    assert message["Message"] == f"{DAG_ID} run {run.run_id} succeeded"
    assert message["Subject"] == f"{DAG_ID} succeeded"
