"""Run a trigger as the triggerer does (rebuilt from serialize(), first event) against the local cloud."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from airflow._shared.module_loading import import_string  # what the triggerer uses
from airflow.triggers.base import BaseTrigger

from tests.conftest import REPO, AwsEndpoint


def rebuilt(trigger: BaseTrigger) -> BaseTrigger:
    """What the triggerer runs: the class at the serialized path, built from the serialized kwargs."""
    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**kwargs)


def first_event(trigger: BaseTrigger) -> dict[str, Any]:
    """The payload of the first event the rebuilt trigger yields."""

    async def first() -> dict[str, Any]:
        async for event in rebuilt(trigger).run():
            return event.payload
        raise AssertionError(f"{trigger!r} yielded no event")

    return asyncio.run(first())


@pytest.fixture
def trigger_tools() -> Any:
    """`rebuilt`, `first_event` and `assert_round_trip` for the trigger tests."""
    import types

    return types.SimpleNamespace(rebuilt=rebuilt, first_event=first_event, assert_round_trip=assert_round_trip)


def assert_round_trip(trigger: BaseTrigger, waiter_name: str) -> None:
    """serialize() names an importable class under plugins/ml_cache/triggers whose rebuild serializes the same,
    and the waiter exists in the hook's waiter model (our JSON or botocore)."""
    classpath, kwargs = trigger.serialize()
    module = classpath.rsplit(".", 1)[0]
    assert module.startswith("ml_cache.triggers.")
    origin = importlib.util.find_spec(module).origin
    assert origin.startswith(str(REPO / "plugins" / "ml_cache" / "triggers")), origin
    again = rebuilt(trigger)
    assert type(again) is type(trigger)
    assert again.serialize() == (classpath, kwargs)
    assert again.waiter_name == waiter_name
    assert waiter_name in again.hook().list_waiters()


@pytest.fixture
def cloud_instance(cloud_conn: AwsEndpoint) -> Iterator[Callable[..., str]]:
    """Launch an instance with a 1 GiB data volume at /dev/xvdb on the local cloud; terminated after the test."""
    ec2 = cloud_conn.client("ec2")
    launched: list[str] = []

    def launch() -> str:
        image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        instance = ec2.run_instances(
            ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="c6i.2xlarge",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": True}}],
        )["Instances"][0]
        launched.append(instance["InstanceId"])
        return instance["InstanceId"]

    yield launch
    if launched:
        ec2.terminate_instances(InstanceIds=launched)


@pytest.fixture
def online_instance(cloud_conn: AwsEndpoint, cloud_instance: Callable[..., str]) -> Callable[[], str]:
    """Launch an instance whose SSM agent is Online (waited for with our agent_online waiter)."""
    from ml_cache.hooks.ssm import CacheSsmHook

    def launch() -> str:
        cloud_conn.set_faults(agent_online_seconds=0)
        instance_id = cloud_instance()
        CacheSsmHook(aws_conn_id=cloud_conn.conn_id).get_waiter("agent_online").wait(
            Filters=[{"Key": "InstanceIds", "Values": [instance_id]}], WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        return instance_id

    return launch


def send_shell(cloud_conn: AwsEndpoint, instance_id: str, command: str, execution_timeout: int | None = None) -> str:
    """SendCommand of AWS-RunShellScript running `command`; the command id."""
    parameters = {"commands": [command]}
    if execution_timeout is not None:
        parameters["executionTimeout"] = [str(execution_timeout)]
    return cloud_conn.client("ssm").send_command(
        InstanceIds=[instance_id], DocumentName="AWS-RunShellScript", Parameters=parameters)["Command"]["CommandId"]
