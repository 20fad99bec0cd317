"""The local SSM agent: registration, Run Command that really runs, limits, timeouts, cancel."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from devstack.agent import documents


def _run(ssm, instance_id: str, commands: list[str], **extra) -> str:
    return ssm.send_command(InstanceIds=[instance_id], DocumentName="AWS-RunShellScript",
                            Parameters={"commands": commands, **extra})["Command"]["CommandId"]



# --- registration ---------------------------------------------------------------------------

def test_agent_comes_online_after_the_delay(ssm, launch, set_faults) -> None:
    set_faults(agent_online_seconds=1.0)
    started = time.monotonic()  # before the launch: the delay counts from it, and a loaded machine returns late
    instance_id = launch()
    assert ssm.describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])["InstanceInformationList"] == []
    with pytest.raises(ssm.exceptions.InvalidInstanceId):
        _run(ssm, instance_id, ["echo too early"])
    while time.monotonic() - started < 5:
        info = ssm.describe_instance_information(
            InstanceInformationFilterList=[{"key": "InstanceIds", "valueSet": [instance_id]}]
        )["InstanceInformationList"]
        if info:
            break
        time.sleep(0.1)
    assert time.monotonic() - started >= 1.0
    item = info[0]
    assert item["PingStatus"] == "Online"
    assert (item["PlatformType"], item["PlatformName"], item["ResourceType"]) == (
        "Linux", "Amazon Linux", "EC2Instance")
    assert item["AgentVersion"] and item["LastPingDateTime"]
    online = ssm.describe_instance_information(Filters=[{"Key": "PingStatus", "Values": ["Online"]}])
    assert instance_id in {i["InstanceId"] for i in online["InstanceInformationList"]}


def test_agent_offline_fault_keeps_it_unregistered(ssm, launch, set_faults) -> None:
    set_faults(agent_online_seconds=0, agent_offline=True)
    instance_id = launch()
    time.sleep(0.3)
    assert ssm.describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])["InstanceInformationList"] == []
    with pytest.raises(ssm.exceptions.InvalidInstanceId):
        _run(ssm, instance_id, ["echo never"])


def test_agent_goes_connection_lost_when_the_instance_stops(ec2, ssm, online) -> None:
    ec2.stop_instances(InstanceIds=[online])
    info = ssm.describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [online]}])["InstanceInformationList"]
    assert info[0]["PingStatus"] == "ConnectionLost"


# --- Run Command ----------------------------------------------------------------------------

def test_echo_succeeds_with_its_stdout(ssm, online, helpers) -> None:
    command_id = _run(ssm, online, ["echo hi", 'echo "device dir: $ML_CACHE_DEVICE_DIR"', "pwd"])
    result = helpers.wait_invocation(ssm, command_id, online)
    assert (result["Status"], result["ResponseCode"]) == ("Success", 0)
    lines = result["StandardOutputContent"].splitlines()
    assert lines[0] == "hi"
    assert lines[1].endswith(f"/instances/{online}/dev/disk/by-id")
    assert lines[2].endswith(f"/instances/{online}")
    assert result["PluginName"] == "runShellScript" and result["ExecutionEndDateTime"]


def test_sandbox_environment_for_the_builder(ssm, online, helpers) -> None:
    command_id = _run(ssm, online, ["env | grep ^ML_CACHE_ | sort"])
    output = helpers.wait_invocation(ssm, command_id, online)["StandardOutputContent"]
    env = dict(line.split("=", 1) for line in output.splitlines())
    assert env["ML_CACHE_CONTAINERD_SERVICE"] == "process"
    assert env["ML_CACHE_PLAIN_HTTP_REGISTRIES"] == "127.0.0.1:5999"
    assert env["ML_CACHE_CONTAINERD_ROOT"].endswith(f"{online}/var/lib/containerd")
    assert env["ML_CACHE_CONTAINERD_STATE"].endswith(f"{online}/run/containerd")
    assert env["ML_CACHE_CONTAINERD_SOCKET"].endswith("containerd.sock")
    assert len(env["ML_CACHE_CONTAINERD_SOCKET"]) <= 100
    assert env["ML_CACHE_CONTAINERD_PIDFILE"].endswith(f"{online}/run/ml-cache-containerd.pid")
    assert Path(env["ML_CACHE_CONTAINERD_CONFIG"]).read_text().count(env["ML_CACHE_CONTAINERD_SOCKET"]) >= 1


def test_aws_sdk_inside_a_command_reaches_the_local_cloud(ssm, online, helpers, cloud) -> None:
    ssm.put_parameter(Name="/devstack-test/secret", Value="user:pass", Type="SecureString", Overwrite=True)
    script = ("import boto3; print(boto3.client('ssm').get_parameter("
              "Name='/devstack-test/secret', WithDecryption=True)['Parameter']['Value'])")
    command_id = _run(ssm, online, [f'"{sys.executable}" -c "{script}"', 'echo "$AWS_ENDPOINT_URL"'])
    result = helpers.wait_invocation(ssm, command_id, online)
    assert result["Status"] == "Success", result["StandardErrorContent"]
    assert result["StandardOutputContent"].splitlines() == ["user:pass", cloud.endpoint]


def test_exit_code_fails_the_command(ssm, online, helpers) -> None:
    command_id = _run(ssm, online, ["echo before >&2", "exit 3"])
    result = helpers.wait_invocation(ssm, command_id, online)
    assert (result["Status"], result["StatusDetails"], result["ResponseCode"]) == ("Failed", "Failed", 3)
    assert result["StandardErrorContent"] == "before\n"
    assert ssm.list_commands(CommandId=command_id)["Commands"][0]["Status"] == "Failed"


def test_env_var_parameter_is_data_not_code(ssm, online, helpers, tmp_path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"$(touch {marker}); rm -rf {tmp_path}/nothing; `touch {marker}`"
    document = {
        "schemaVersion": "2.2",
        "description": "print a parameter passed as an environment variable",
        "parameters": {
            "images": {"type": "String", "interpolationType": "ENV_VAR", "description": "JSON of refs"},
            "label": {"type": "String", "default": "plain"},
        },
        "mainSteps": [{"action": "aws:runShellScript", "name": "build", "inputs": {
            "timeoutSeconds": "60",
            "runCommand": ['printf "%s\\n" "$SSM_images"', "echo label={{ label }}", "echo raw='{{ images }}'"],
        }}],
    }
    ssm.create_document(Name="devstack-env-var-test", Content=json.dumps(document), DocumentType="Command")
    command_id = ssm.send_command(InstanceIds=[online], DocumentName="devstack-env-var-test",
                                  Parameters={"images": [hostile], "label": ["x1"]})["Command"]["CommandId"]
    result = helpers.wait_invocation(ssm, command_id, online)
    assert result["Status"] == "Success", result["StandardErrorContent"]
    lines = result["StandardOutputContent"].splitlines()
    assert lines[0] == hostile
    assert lines[1] == "label=x1"
    assert lines[2] == "raw={{ images }}"  # ENV_VAR parameters are never interpolated into the script
    assert not marker.exists()
    assert result["PluginName"] == "build"


def test_unknown_parameter_is_rejected(ssm, online) -> None:
    with pytest.raises(ssm.exceptions.InvalidParameters):
        _run(ssm, online, ["true"], nonsense=["1"])


def test_long_output_is_cut_at_aws_limits(ssm, online, helpers) -> None:
    command_id = _run(ssm, online, ["head -c 30000 /dev/zero | tr '\\0' o", "head -c 9000 /dev/zero | tr '\\0' e >&2"])
    result = helpers.wait_invocation(ssm, command_id, online)
    assert result["Status"] == "Success"
    assert result["StandardOutputContent"] == "o" * 24_000
    assert result["StandardErrorContent"] == "e" * 8_000
    invocation = ssm.list_command_invocations(CommandId=command_id, Details=True)["CommandInvocations"][0]
    assert len(invocation["CommandPlugins"][0]["Output"]) == 2_500


def _group_gone(pgid: int) -> bool:
    """No live process left in the group (an exited child waiting for init to reap it is dead)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state not in ("Z", "X"):
            return False
    return True


