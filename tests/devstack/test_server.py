"""The local cloud's HTTP server: fault routes, state, loopback only, and the CLI lifecycle."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3

from devstack.process import free_port

REPO = Path(__file__).resolve().parents[2]


def test_endpoint_is_loopback(cloud) -> None:
    assert cloud.endpoint.startswith("http://127.0.0.1:")
    host, _ = cloud.server.get_host_and_port()
    assert host == "127.0.0.1"


def test_fault_routes(cloud, helpers) -> None:
    status, body = helpers.devstack_call(cloud, "GET", "/_devstack/faults")
    assert status == 200 and body["agent_offline"] is False
    status, body = helpers.devstack_call(cloud, "POST", "/_devstack/faults", {
        "insufficient_capacity_instance_types": ["c6i.2xlarge"], "agent_offline": True, "snapshot_error": True,
        "fsr_unsuccessful_azs": ["us-west-2c"], "fsr_enabling_seconds": 1, "fsr_optimizing_seconds": 1,
        "agent_online_seconds": 1, "ssm_command_status": "Failed"})
    assert status == 200
    assert body["insufficient_capacity_instance_types"] == ["c6i.2xlarge"]
    assert body["ssm_command_status"] == "Failed" and body["fsr_enabling_seconds"] == 1.0
    assert helpers.devstack_call(cloud, "GET", "/_devstack/faults")[1]["agent_offline"] is True
    status, body = helpers.devstack_call(cloud, "POST", "/_devstack/faults", {"no_such_fault": 1})
    assert status == 400 and "no_such_fault" in body["error"]
    status, body = helpers.devstack_call(cloud, "POST", "/_devstack/faults", {"agent_offline": "yes"})
    assert status == 400
    status, body = helpers.devstack_call(cloud, "DELETE", "/_devstack/faults")
    assert status == 200 and body["agent_offline"] is False and body["insufficient_capacity_instance_types"] == []


def test_state_lists_sandboxes_and_running_commands(cloud, ssm, launch, set_faults, helpers) -> None:
    set_faults(agent_online_seconds=0)
    instance_id = launch()
    helpers.wait_online(ssm, instance_id)
    command_id = ssm.send_command(InstanceIds=[instance_id], DocumentName="AWS-RunShellScript",
                                  Parameters={"commands": ["sleep 30"]})["Command"]["CommandId"]
    status, state = helpers.devstack_call(cloud, "GET", "/_devstack/state")
    assert status == 200 and state["home"] == str(cloud.home)
    assert instance_id in {box["instance_id"] for box in state["sandboxes"]}
    listed = {i["instance_id"]: i for i in state["instances"]}
    assert listed[instance_id]["state"] == "running" and listed[instance_id]["sandbox"] is True
    running = {(c["command_id"], c["instance_id"]) for c in state["running_commands"]}
    assert (command_id, instance_id) in running
    ssm.cancel_command(CommandId=command_id)


def test_unknown_devstack_route_is_404(cloud, helpers) -> None:
    assert helpers.devstack_call(cloud, "GET", "/_devstack/nothing")[0] == 404



def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devstack", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def _reset_resets_the_extension(endpoint: str) -> None:
    """POST /moto-api/reset empties moto: sandboxes go too, and the EKS AMI parameters come back.

    Checked on the CLI's own server process: a reset in the test process would wipe other tests' state.
    """
    ssm = boto3.client("ssm", endpoint_url=endpoint, region_name="us-west-2",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    name = "/aws/service/eks/optimized-ami/1.32/amazon-linux-2023/arm64/standard/recommended/image_id"
    image_id = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    with urllib.request.urlopen(urllib.request.Request(endpoint + "/_devstack/state"), timeout=5) as answer:  # noqa: S310
        assert len(json.load(answer)["sandboxes"]) == 1
    urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset", method="POST"), timeout=10)  # noqa: S310
    with urllib.request.urlopen(endpoint + "/_devstack/state", timeout=5) as answer:  # noqa: S310
        assert json.load(answer)["sandboxes"] == []
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == image_id
    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-west-2",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    assert ec2.describe_images(ImageIds=[image_id])["Images"][0]["Architecture"] == "arm64"


def test_cli_up_status_down(tmp_path) -> None:
    home = tmp_path / "h"
    port = free_port()
    started = _cli("up", "--cloud-only", "--port", str(port), "--home", str(home),
                   "--plain-http-registry", "127.0.0.1:5001")
    assert started.returncode == 0, started.stderr
    endpoint = started.stdout.strip()
    try:
        assert endpoint == f"http://127.0.0.1:{port}"
        pid = int((home / "pids" / "cloud.pid").read_text())
        status = json.loads(_cli("status", "--home", str(home)).stdout)
        assert status["running"] and status["pid"] == pid and status["sandboxes"] == 0
        ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-west-2",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        assert ec2.describe_fast_snapshot_restores()["FastSnapshotRestores"] == []
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.micro",
                          BlockDeviceMappings=[{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 1}}])
        assert len(list((home / "volumes").iterdir())) == 1
        _reset_resets_the_extension(endpoint)
    finally:
        stopped = _cli("down", "--home", str(home))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not (home / "pids" / "cloud.pid").exists()
    assert not Path(f"/proc/{pid}").exists() or b"devstack" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert json.loads(_cli("status", "--home", str(home)).stdout)["running"] is False
    if shutil.which("losetup"):
        listing = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True, check=False).stdout
        backing = [d.get("back-file") or "" for d in json.loads(listing or '{"loopdevices": []}')["loopdevices"]]
        assert not [f for f in backing if f.startswith(str(home))]
    try:
        urllib.request.urlopen(endpoint + "/_devstack/state", timeout=2)  # noqa: S310
        reachable = True
    except OSError:
        reachable = False
    assert not reachable


def test_down_cleans_up_after_an_interrupted_run(tmp_path) -> None:
    """The server is SIGKILLed mid-command: `down` still stops what the command left and detaches loops."""
    home = tmp_path / "h"
    port = free_port()
    assert _cli("up", "--cloud-only", "--port", str(port), "--home", str(home)).returncode == 0
    endpoint = f"http://127.0.0.1:{port}"
    pid = int((home / "pids" / "cloud.pid").read_text())
    kw = {"endpoint_url": endpoint, "region_name": "us-west-2", "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    ec2, ssm = boto3.client("ec2", **kw), boto3.client("ssm", **kw)
    instance_id = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                    BlockDeviceMappings=[{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 1}}]
                                    )["Instances"][0]["InstanceId"]
    sandbox_dir = home / "instances" / instance_id
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            ssm.send_command(InstanceIds=[instance_id], DocumentName="AWS-RunShellScript", Parameters={
                # the leftover writes its pid only once it has its own session, and the command
                # waits for that: ending earlier would let the agent's group kill reach it first
                "commands": ["setsid bash -c 'echo $$ > leftover.pid; exec sleep 300' > /dev/null 2>&1 &",
                             "while [ ! -s leftover.pid ]; do sleep 0.05; done"]})
            break
        except ssm.exceptions.InvalidInstanceId:
            time.sleep(0.2)
    pid_file = sandbox_dir / "leftover.pid"
    while time.monotonic() < deadline and not (pid_file.exists() and pid_file.read_text().strip()):
        time.sleep(0.1)
    leftover = int(pid_file.read_text())
    os.kill(pid, signal.SIGKILL)  # interrupted: no teardown ran
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline + 10:
        time.sleep(0.1)
    assert Path(f"/proc/{leftover}").exists()
    assert _cli("down", "--home", str(home)).returncode == 0
    time.sleep(0.2)
    state = Path(f"/proc/{leftover}/stat")
    assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    if shutil.which("losetup"):
        listing = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True, check=False).stdout
        backing = [d.get("back-file") or "" for d in json.loads(listing or '{"loopdevices": []}')["loopdevices"]]
        assert not [f for f in backing if f.startswith(str(home))]
