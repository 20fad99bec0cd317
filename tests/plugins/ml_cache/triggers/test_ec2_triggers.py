"""EC2 triggers: the builder reaching running, the snapshot completing, FSR reaching enabled."""

from __future__ import annotations

import pytest

from ml_cache.errors import deadline_passed
from ml_cache.triggers.ec2 import BuilderRunningTrigger, FastSnapshotRestoreEnabledTrigger, SnapshotCompletedTrigger

ZONES = ["ca-central-1a", "ca-central-1b"]


@pytest.mark.parametrize(("trigger_class", "kwargs", "waiter_name"), [
    (BuilderRunningTrigger, {"instance_id": "i-0123456789abcdef0", "region_name": "ca-central-1"}, "instance_running"),
    (SnapshotCompletedTrigger, {"snapshot_id": "snap-0123456789abcdef0"}, "snapshot_completed"),
    (FastSnapshotRestoreEnabledTrigger, {"snapshot_id": "snap-0123456789abcdef0"}, "fast_snapshot_restores_enabled"),
], ids=["builder_running", "snapshot_completed", "fsr_enabled"])
def test_serialize_round_trips_and_names_a_known_waiter(cloud_conn, trigger_tools, trigger_class, kwargs,
                                                        waiter_name) -> None:
    trigger = trigger_class(**kwargs, waiter_delay=5, waiter_max_attempts=7, aws_conn_id=cloud_conn.conn_id)
    trigger_tools.assert_round_trip(trigger, waiter_name)


def test_builder_running_succeeds_with_the_instance_id(cloud_conn, cloud_instance, trigger_tools) -> None:
    instance_id = cloud_instance()
    event = trigger_tools.first_event(BuilderRunningTrigger(
        instance_id=instance_id, waiter_delay=1, waiter_max_attempts=3, aws_conn_id=cloud_conn.conn_id))
    assert event == {"status": "success", "instance_id": instance_id}


def test_builder_running_fails_at_once_for_a_terminated_instance(cloud_conn, cloud_instance, trigger_tools) -> None:
    instance_id = cloud_instance()
    cloud_conn.client("ec2").terminate_instances(InstanceIds=[instance_id])
    event = trigger_tools.first_event(BuilderRunningTrigger(
        instance_id=instance_id, waiter_delay=1, waiter_max_attempts=30, aws_conn_id=cloud_conn.conn_id))
    assert (event["status"], event["instance_id"]) == ("error", instance_id)
    assert f"Builder {instance_id} did not reach running" in event["message"]
    assert "terminated" in event["message"] or "shutting-down" in event["message"]
    assert not deadline_passed(event)  # a terminal state, not a deadline


def _data_volume(cloud_conn, instance_id: str) -> str:
    instance = cloud_conn.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return next(m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvdb")


def test_snapshot_completed_waits_through_pending(cloud_conn, cloud_instance, trigger_tools) -> None:
    cloud_conn.set_faults(snapshot_seconds=1)
    volume_id = _data_volume(cloud_conn, cloud_instance())
    snapshot = cloud_conn.client("ec2").create_snapshot(VolumeId=volume_id)
    assert snapshot["State"] == "pending"  # a sandbox volume is copied: not completed at once
    event = trigger_tools.first_event(SnapshotCompletedTrigger(
        snapshot_id=snapshot["SnapshotId"], waiter_delay=1, waiter_max_attempts=10, aws_conn_id=cloud_conn.conn_id))
    assert event == {"status": "success", "snapshot_id": snapshot["SnapshotId"]}


def test_snapshot_in_error_is_a_failure_naming_it(cloud_conn, cloud_instance, trigger_tools) -> None:
    cloud_conn.set_faults(snapshot_error=True, snapshot_seconds=0.2)
    volume_id = _data_volume(cloud_conn, cloud_instance())
    snapshot_id = cloud_conn.client("ec2").create_snapshot(VolumeId=volume_id)["SnapshotId"]
    event = trigger_tools.first_event(SnapshotCompletedTrigger(
        snapshot_id=snapshot_id, waiter_delay=1, waiter_max_attempts=10, aws_conn_id=cloud_conn.conn_id))
    assert (event["status"], event["snapshot_id"]) == ("error", snapshot_id)
    assert f"Snapshot {snapshot_id} did not complete" in event["message"]


def _fsr_snapshot(cloud_conn) -> str:
    ec2 = cloud_conn.client("ec2")
    return ec2.create_snapshot(VolumeId=ec2.create_volume(AvailabilityZone=ZONES[0], Size=1)["VolumeId"])["SnapshotId"]


def test_fsr_enabled_waits_through_enabling_and_optimizing(cloud_conn, trigger_tools) -> None:
    cloud_conn.set_faults(fsr_enabling_seconds=0.5, fsr_optimizing_seconds=0.5)
    snapshot_id = _fsr_snapshot(cloud_conn)
    cloud_conn.client("ec2").enable_fast_snapshot_restores(AvailabilityZones=ZONES, SourceSnapshotIds=[snapshot_id])
    event = trigger_tools.first_event(FastSnapshotRestoreEnabledTrigger(
        snapshot_id=snapshot_id, waiter_delay=1, waiter_max_attempts=10, aws_conn_id=cloud_conn.conn_id))
    assert event == {"status": "success", "snapshot_id": snapshot_id}


def test_fsr_disabled_while_waiting_is_a_failure_naming_the_snapshot(cloud_conn, trigger_tools) -> None:
    cloud_conn.set_faults(fsr_enabling_seconds=30, fsr_disabling_seconds=5)
    snapshot_id = _fsr_snapshot(cloud_conn)
    ec2 = cloud_conn.client("ec2")
    ec2.enable_fast_snapshot_restores(AvailabilityZones=ZONES, SourceSnapshotIds=[snapshot_id])
    ec2.disable_fast_snapshot_restores(AvailabilityZones=ZONES[1:], SourceSnapshotIds=[snapshot_id])
    event = trigger_tools.first_event(FastSnapshotRestoreEnabledTrigger(
        snapshot_id=snapshot_id, waiter_delay=1, waiter_max_attempts=10, aws_conn_id=cloud_conn.conn_id))
    assert (event["status"], event["snapshot_id"]) == ("error", snapshot_id)
    assert f"Fast Snapshot Restore for {snapshot_id} did not reach enabled" in event["message"]
    assert "disabling" in event["message"]


def test_fsr_unsuccessful_in_every_zone_never_succeeds(cloud_conn, trigger_tools) -> None:
    """No FSR entry at all (every AZ Unsuccessful) is not `enabled`: the wait runs out of attempts."""
    cloud_conn.set_faults(fsr_unsuccessful_azs=ZONES)
    snapshot_id = _fsr_snapshot(cloud_conn)
    answer = cloud_conn.client("ec2").enable_fast_snapshot_restores(AvailabilityZones=ZONES,
                                                                    SourceSnapshotIds=[snapshot_id])
    assert answer["Successful"] == []
    event = trigger_tools.first_event(FastSnapshotRestoreEnabledTrigger(
        snapshot_id=snapshot_id, waiter_delay=1, waiter_max_attempts=2, aws_conn_id=cloud_conn.conn_id))
    assert (event["status"], event["snapshot_id"]) == ("error", snapshot_id)
    assert "max attempts" in event["message"]