def test_execution_timeout_kills_the_process_group(ssm, online, cloud, helpers) -> None:
    pid_file = cloud.home / "instances" / online / "group"
    command_id = _run(ssm, online, ["sleep 300 &", f"echo $$ > {pid_file}", "sleep 300"], executionTimeout=["1"])
    started = time.monotonic()
    result = helpers.wait_invocation(ssm, command_id, online)
    assert (result["Status"], result["StatusDetails"]) == ("TimedOut", "ExecutionTimedOut")
    assert time.monotonic() - started < 10
    assert _group_gone(int(pid_file.read_text()))


def test_cancel_kills_the_process_group(ssm, online, cloud, helpers) -> None:
    pid_file = cloud.home / "instances" / online / "cancel-group"
    command_id = _run(ssm, online, ["sleep 300 &", f"echo $$ > {pid_file}", "sleep 300"])
    pgid = int(helpers.wait_for(lambda: pid_file.exists() and pid_file.read_text().strip()))
    ssm.cancel_command(CommandId=command_id)
    result = helpers.wait_invocation(ssm, command_id, online)
    assert result["Status"] == "Cancelled"
    assert _group_gone(pgid)


def test_invocation_does_not_exist_right_after_send(ssm, online, set_faults) -> None:
    set_faults(invocation_absent_seconds=0.6)
    command_id = _run(ssm, online, ["echo hi"])
    with pytest.raises(ssm.exceptions.InvocationDoesNotExist):
        ssm.get_command_invocation(CommandId=command_id, InstanceId=online)
    assert ssm.list_command_invocations(CommandId=command_id)["CommandInvocations"] == []
    time.sleep(0.7)
    assert ssm.get_command_invocation(CommandId=command_id, InstanceId=online)["Status"] in (
        "InProgress", "Success")


