"""Fixtures for the local cloud's control plane: one in-process server per session, boto3 clients.

Tests talk to it only through boto3 and the /_devstack HTTP routes, as the DAGs do.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from devstack import server

REGION = "us-west-2"
EKS_AMI = "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id"


@pytest.fixture(scope="session")
def cloud(devstack_server: server.Handle) -> server.Handle:
    return devstack_server


@pytest.fixture(autouse=True)
def _reset_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that uses the cloud starts and ends with no faults set."""
    if "cloud" not in request.fixturenames:
        yield
        return
    handle = request.getfixturevalue("cloud")
    devstack_call(handle, "DELETE", "/_devstack/faults")
    yield
    devstack_call(handle, "DELETE", "/_devstack/faults")


@pytest.fixture
def advance_clock(cloud: server.Handle) -> Iterator[Callable[[float], dict[str, Any]]]:
    """Move the local cloud's clock forward. It never goes back (what was stamped on it would be in the
    future): a test compares times with the cloud's clock, never the worker's."""

    def advance(seconds: float) -> dict[str, Any]:
        status, body = devstack_call(cloud, "POST", "/_devstack/clock", {"advance_seconds": seconds})
        assert status == 200, body
        return body

    yield advance


def devstack_call(handle: server.Handle, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(handle.endpoint + path, data=data, method=method,  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, _json_or_none(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, _json_or_none(error.read())


def _json_or_none(raw: bytes) -> Any:
    return json.loads(raw) if raw.strip() else None


@pytest.fixture
def set_faults(cloud: server.Handle) -> Callable[..., dict[str, Any]]:
    def apply(**changes: Any) -> dict[str, Any]:
        status, body = devstack_call(cloud, "POST", "/_devstack/faults", changes)
        assert status == 200, body
        return body

    return apply


@pytest.fixture
def aws(cloud: server.Handle) -> Callable[..., Any]:
    """boto3 client factory against the local cloud; one attempt, so injected 5xx are seen as-is."""

    def client(service: str, region: str = REGION) -> Any:
        return boto3.client(
            service, endpoint_url=cloud.endpoint, region_name=region,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )

    return client


@pytest.fixture
def ec2(aws: Callable[..., Any]) -> Any:
    return aws("ec2")


@pytest.fixture
def ssm(aws: Callable[..., Any]) -> Any:
    return aws("ssm")


@pytest.fixture
def launch(ec2: Any, ssm: Any) -> Iterator[Callable[..., str]]:
    """Launch a builder-like instance (root + data volume); terminated after the test."""
    launched: list[str] = []

    def run(instance_type: str = "c6i.2xlarge", data_gib: int = 1, delete_on_termination: bool = True) -> str:
        image_id = ssm.get_parameter(Name=EKS_AMI)["Parameter"]["Value"]
        answer = ec2.run_instances(
            ImageId=image_id, MinCount=1, MaxCount=1, InstanceType=instance_type,
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 20, "DeleteOnTermination": True}},
                {"DeviceName": "/dev/xvdb",
                 "Ebs": {"VolumeSize": data_gib, "DeleteOnTermination": delete_on_termination}},
            ],
        )
        instance_id = answer["Instances"][0]["InstanceId"]
        launched.append(instance_id)
        return instance_id

    yield run
    if launched:
        ec2.terminate_instances(InstanceIds=launched)


@pytest.fixture
def online(launch: Callable[..., str], ssm: Any, set_faults: Callable[..., Any], helpers: Any) -> str:
    """An instance whose agent is Online (short registration delay)."""
    set_faults(agent_online_seconds=0.2)
    instance_id = launch()
    helpers.wait_online(ssm, instance_id)
    return instance_id


@pytest.fixture
def helpers() -> Any:
    """The polling helpers below, for tests (conftest modules are not imported by name)."""
    import types

    return types.SimpleNamespace(wait_online=wait_online, wait_invocation=wait_invocation, wait_for=wait_for,
                                 devstack_call=devstack_call)


def wait_online(ssm: Any, instance_id: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = ssm.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])["InstanceInformationList"]
        if info and info[0]["PingStatus"] == "Online":
            return
        time.sleep(0.1)
    raise AssertionError(f"{instance_id} never came Online")


def wait_invocation(ssm: Any, command_id: str, instance_id: str, timeout: float = 30) -> dict[str, Any]:
    """Poll GetCommandInvocation (through the InvocationDoesNotExist window) until terminal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        except ssm.exceptions.InvocationDoesNotExist:
            time.sleep(0.1)
            continue
        if answer["Status"] not in ("Pending", "InProgress", "Delayed", "Cancelling"):
            return answer
        time.sleep(0.1)
    raise AssertionError(f"command {command_id} did not finish within {timeout}s")


def wait_for(predicate: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout}s")
