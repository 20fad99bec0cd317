"""The builder's command watched with the builder: a builder lost mid-command fails the wait at once."""

from __future__ import annotations

import time

import pytest

from ml_cache.triggers.builder_command import BuilderCommandTrigger
from tests.plugins.ml_cache.triggers.conftest import send_shell


def _trigger(cloud_conn, command_id: str, instance_id: str, attempts: int = 30) -> BuilderCommandTrigger:
    return BuilderCommandTrigger(command_id=command_id, instance_id=instance_id, waiter_delay=1,
                                 waiter_max_attempts=attempts, aws_conn_id=cloud_conn.conn_id)


def test_serialize_round_trips(cloud_conn, trigger_tools) -> None:
    trigger_tools.assert_round_trip(_trigger(cloud_conn, "00000000-1111-2222-3333-444444444444",
                                             "i-0123456789abcdef0"), "command_executed")


def test_a_command_that_finishes_is_a_success(cloud_conn, online_instance, trigger_tools) -> None:
    instance_id = online_instance()
    command_id = send_shell(cloud_conn, instance_id, "sleep 2", execution_timeout=120)
    event = trigger_tools.first_event(_trigger(cloud_conn, command_id, instance_id))
    assert event == {"status": "success", "command_id": command_id}


@pytest.mark.parametrize(("how", "code"), [("stopped", "Server.ScheduledStop"),
                                            ("terminated", "Client.InstanceInitiatedShutdown")])
def test_a_builder_lost_mid_command_fails_at_once_naming_state_and_reason(cloud_conn, online_instance,
                                                                         trigger_tools, how, code) -> None:
    """The invocation stays InProgress (AWS reports nobody's end); the wait ends on the instance's state."""
    instance_id = online_instance()
    cloud_conn.set_faults(instance_lost_mid_command=how)
    command_id = send_shell(cloud_conn, instance_id, "sleep 300", execution_timeout=120)
    started = time.monotonic()
    event = trigger_tools.first_event(_trigger(cloud_conn, command_id, instance_id))
    assert time.monotonic() - started < 15  # not the 120 s execution timeout
    assert (event["status"], event["command_id"], event["instance_lost"]) == ("error", command_id, True)
    assert f"Builder {instance_id} is {how} ({code}:" in event["message"]
    invocation = cloud_conn.client("ssm").get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    assert invocation["Status"] == "InProgress"


def test_a_command_past_its_deadline_is_max_attempts(cloud_conn, online_instance, trigger_tools) -> None:
    instance_id = online_instance()
    command_id = send_shell(cloud_conn, instance_id, "sleep 30", execution_timeout=120)
    event = trigger_tools.first_event(_trigger(cloud_conn, command_id, instance_id, attempts=2))
    assert (event["status"], event["command_id"]) == ("error", command_id)
    assert "max attempts reached" in event["message"]