def test_list_command_invocations_shape(ssm, online, helpers) -> None:
    command_id = _run(ssm, online, ["echo listed", "echo oops >&2"])
    helpers.wait_invocation(ssm, command_id, online)
    brief = ssm.list_command_invocations(CommandId=command_id)["CommandInvocations"]
    assert brief[0]["CommandPlugins"] == []
    invocation = ssm.list_command_invocations(CommandId=command_id, Details=True)["CommandInvocations"][0]
    assert (invocation["CommandId"], invocation["InstanceId"], invocation["DocumentName"]) == (
        command_id, online, "AWS-RunShellScript")
    assert invocation["Status"] == "Success" and invocation["RequestedDateTime"]
    plugin = invocation["CommandPlugins"][0]
    assert (plugin["Name"], plugin["Status"], plugin["StatusDetails"], plugin["ResponseCode"]) == (
        "runShellScript", "Success", "Success", 0)
    assert plugin["Output"] == "listed\n\n----------ERROR-------\noops\n"
    assert plugin["ResponseStartDateTime"] <= plugin["ResponseFinishDateTime"]
    by_instance = ssm.list_command_invocations(InstanceId=online, Details=True)["CommandInvocations"]
    assert command_id in {i["CommandId"] for i in by_instance}


def test_command_status_fault(ssm, online, set_faults, helpers, cloud) -> None:
    set_faults(ssm_command_status="Failed")
    marker = cloud.home / "instances" / online / "ran"
    command_id = _run(ssm, online, [f"touch {marker}"])
    result = helpers.wait_invocation(ssm, command_id, online)
    assert result["Status"] == "Failed" and result["ResponseCode"] != 0
    assert "ssm_command_status" in result["StandardErrorContent"]
    assert not marker.exists()


@pytest.mark.parametrize(("fault", "status", "details"), [
    ("TimedOut", "TimedOut", "ExecutionTimedOut"), ("Undeliverable", "Failed", "Undeliverable"),
    ("Cancelled", "Cancelled", "Cancelled")])
def test_command_status_fault_uses_aws_status_pairs(ssm, online, set_faults, helpers, fault, status, details):
    set_faults(ssm_command_status=fault)
    result = helpers.wait_invocation(ssm, _run(ssm, online, ["true"]), online)
    assert (result["Status"], result["StatusDetails"]) == (status, details)


