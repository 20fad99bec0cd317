"""The builder instance: launch with fallbacks, wait until usable, always terminate."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from botocore.exceptions import ClientError

from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.tags import client_token, run_tags
from ml_cache.triggers.ec2 import BuilderRunningTrigger
from ml_cache.triggers.ssm import SsmAgentOnlineTrigger

# Errors after which another (instance type, subnet) may well succeed. Anything else
# (Unsupported, InstanceLimitExceeded, permissions...) fails the task at once.
CAPACITY_ERRORS = frozenset({"InsufficientInstanceCapacity", "InsufficientCapacity"})
ROOT_DEVICE = "/dev/xvda"
DATA_DEVICE = "/dev/xvdb"
ROOT_VOLUME_GIB = 30


class BuilderLaunchError(RuntimeError):
    """No candidate (instance type, subnet) could be launched."""


def waiter_attempts(timeout_seconds: int, delay_seconds: int) -> int:
    """A deadline expressed as waiter attempts."""
    return max(1, math.ceil(timeout_seconds / max(1, delay_seconds)))


def trigger_connection(operator: AwsBaseOperator) -> dict[str, Any]:
    """The deferred half talks to AWS exactly like the task: same connection, region, botocore config."""
    return {"aws_conn_id": operator.aws_conn_id, "region_name": operator.region_name, "verify": operator.verify,
            "botocore_config": operator.botocore_config}


def launch_candidates(settings: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(instance type, subnet) in the order to try: each type in every subnet before the next type."""
    subnets: list[str | None] = list(settings.get("subnet_ids") or []) or [None]
    return [(instance_type, subnet) for instance_type in settings["instance_types"] for subnet in subnets]


def deadman_user_data(minutes: int) -> str:
    """In-guest timer: with shutdown behaviour `terminate` the builder cannot outlive the run."""
    return f"#!/bin/bash\nshutdown -h +{int(minutes)}\n"


def builder_request(settings: dict[str, Any], image_id: str, instance_type: str, subnet: str | None,
                    tags: dict[str, str]) -> dict[str, Any]:
    """RunInstances parameters: IMDSv2 only, no public IP, encrypted volumes, terminate on shutdown."""
    data_ebs: dict[str, Any] = {
        "VolumeSize": settings["volume_size_gib"],
        "VolumeType": "gp3",
        "Iops": settings["volume_iops"],
        "Throughput": settings["volume_throughput_mibps"],
        "Encrypted": True,
        "DeleteOnTermination": True,
    }
    if settings.get("kms_key_id"):
        data_ebs["KmsKeyId"] = settings["kms_key_id"]
    tag_list = [{"Key": key, "Value": value} for key, value in sorted(tags.items())]
    name_tag = {"Key": "Name", "Value": f"{settings['pipeline']}-builder"}
    request: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": instance_type,
        "IamInstanceProfile": {"Name": settings["instance_profile"]},
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "UserData": deadman_user_data(settings["build_seconds"] // 60 + 120),
        "BlockDeviceMappings": [
            {"DeviceName": ROOT_DEVICE, "Ebs": {"VolumeSize": ROOT_VOLUME_GIB, "VolumeType": "gp3",
                                                "Encrypted": True, "DeleteOnTermination": True}},
            {"DeviceName": DATA_DEVICE, "Ebs": data_ebs},
        ],
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": [*tag_list, name_tag]},
            {"ResourceType": "volume", "Tags": tag_list},
        ],
    }
    if subnet:
        request["NetworkInterfaces"] = [{
            "DeviceIndex": 0,
            "SubnetId": subnet,
            "Groups": list(settings.get("security_group_ids") or []),
            "AssociatePublicIpAddress": False,
        }]
    elif settings.get("security_group_ids"):
        request["SecurityGroupIds"] = list(settings["security_group_ids"])
    return request


def data_volume_id(instance: dict[str, Any], device_name: str = DATA_DEVICE) -> str:
    """The volume attached at `device_name`: chosen by name, never by list position."""
    for mapping in instance.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == device_name and "Ebs" in mapping:
            return mapping["Ebs"]["VolumeId"]
    attached = [m.get("DeviceName") for m in instance.get("BlockDeviceMappings", [])]
    raise RuntimeError(f"No EBS volume at {device_name} on {instance['InstanceId']} (attached: {attached})")


