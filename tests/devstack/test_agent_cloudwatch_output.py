"""SendCommand's CloudWatchOutputConfig on the local agent: each step's stdout and stderr reach the
moto server's CloudWatch Logs while the step runs, in the streams the real agent names."""

from __future__ import annotations

from ml_cache.build_progress import stream_name


def _messages(logs, group: str, stream: str) -> list[str]:
    try:
        events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
    except logs.exceptions.ResourceNotFoundException:
        return []
    return [event["message"] for event in events]


def test_output_streams_while_the_command_runs(ssm, aws, online, helpers) -> None:
    logs = aws("logs")
    script = "echo first out; echo first err >&2; sleep 6; echo second out; echo second err >&2"
    command_id = ssm.send_command(
        InstanceIds=[online], DocumentName="AWS-RunShellScript", Parameters={"commands": [script]},
        CloudWatchOutputConfig={"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": "/test/agent-output"},
    )["Command"]["CommandId"]
    stdout = stream_name(command_id, online, "runShellScript", "stdout")
    stderr = stream_name(command_id, online, "runShellScript", "stderr")
    helpers.wait_for(lambda: _messages(logs, "/test/agent-output", stderr) == ["first err"], timeout=5,
                     what="the first stderr line in CloudWatch Logs")
    assert _messages(logs, "/test/agent-output", stdout) == ["first out"]
    running = ssm.get_command_invocation(CommandId=command_id, InstanceId=online)
    assert running["Status"] == "InProgress"  # the line arrived before the command ended
    assert running["CloudWatchOutputConfig"] == {"CloudWatchLogGroupName": "/test/agent-output",
                                                 "CloudWatchOutputEnabled": True}
    assert helpers.wait_invocation(ssm, command_id, online)["Status"] == "Success"
    assert _messages(logs, "/test/agent-output", stdout) == ["first out", "second out"]
    assert _messages(logs, "/test/agent-output", stderr) == ["first err", "second err"]


def test_without_a_group_the_agent_uses_aws_ssm_and_the_document_name(ssm, aws, online, helpers) -> None:
    command_id = ssm.send_command(InstanceIds=[online], DocumentName="AWS-RunShellScript",
                                  Parameters={"commands": ["echo hello"]},
                                  CloudWatchOutputConfig={"CloudWatchOutputEnabled": True})["Command"]["CommandId"]
    assert helpers.wait_invocation(ssm, command_id, online)["Status"] == "Success"
    assert _messages(aws("logs"), "/aws/ssm/AWS-RunShellScript",
                     stream_name(command_id, online, "runShellScript", "stdout")) == ["hello"]


def test_output_off_writes_no_stream(ssm, aws, online, helpers) -> None:
    command_id = ssm.send_command(InstanceIds=[online], DocumentName="AWS-RunShellScript",
                                  Parameters={"commands": ["echo quiet"]})["Command"]["CommandId"]
    result = helpers.wait_invocation(ssm, command_id, online)
    assert result["CloudWatchOutputConfig"]["CloudWatchOutputEnabled"] is False
    streams = aws("logs").describe_log_streams(logGroupName="/aws/ssm/AWS-RunShellScript")["logStreams"] \
        if aws("logs").describe_log_groups(logGroupNamePrefix="/aws/ssm/AWS-RunShellScript")["logGroups"] else []
    assert not any(s["logStreamName"].startswith(command_id) for s in streams)
