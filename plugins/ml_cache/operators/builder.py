"""The builder instance: launch with fallbacks, wait until usable, always terminate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from botocore.exceptions import ClientError

from ml_cache.builder_instance import BuilderLaunch, builder_request, builder_summary, data_volume_id
from ml_cache.errors import PermanentFailure, is_permanent
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.links import EC2InstanceLink
from ml_cache.operators.base import CacheAwsOperator
from ml_cache.tags import client_token, run_tags
from ml_cache.triggers.ec2 import BuilderRunningTrigger
from ml_cache.triggers.ssm import SsmAgentOnlineTrigger

# Errors after which another (instance type, subnet) may well succeed. Anything else ends this try:
# at once for good (ml_cache.errors: Unsupported, InstanceLimitExceeded, permissions...), else retried.
CAPACITY_ERRORS = frozenset({"InsufficientInstanceCapacity", "InsufficientCapacity"})


# States a launched instance never comes back from (stopped included: we never start a builder again).
GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


class BuilderLaunchError(RuntimeError):
    """No candidate (instance type, subnet) could be launched."""


def builder_tags(pipeline: str, run_id: str) -> dict[str, str]:
    """Only builders carry role=builder (set at launch): IAM and teardown trust that tag."""
    return run_tags(pipeline, run_id, role="builder")


class LaunchBuilderOperator(CacheAwsOperator[CacheEc2Hook]):
    """Launch the builder; on capacity errors try the next (instance type, subnet).

    Idempotent: an instance already tagged with this run is reused, and every request carries a
    ClientToken derived from dag/run/task/map index, the clear generation and the candidate, so a retry
    gets the same instance and a cleared run a new one.
    """

    aws_hook_class = CacheEc2Hook
    template_fields: Sequence[str] = aws_template_fields("launch", "image_id", "volume_size_gib", "base_snapshot_id")
    operator_extra_links = (EC2InstanceLink(),)

    def __init__(self, *, launch: BuilderLaunch, image_id: str, volume_size_gib: int,
                 base_snapshot_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.launch = launch
        self.image_id = image_id
        self.volume_size_gib = volume_size_gib
        self.base_snapshot_id = base_snapshot_id

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        tags = builder_tags(self.launch.pipeline, ti.run_id)
        existing = self.hook.find_instances(tags)
        if existing:
            self.log.info("Reusing builder %s already launched by this run", existing[0]["InstanceId"])
            self.persist_link(context, EC2InstanceLink, instance_id=existing[0]["InstanceId"])
            return builder_summary(existing[0])
        failures = []
        for instance_type, subnet in self.launch.candidates():
            token = client_token(ti, instance_type, subnet)
            request = builder_request(self.launch, self.image_id, self.volume_size_gib, instance_type, subnet, tags,
                                      base_snapshot_id=self.base_snapshot_id)
            try:
                instance = self.hook.run_instance(ClientToken=token, **request)
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code not in CAPACITY_ERRORS:
                    failed = PermanentFailure if is_permanent(error) else BuilderLaunchError
                    raise failed(
                        f"RunInstances failed for {instance_type} in {subnet or 'the default subnet'}: "
                        f"{code}: {error.response.get('Error', {}).get('Message', '')}"
                    ) from error
                self.log.warning("%s: no capacity for %s in %s, trying the next candidate",
                                 code, instance_type, subnet or "default subnet")
                failures.append(f"{instance_type}/{subnet or 'default'}: {code}")
                continue
            self.log.info("Launched builder %s (%s) in %s", instance["InstanceId"], instance_type,
                          instance.get("Placement", {}).get("AvailabilityZone"))
            self.persist_link(context, EC2InstanceLink, instance_id=instance["InstanceId"])
            return builder_summary(instance)
        raise BuilderLaunchError("No capacity for any candidate: " + "; ".join(failures))


class WaitForBuilderOperator(CacheAwsOperator[CacheEc2Hook]):
    """Wait until the builder is running, then until its SSM agent is Online; both within `timeout_seconds`
    (a few seconds in the task, then deferred: operators.base.SETTLE_SECONDS).

    Returns the builder summary plus the data volume id, looked up by device name once running.
    """

    aws_hook_class = CacheEc2Hook
    template_fields: Sequence[str] = aws_template_fields("builder", "timeout_seconds", "poll_seconds")

    def __init__(self, *, builder: dict[str, Any], timeout_seconds: int, poll_seconds: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.builder = builder
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds

    def execute(self, context: Any) -> dict[str, Any] | None:
        instance_id = self.builder["instance_id"]
        if self.holds_soon(lambda: self.hook.describe_instance(instance_id)["State"]["Name"] == "running",
                           poll_seconds=self.poll_seconds,
                           timeout_seconds=self.timeout_seconds):  # in this try when it can: no #71580
            return self.running(context, {"status": "success", "instance_id": instance_id})
        self.defer_until(BuilderRunningTrigger, method_name="running", instance_id=instance_id,
                         timeout_seconds=self.timeout_seconds, poll_seconds=self.poll_seconds)
        return None  # not reached: defer raises

    def _agent_online(self, instance_id: str) -> bool:
        ssm = CacheSsmHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify,
                           config=self.botocore_config)
        found = ssm.conn.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])["InstanceInformationList"]
        return bool(found) and all(entry.get("PingStatus") == "Online" for entry in found)

    def running(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any] | None:
        event = validate_execute_complete_event(event)
        instance_id = self.builder["instance_id"]
        if event["status"] != "success":
            instance = self.hook.describe_instance(instance_id)
            message = f"Builder {instance_id} never ran: {event.get('message')} "
            message += instance.get("StateReason", {}).get("Message", "")
            if instance["State"]["Name"] in GONE_STATES:  # a retry would wait on the same dead instance
                raise PermanentFailure(message.strip())
            raise RuntimeError(message.strip())
        if self.holds_soon(lambda: self._agent_online(instance_id), poll_seconds=self.poll_seconds,
                           timeout_seconds=self.timeout_seconds):
            return self.online(context, {"status": "success", "instance_id": instance_id})
        self.defer_until(SsmAgentOnlineTrigger, method_name="online", instance_id=instance_id,
                         timeout_seconds=self.timeout_seconds, poll_seconds=self.poll_seconds)
        return None  # not reached: defer raises

    def online(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = validate_execute_complete_event(event)
        instance_id = self.builder["instance_id"]
        if event["status"] != "success":
            raise RuntimeError(f"SSM agent of builder {instance_id} not Online within {self.timeout_seconds} s: "
                               f"{event.get('message')}")
        instance = self.hook.describe_instance(instance_id)
        return {**self.builder, "data_volume_id": data_volume_id(instance)}


class TerminateBuilderOperator(CacheAwsOperator[CacheEc2Hook]):
    """Teardown: terminate the builder by id and every instance carrying this run's builder tags."""

    aws_hook_class = CacheEc2Hook
    template_fields: Sequence[str] = aws_template_fields("pipeline", "builder")

    def __init__(self, *, pipeline: str, builder: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.builder = builder

    def execute(self, context: Any) -> list[str]:
        tagged = self.hook.find_instances(builder_tags(self.pipeline, context["ti"].run_id))
        ids = {instance["InstanceId"] for instance in tagged}
        if isinstance(self.builder, dict) and self.builder.get("instance_id"):
            ids.add(self.builder["instance_id"])
        if not ids:
            self.log.info("No builder instance to terminate")
            return []
        for state in self.hook.terminate_instances(sorted(ids)):
            self.log.info("Builder %s: %s -> %s", state["InstanceId"], state["PreviousState"]["Name"],
                          state["CurrentState"]["Name"])
        return sorted(ids)
