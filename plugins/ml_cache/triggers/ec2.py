"""Waits on the builder instance, the cache snapshot and its Fast Snapshot Restore state."""

from __future__ import annotations

from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger

from ml_cache.hooks.ec2 import CacheEc2Hook


class BuilderRunningTrigger(AwsBaseWaiterTrigger):
    """Until the instance is `running`; fails at once on shutting-down/terminated/stopping (botocore waiter)."""

    aws_hook_class = CacheEc2Hook

    def __init__(self, *, instance_id: str, waiter_delay: int, waiter_max_attempts: int, **kwargs) -> None:
        super().__init__(
            serialized_fields={"instance_id": instance_id},
            waiter_name="instance_running",
            waiter_args={"InstanceIds": [instance_id]},
            failure_message=f"Builder {instance_id} did not reach running",
            status_message=f"Builder {instance_id} state",
            status_queries=["Reservations[].Instances[].State.Name", "Reservations[].Instances[].StateReason"],
            return_key="instance_id",
            return_value=instance_id,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            **kwargs,
        )


class SnapshotCompletedTrigger(AwsBaseWaiterTrigger):
    """Until the snapshot is `completed`; `error` is a failure (botocore `snapshot_completed`, our deadline)."""

    aws_hook_class = CacheEc2Hook

    def __init__(self, *, snapshot_id: str, waiter_delay: int, waiter_max_attempts: int, **kwargs) -> None:
        super().__init__(
            serialized_fields={"snapshot_id": snapshot_id},
            waiter_name="snapshot_completed",
            waiter_args={"SnapshotIds": [snapshot_id]},
            failure_message=f"Snapshot {snapshot_id} did not complete",
            status_message=f"Snapshot {snapshot_id}",
            status_queries=["Snapshots[].State", "Snapshots[].Progress", "Snapshots[].StateMessage"],
            return_key="snapshot_id",
            return_value=snapshot_id,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            **kwargs,
        )


class FastSnapshotRestoreEnabledTrigger(AwsBaseWaiterTrigger):
    """Until FSR is `enabled` for every AZ entry of the snapshot (our JSON waiter; botocore has none)."""

    aws_hook_class = CacheEc2Hook

    def __init__(self, *, snapshot_id: str, waiter_delay: int, waiter_max_attempts: int, **kwargs) -> None:
        super().__init__(
            serialized_fields={"snapshot_id": snapshot_id},
            waiter_name="fast_snapshot_restores_enabled",
            waiter_args={"Filters": [{"Name": "snapshot-id", "Values": [snapshot_id]}]},
            failure_message=f"Fast Snapshot Restore for {snapshot_id} did not reach enabled",
            status_message=f"Fast Snapshot Restore for {snapshot_id}",
            status_queries=["FastSnapshotRestores[].[AvailabilityZone, State]"],
            return_key="snapshot_id",
            return_value=snapshot_id,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            **kwargs,
        )