@pytest.mark.parametrize(("how", "code"), [("stopped", "Server.ScheduledStop"),
                                            ("terminated", "Client.InstanceInitiatedShutdown")])
def test_an_instance_lost_mid_command_leaves_the_invocation_in_progress(ec2, ssm, online, set_faults, helpers,
                                                                         cloud, how, code):
    """AWS: nobody reports a command whose instance went away; it stays InProgress until its execution
    timeout (then TimedOut). The instance says what happened: its state and StateReason."""
    set_faults(instance_lost_mid_command=how)
    pid_file = cloud.home / "instances" / online / "lost-group"
    command_id = _run(ssm, online, [f"echo $$ > {pid_file}", "sleep 300"], executionTimeout=["4"])
    pgid = int(helpers.wait_for(lambda: pid_file.exists() and pid_file.read_text().strip()))

    def instance():
        return ec2.describe_instances(InstanceIds=[online])["Reservations"][0]["Instances"][0]

    lost = helpers.wait_for(lambda: instance()["State"]["Name"] == how and instance(), what=how)
    assert lost["StateReason"]["Code"] == code and lost["StateReason"]["Message"].startswith(code)
    assert ssm.get_command_invocation(CommandId=command_id, InstanceId=online)["Status"] == "InProgress"
    helpers.wait_for(lambda: _group_gone(pgid), what="the script dies with its instance")
    result = helpers.wait_invocation(ssm, command_id, online)
    assert (result["Status"], result["StatusDetails"]) == ("TimedOut", "ExecutionTimedOut")



def test_a_command_quicker_than_the_loss_is_lost_too(ec2, ssm, online, set_faults, helpers):
    """The fault always hits: a command that ends before its instance goes is never reported either
    (the DAG's fault tests must not pass or fail with the machine's speed)."""
    set_faults(instance_lost_mid_command="stopped")
    command_id = _run(ssm, online, ["true"], executionTimeout=["3"])

    def state() -> str:
        return ec2.describe_instances(InstanceIds=[online])["Reservations"][0]["Instances"][0]["State"]["Name"]

    helpers.wait_for(lambda: state() == "stopped", what="stopped")
    assert ssm.get_command_invocation(CommandId=command_id, InstanceId=online)["Status"] == "InProgress"
    result = helpers.wait_invocation(ssm, command_id, online)
    assert (result["Status"], result["StatusDetails"]) == ("TimedOut", "ExecutionTimedOut")

# --- document planning (pure logic) ---------------------------------------------------------

def test_plan_substitutes_placeholders_and_expands_string_lists(tmp_path) -> None:
    plugins, env = documents.plan("AWS-RunShellScript", documents.RUN_SHELL_SCRIPT,
                              {"commands": ["echo a", "echo b"], "executionTimeout": ["42"]}, tmp_path)
    assert env == {}
    assert plugins[0].script == "echo a\necho b\n"
    assert plugins[0].timeout_seconds == 42.0
    assert plugins[0].working_directory == ""


def test_plan_rejects_missing_required_and_pattern_mismatch(tmp_path) -> None:
    document = {"schemaVersion": "2.2", "parameters": {
        "ref": {"type": "String", "interpolationType": "ENV_VAR", "allowedPattern": "^[a-z0-9./:@-]+$"}},
        "mainSteps": [{"action": "aws:runShellScript", "name": "s", "inputs": {"runCommand": ["true"]}}]}
    with pytest.raises(documents.InvalidParameters):
        documents.plan("d", document, {}, tmp_path)
    with pytest.raises(documents.InvalidParameters):
        documents.plan("d", document, {"ref": ["busybox; rm -rf /"]}, tmp_path)
    _, env = documents.plan("d", document, {"ref": ["docker.io/library/busybox:1.37"]}, tmp_path)
    assert env == {"SSM_ref": "docker.io/library/busybox:1.37"}
    with pytest.raises(documents.InvalidDocument):
        documents.plan("d", {"schemaVersion": "1.2", "runtimeConfig": {}}, {}, tmp_path)
