"""SSM triggers: the agent coming online, a command finishing on the builder."""

from __future__ import annotations

import pytest

from ml_cache.errors import deadline_passed
from ml_cache.triggers.ssm import SsmAgentOnlineTrigger, SsmCommandExecutedTrigger
from tests.plugins.ml_cache.triggers.conftest import send_shell


@pytest.mark.parametrize(("trigger_class", "kwargs", "waiter_name"), [
    (SsmAgentOnlineTrigger, {"instance_id": "i-0123456789abcdef0", "region_name": "ca-central-1"}, "agent_online"),
    (SsmCommandExecutedTrigger, {"command_id": "00000000-1111-2222-3333-444444444444",
                                 "instance_id": "i-0123456789abcdef0"}, "command_executed"),
], ids=["agent_online", "command_executed"])
def test_serialize_round_trips_and_names_a_known_waiter(cloud_conn, trigger_tools, trigger_class, kwargs,
                                                        waiter_name) -> None:
    trigger = trigger_class(**kwargs, waiter_delay=5, waiter_max_attempts=7, aws_conn_id=cloud_conn.conn_id)
    trigger_tools.assert_round_trip(trigger, waiter_name)


def test_agent_online_succeeds_once_the_agent_registers(cloud_conn, cloud_instance, trigger_tools) -> None:
    cloud_conn.set_faults(agent_online_seconds=1.5)
    instance_id = cloud_instance()
    event = trigger_tools.first_event(SsmAgentOnlineTrigger(
        instance_id=instance_id, waiter_delay=1, waiter_max_attempts=10, aws_conn_id=cloud_conn.conn_id))
    assert event == {"status": "success", "instance_id": instance_id}


def test_agent_that_never_registers_runs_out_of_attempts(cloud_conn, cloud_instance, trigger_tools) -> None:
    cloud_conn.set_faults(agent_offline=True)
    instance_id = cloud_instance()
    event = trigger_tools.first_event(SsmAgentOnlineTrigger(
        instance_id=instance_id, waiter_delay=1, waiter_max_attempts=2, aws_conn_id=cloud_conn.conn_id))
    assert (event["status"], event["instance_id"]) == ("error", instance_id)
    assert "max attempts" in event["message"]
    assert deadline_passed(event)  # what the operators turn into DeadlinePassed


def test_command_executed_waits_through_the_absent_invocation(cloud_conn, online_instance, trigger_tools) -> None:
    instance_id = online_instance()
    cloud_conn.set_faults(invocation_absent_seconds=1.2)  # GetCommandInvocation: InvocationDoesNotExist first
    command_id = send_shell(cloud_conn, instance_id, "true")
    event = trigger_tools.first_event(SsmCommandExecutedTrigger(
        command_id=command_id, instance_id=instance_id, waiter_delay=1, waiter_max_attempts=15,
        aws_conn_id=cloud_conn.conn_id))
    assert event == {"status": "success", "command_id": command_id}


@pytest.mark.parametrize("status", ["Failed", "TimedOut", "Cancelled"])
def test_command_that_ends_badly_is_a_failure_naming_command_and_instance(cloud_conn, online_instance,
                                                                          trigger_tools, status) -> None:
    instance_id = online_instance()
    cloud_conn.set_faults(ssm_command_status=status)
    command_id = send_shell(cloud_conn, instance_id, "true")
    event = trigger_tools.first_event(SsmCommandExecutedTrigger(
        command_id=command_id, instance_id=instance_id, waiter_delay=1, waiter_max_attempts=15,
        aws_conn_id=cloud_conn.conn_id))
    assert (event["status"], event["command_id"]) == ("error", command_id)
    assert f"SSM command {command_id} failed on {instance_id}" in event["message"]
    assert status in event["message"]
