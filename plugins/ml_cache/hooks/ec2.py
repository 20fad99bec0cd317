"""EC2 calls of the cache pipeline: the builder instance, its volume, snapshots and FSR."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from ml_cache.hooks._waiters import CustomWaitersMixin
from ml_cache.tags import tag_filters, tag_list, tag_specifications

LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped"]


def clock_from_date(date_header: str | None, worker_now: datetime) -> tuple[datetime, Literal["aws", "worker"]]:
    """AWS's time from an answer's `Date` header (RFC 7231), else the worker's UTC clock."""
    if date_header:
        try:
            return parsedate_to_datetime(date_header).astimezone(UTC), "aws"
        except (TypeError, ValueError):
            pass
    return worker_now.astimezone(UTC), "worker"


class CacheEc2Hook(CustomWaitersMixin, AwsBaseHook):
    """EC2 client hook with the `fast_snapshot_restores_enabled` waiter (botocore has none)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "ec2"
        super().__init__(*args, **kwargs)

    def aws_now(self) -> tuple[datetime, Literal["aws", "worker"]]:
        """Now on AWS's clock (a worker's clock may be skewed; the local cloud's can be advanced) and
        which clock it is: see `clock_from_date`."""
        return clock_from_date(self.server_date(), datetime.now(UTC))

    # -- instances -------------------------------------------------------------------------
    def run_instance(self, **request: Any) -> dict[str, Any]:
        """RunInstances for exactly one instance; returns its description."""
        response = self.conn.run_instances(MinCount=1, MaxCount=1, **request)
        return response["Instances"][0]

    def describe_instance(self, instance_id: str) -> dict[str, Any]:
        return self.describe_instances([instance_id])[0]

    def find_instances(self, tags: dict[str, str], states: list[str] | None = None) -> list[dict[str, Any]]:
        """Instances carrying all `tags` (in `states`, default: not terminated)."""
        filters = [*tag_filters(tags), {"Name": "instance-state-name", "Values": states or LIVE_INSTANCE_STATES}]
        paginator = self.conn.get_paginator("describe_instances")
        return [
            instance
            for page in paginator.paginate(Filters=filters)
            for reservation in page["Reservations"]
            for instance in reservation["Instances"]
        ]

    def terminate_instances(self, instance_ids: list[str]) -> list[dict[str, Any]]:
        response = self.conn.terminate_instances(InstanceIds=instance_ids)
        return response["TerminatingInstances"]

    # -- snapshots -------------------------------------------------------------------------
    def create_snapshot(self, volume_id: str, description: str, tags: dict[str, str]) -> dict[str, Any]:
        return self.conn.create_snapshot(
            VolumeId=volume_id,
            Description=description,
            TagSpecifications=tag_specifications(["snapshot"], tags),
        )

    def describe_snapshot(self, snapshot_id: str) -> dict[str, Any]:
        return self.conn.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]

    def find_snapshots(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        """Our own snapshots carrying all `tags` (CreateSnapshot takes no ClientToken)."""
        response = self.conn.describe_snapshots(OwnerIds=["self"], Filters=tag_filters(tags))
        return response["Snapshots"]

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.conn.delete_snapshot(SnapshotId=snapshot_id)

    def tag_resource(self, resource_id: str, tags: dict[str, str]) -> None:
        self.conn.create_tags(Resources=[resource_id], Tags=tag_list(tags))

    # -- fast snapshot restore -------------------------------------------------------------
    def enable_fast_snapshot_restores(self, snapshot_id: str, zones: list[str]) -> dict[str, Any]:
        """Returns Successful and Unsuccessful lists: a partial failure is not an exception."""
        return self.conn.enable_fast_snapshot_restores(AvailabilityZones=zones, SourceSnapshotIds=[snapshot_id])

    def disable_fast_snapshot_restores(self, snapshot_id: str, zones: list[str]) -> dict[str, Any]:
        return self.conn.disable_fast_snapshot_restores(AvailabilityZones=zones, SourceSnapshotIds=[snapshot_id])

    def describe_fast_snapshot_restores(self, snapshot_id: str) -> list[dict[str, Any]]:
        response = self.conn.describe_fast_snapshot_restores(
            Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}]
        )
        return response["FastSnapshotRestores"]

    def describe_all_fast_snapshot_restores(self) -> list[dict[str, Any]]:
        """Every FSR entry of the Region, any owner (the quota counts them all)."""
        paginator = self.conn.get_paginator("describe_fast_snapshot_restores")
        return [entry for page in paginator.paginate() for entry in page["FastSnapshotRestores"]]

    # -- launch templates ------------------------------------------------------------------
    def describe_launch_template_version(self, template_id: str, version: str) -> dict[str, Any]:
        response = self.conn.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=[version])
        return response["LaunchTemplateVersions"][0]

    def find_launch_template_versions(self, template_id: str, description: str) -> list[dict[str, Any]]:
        """Versions whose description is `description` (a rollout run marks its version with its run id)."""
        paginator = self.conn.get_paginator("describe_launch_template_versions")
        return [
            version
            for page in paginator.paginate(LaunchTemplateId=template_id)
            for version in page["LaunchTemplateVersions"]
            if version.get("VersionDescription") == description
        ]

    def create_launch_template_version(self, template_id: str, source_version: str, data: dict[str, Any],
                                       description: str) -> dict[str, Any]:
        response = self.conn.create_launch_template_version(
            LaunchTemplateId=template_id, SourceVersion=source_version, LaunchTemplateData=data,
            VersionDescription=description,
        )
        return response["LaunchTemplateVersion"]

    def describe_instances(self, instance_ids: list[str]) -> list[dict[str, Any]]:
        if not instance_ids:
            return []
        response = self.conn.describe_instances(InstanceIds=instance_ids)
        return [instance for reservation in response["Reservations"] for instance in reservation["Instances"]]

    # -- the janitor -----------------------------------------------------------------------
    def server_date(self) -> str | None:
        """The `Date` header of an EC2 answer: AWS's clock, so a skewed worker clock cannot age a resource."""
        response = self.conn.describe_availability_zones()
        return response["ResponseMetadata"].get("HTTPHeaders", {}).get("date")

    def find_volumes(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        """Volumes carrying all `tags`, in any state (`available` = detached)."""
        paginator = self.conn.get_paginator("describe_volumes")
        return [volume for page in paginator.paginate(Filters=tag_filters(tags)) for volume in page["Volumes"]]

    def delete_volume(self, volume_id: str) -> None:
        self.conn.delete_volume(VolumeId=volume_id)

    def find_fast_snapshot_restores(self, snapshot_ids: list[str]) -> list[dict[str, Any]]:
        """FSR entries (one per snapshot and AZ, any state) of `snapshot_ids`."""
        if not snapshot_ids:
            return []
        paginator = self.conn.get_paginator("describe_fast_snapshot_restores")
        filters = [{"Name": "snapshot-id", "Values": snapshot_ids}]
        return [entry for page in paginator.paginate(Filters=filters) for entry in page["FastSnapshotRestores"]]
