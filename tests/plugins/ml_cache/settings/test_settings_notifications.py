"""`notifications:` is validated with the rest of the run's settings, before any cloud call, naming the key."""

from __future__ import annotations

import importlib.util

import pytest

from ml_cache.images import InvalidInputs
from ml_cache.settings import resolve_build_settings, resolve_janitor_settings

REGION = "us-west-2"
TOPIC = "arn:aws:sns:us-west-2:123456789012:ml-container-cache"


def test_nothing_configured_sends_nothing(config):
    notifications = resolve_build_settings(config, None, region=REGION, conf={}).notifications
    assert not notifications.channels
    assert notifications.on_failure and not notifications.on_success
    assert notifications.dags == ["build", "rollout", "janitor"] and notifications.late_build_minutes is None


def test_a_topic_and_the_choices_are_read(config):
    config["notifications"] = {"sns_topic_arn": TOPIC, "on_success": True, "dags": ["build"], "late_build_minutes": 60}
    notifications = resolve_janitor_settings(config, None, region=REGION).notifications
    assert notifications.channels and notifications.sns_topic_arn == TOPIC
    assert notifications.on_success and notifications.dags == ["build"] and notifications.late_build_minutes == 60


@pytest.mark.parametrize(("notifications", "message"), [
    ({"sns_topic_arn": "ml-container-cache"}, r"notifications\.sns_topic_arn: String should match pattern"),
    ({"sns_topic_arn": TOPIC + ".fifo"}, r"notifications\.sns_topic_arn"),
    ({"sns_topic_arn": TOPIC, "dags": ["build", "weekly"]}, r"notifications\.dags\.1: Input should be 'build'"),
    ({"sns_topic_arn": TOPIC, "dags": ["build", "build"]}, r"lists 'build' twice"),
    ({"sns_topic_arn": TOPIC, "on_failure": "yes"}, r"notifications\.on_failure: Input should be a valid boolean"),
    ({"topic": TOPIC}, r"notifications\.topic: Extra inputs are not permitted"),
    ({"late_build_minutes": 30}, r"late_build_minutes needs notifications\.sns_topic_arn"),
    ({"sns_topic_arn": TOPIC, "late_build_minutes": 0}, r"notifications\.late_build_minutes: Input should be greater"),
])
def test_bad_notifications_are_named(config, notifications, message):
    config["notifications"] = notifications
    with pytest.raises(InvalidInputs, match=message):
        resolve_build_settings(config, None, region=REGION, conf={})


@pytest.mark.skipif(importlib.util.find_spec("airflow.providers.slack") is not None,
                    reason="the Slack provider is installed here")
def test_slack_without_its_provider_is_a_config_error_saying_what_to_install(config):
    config["notifications"] = {"slack_webhook_conn_id": "slack_ml_cache"}
    with pytest.raises(InvalidInputs, match=r"needs the Slack provider.*apache-airflow-providers-slack"):
        resolve_build_settings(config, None, region=REGION, conf={})
