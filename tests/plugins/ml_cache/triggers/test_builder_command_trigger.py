"""The builder's command watched with the builder: a builder lost mid-command fails the wait at once."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
import structlog
import structlog.testing

from ml_cache.build_progress import stream_name
from ml_cache.triggers.builder_command import BuilderCommandTrigger
from tests.conftest import REPO
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


# --- the builder's output, read from CloudWatch Logs while the command runs ----------------------

HELPERS = REPO / "plugins" / "ml_cache" / "scripts" / "build_cache_helpers.py"
GROUP = "/test/builder-output"


def _send_with_output(cloud_conn, instance_id: str, script: str) -> str:
    return cloud_conn.client("ssm").send_command(
        InstanceIds=[instance_id], DocumentName="AWS-RunShellScript", Parameters={"commands": [script]},
        CloudWatchOutputConfig={"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": GROUP},
    )["Command"]["CommandId"]


def _watching(cloud_conn, command_id: str, instance_id: str, group: str = GROUP) -> BuilderCommandTrigger:
    return BuilderCommandTrigger(command_id=command_id, instance_id=instance_id, waiter_delay=1,
                                 waiter_max_attempts=30, aws_conn_id=cloud_conn.conn_id, log_group=group,
                                 log_stream=stream_name(command_id, instance_id, "runShellScript"))


def test_serialize_round_trips_with_the_log_stream(cloud_conn, trigger_tools) -> None:
    trigger = _watching(cloud_conn, "00000000-1111-2222-3333-444444444444", "i-0123456789abcdef0")
    trigger_tools.assert_round_trip(trigger, "command_executed")
    assert trigger.serialize()[1]["log_stream"] == \
        "00000000-1111-2222-3333-444444444444/i-0123456789abcdef0/runShellScript/stderr"


class Captured(structlog.testing.LogCapture):
    """The trigger's log lines (Airflow 3 logs through structlog), the builder's with a snapshot taken as logged."""

    def __init__(self, snapshot: Callable[[], object] = lambda: None) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.lines: list[tuple[str, str, object]] = []

    def __call__(self, logger: object, method_name: str, event_dict: dict) -> dict:
        args = event_dict.get("positional_args") or ()
        message = str(event_dict.get("event", ""))
        message = message % tuple(args) if args else message
        self.lines.append((method_name, message, self.snapshot() if message.startswith("builder") else None))
        return super().__call__(logger, method_name, event_dict)


@contextlib.contextmanager
def captured(snapshot: Callable[[], object] = lambda: None) -> Iterator[Captured]:
    capture = Captured(snapshot)
    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[capture])
    try:
        yield capture
    finally:
        structlog.configure(processors=processors)


def test_progress_is_logged_while_the_command_runs(cloud_conn, online_instance, trigger_tools) -> None:
    """The progress line is logged (formatted) at a poll before the command ends, the script's other
    stderr lines as they are; the final read still gets what came last."""
    instance_id = online_instance()
    pulled = f"python3 {HELPERS} progress pulled registry.example/ml/llm:1 0"
    command_id = _send_with_output(cloud_conn, instance_id, f"echo 'build: 1 image(s)' >&2; {pulled}; sleep 5; "
                                                            "echo 'build: ok' >&2")
    ssm = cloud_conn.client("ssm")

    def status() -> str:
        return ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)["Status"]

    with captured(status) as log:
        event = trigger_tools.first_event(_watching(cloud_conn, command_id, instance_id))
    assert event == {"status": "success", "command_id": command_id}
    ours = [(message, state) for _, message, state in log.lines if message.startswith("builder")]
    assert ours == [("builder: build: 1 image(s)", "InProgress"),
                    ("builder progress: image registry.example/ml/llm:1 pulled", "InProgress"),
                    ("builder: build: ok", "Success")], ours


def test_a_failed_command_carries_the_stderr_tail_without_progress(cloud_conn, online_instance,
                                                                   trigger_tools) -> None:
    instance_id = online_instance()
    pulled = f"python3 {HELPERS} progress pulled registry.example/ml/llm:1 1"
    command_id = _send_with_output(cloud_conn, instance_id, f"{pulled}; echo 'ERROR: 1 of 1 image(s) failed' >&2; "
                                                            "exit 1")
    event = trigger_tools.first_event(_watching(cloud_conn, command_id, instance_id))
    assert (event["status"], event["stderr_tail"]) == ("error", "ERROR: 1 of 1 image(s) failed")


def test_no_output_group_warns_once_and_the_build_goes_on(cloud_conn, online_instance, trigger_tools) -> None:
    """The agent wrote elsewhere (or could not write): the wait is unchanged, one warning names the group."""
    instance_id = online_instance()
    command_id = _send_with_output(cloud_conn, instance_id, "echo hello >&2; sleep 2")
    with captured() as log:
        event = trigger_tools.first_event(_watching(cloud_conn, command_id, instance_id, group="/test/no-such-group"))
    assert event == {"status": "success", "command_id": command_id}
    warnings = [message for level, message, _ in log.lines if level == "warning"]
    assert len(warnings) == 1 and "/test/no-such-group" in warnings[0]