class LaunchBuilderOperator(AwsBaseOperator[CacheEc2Hook]):
    """Launch the builder; on capacity errors try the next (instance type, subnet).

    Idempotent: an instance already tagged with this run is reused, and every request carries a
    ClientToken derived from dag/run/task/map index and the candidate, so a retry gets the same instance.
    """

    aws_hook_class = CacheEc2Hook
    template_fields: Sequence[str] = aws_template_fields("settings", "image_id")

    def __init__(self, *, settings: Any, image_id: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.image_id = image_id

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        settings = self.settings
        tags = run_tags(settings["pipeline"], ti.run_id, role="builder")
        existing = self.hook.find_instances(tags)
        if existing:
            instance = existing[0]
            self.log.info("Reusing builder %s already launched by this run", instance["InstanceId"])
            return self._summary(instance)

        failures = []
        for instance_type, subnet in launch_candidates(settings):
            token = client_token(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, instance_type, subnet or "")
            request = builder_request(settings, self.image_id, instance_type, subnet, tags)
            try:
                instance = self.hook.run_instance(ClientToken=token, **request)
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code not in CAPACITY_ERRORS:
                    raise BuilderLaunchError(
                        f"RunInstances failed for {instance_type} in {subnet or 'the default subnet'}: "
                        f"{code}: {error.response.get('Error', {}).get('Message', '')}"
                    ) from error
                self.log.warning("%s: no capacity for %s in %s, trying the next candidate",
                                 code, instance_type, subnet or "default subnet")
                failures.append(f"{instance_type}/{subnet or 'default'}: {code}")
                continue
            self.log.info("Launched builder %s (%s) in %s", instance["InstanceId"], instance_type,
                          instance.get("Placement", {}).get("AvailabilityZone"))
            return self._summary(instance)
        raise BuilderLaunchError("No capacity for any candidate: " + "; ".join(failures))

    @staticmethod
    def _summary(instance: dict[str, Any]) -> dict[str, Any]:
        return {
            "instance_id": instance["InstanceId"],
            "instance_type": instance["InstanceType"],
            "subnet_id": instance.get("SubnetId"),
            "availability_zone": instance.get("Placement", {}).get("AvailabilityZone"),
        }


class WaitForBuilderOperator(AwsBaseOperator[CacheEc2Hook]):
    """Defer until the builder is running, then until its SSM agent is Online; both with a deadline.

    Returns the builder summary plus the data volume id, looked up by device name once running.
    """

    aws_hook_class = CacheEc2Hook
    template_fields: Sequence[str] = aws_template_fields("settings", "builder")

    def __init__(self, *, settings: Any, builder: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.builder = builder

    def _deadline(self) -> tuple[int, int]:
        delay = self.settings["poll_seconds"]
        return delay, waiter_attempts(self.settings["agent_online_seconds"], delay)

    def execute(self, context: Any) -> None:
        delay, attempts = self._deadline()
        self.defer(
            trigger=BuilderRunningTrigger(
                instance_id=self.builder["instance_id"], waiter_delay=delay, waiter_max_attempts=attempts,
                **trigger_connection(self),
            ),
            method_name="running",
        )

    def running(self, context: Any, event: dict[str, Any] | None = None) -> None:
        event = validate_execute_complete_event(event)
        instance_id = self.builder["instance_id"]
        if event["status"] != "success":
            reason = self.hook.describe_instance(instance_id).get("StateReason", {}).get("Message", "")
            raise RuntimeError(f"Builder {instance_id} never ran: {event.get('message')} {reason}".strip())
        delay, attempts = self._deadline()
        self.defer(
            trigger=SsmAgentOnlineTrigger(
                instance_id=instance_id, waiter_delay=delay, waiter_max_attempts=attempts,
                **trigger_connection(self),
            ),
            method_name="online",
        )

    def online(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = validate_execute_complete_event(event)
        instance_id = self.builder["instance_id"]
        if event["status"] != "success":
            raise RuntimeError(
                f"SSM agent of builder {instance_id} not Online within "
                f"{self.settings['agent_online_seconds']} s: {event.get('message')}"
            )
        instance = self.hook.describe_instance(instance_id)
        return {**self.builder, "data_volume_id": data_volume_id(instance)}


class TerminateBuilderOperator(AwsBaseOperator[CacheEc2Hook]):
    """Teardown: terminate the builder by id and every instance carrying this run's tags."""

    aws_hook_class = CacheEc2Hook
    template_fields: Sequence[str] = aws_template_fields("settings", "builder")

    def __init__(self, *, settings: Any, builder: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.builder = builder

    def execute(self, context: Any) -> list[str]:
        tagged = self.hook.find_instances(run_tags(self.settings["pipeline"], context["ti"].run_id, role="builder"))
        ids = {instance["InstanceId"] for instance in tagged}
        if isinstance(self.builder, dict) and self.builder.get("instance_id"):
            ids.add(self.builder["instance_id"])
        if not ids:
            self.log.info("No builder instance to terminate")
            return []
        states = self.hook.terminate_instances(sorted(ids))
        for state in states:
            self.log.info("Builder %s: %s -> %s", state["InstanceId"], state["PreviousState"]["Name"],
                          state["CurrentState"]["Name"])
        return sorted(ids)
