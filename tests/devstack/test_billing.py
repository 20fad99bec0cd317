"""`GET /_devstack/billing`: what AWS would bill on the simulated clock. FSR is billed per minute with
a 1-hour minimum per enable and AZ (https://aws.amazon.com/ebs/pricing/), instances from launch to
termination; the FSR quota (5 per Region) holds on the simulated clock too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devstack.moto_ext.ec2.fsr import FsrRecord


def _record(enabled_minutes: float | None) -> FsrRecord:
    start = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
    record = FsrRecord("snap-1", "us-west-2a", "123456789012", start, start, start)
    if enabled_minutes is not None:
        record.disabling_time = start + timedelta(minutes=enabled_minutes)
        record.disabled_time = record.disabling_time
    return record


@pytest.mark.parametrize(("minutes", "billed"), [(0, 60), (10, 60), (60, 60), (60.01, 61), (90.5, 91)])
def test_fsr_is_billed_per_started_minute_with_a_one_hour_minimum(minutes: float, billed: int) -> None:
    record = _record(minutes)
    assert record.billed_minutes(record.enabling_time + timedelta(days=30)) == billed


def test_fsr_still_enabled_is_billed_until_now() -> None:
    record = _record(None)
    assert record.billed_minutes(record.enabling_time + timedelta(hours=3)) == 180


def _bill(cloud, helpers) -> dict:
    status, body = helpers.devstack_call(cloud, "GET", "/_devstack/billing")
    assert status == 200, body
    return body


def test_billing_counts_fsr_az_hours_per_enable(cloud, ec2, helpers, set_faults, advance_clock) -> None:
    set_faults(fsr_enabling_seconds=0, fsr_optimizing_seconds=0, fsr_disabling_seconds=0)
    snapshot_id = ec2.create_snapshot(VolumeId=ec2.create_volume(AvailabilityZone="us-west-2a", Size=1)["VolumeId"])[
        "SnapshotId"]
    try:
        ec2.enable_fast_snapshot_restores(AvailabilityZones=["us-west-2a", "us-west-2b"],
                                          SourceSnapshotIds=[snapshot_id])
        advance_clock(10 * 60)
        ec2.disable_fast_snapshot_restores(AvailabilityZones=["us-west-2a"], SourceSnapshotIds=[snapshot_id])
        advance_clock(80 * 60)
        ec2.enable_fast_snapshot_restores(AvailabilityZones=["us-west-2a"], SourceSnapshotIds=[snapshot_id])
        advance_clock(5 * 60 - 30)  # real seconds also pass: stay clear of a minute's edge
        bill = _bill(cloud, helpers)
        mine = [(e["availability_zone"], e["state"], e["billed_minutes"]) for e in bill["fsr"]
                if e["snapshot_id"] == snapshot_id]
        # a: 10 min enabled -> 1 h minimum; b: still enabled after 94.5 min -> 95; a again: 4.5 min -> 1 h
        assert sorted(mine) == [("us-west-2a", "disabled", 60), ("us-west-2a", "enabled", 60),
                                ("us-west-2b", "enabled", 95)]
    finally:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    advance_clock(3600)
    after = {(e["availability_zone"], e["billed_minutes"]) for e in _bill(cloud, helpers)["fsr"]
             if e["snapshot_id"] == snapshot_id}
    assert after == {("us-west-2a", 60), ("us-west-2b", 95)}, "deleting the snapshot stops the FSR bill"
    assert _bill(cloud, helpers)["totals"]["fsr_az_hours"] >= round((60 + 60 + 95) / 60, 4)


def test_billing_counts_instance_hours_until_termination(cloud, ec2, launch, helpers, advance_clock) -> None:
    instance_id = launch(instance_type="m6i.2xlarge")
    advance_clock(2 * 3600)
    ec2.terminate_instances(InstanceIds=[instance_id])
    advance_clock(5 * 3600)
    entry = next(e for e in _bill(cloud, helpers)["instances"] if e["instance_id"] == instance_id)
    assert entry["instance_type"] == "m6i.2xlarge" and entry["state"] == "terminated"
    assert 2.0 <= entry["running_hours"] < 2.05
    assert entry["terminated_time"] is not None


def test_fsr_quota_holds_on_the_simulated_clock(aws, set_faults, advance_clock) -> None:
    """Five FSR snapshots per Region; a disabled one frees its slot once `disabled` on the simulated clock."""
    ec2 = aws("ec2", "ap-south-1")
    set_faults(fsr_disabling_seconds=3600)
    snapshots = [ec2.create_snapshot(VolumeId=ec2.create_volume(AvailabilityZone="ap-south-1a", Size=1)[
        "VolumeId"])["SnapshotId"] for _ in range(6)]
    try:
        for snapshot_id in snapshots[:5]:
            assert ec2.enable_fast_snapshot_restores(
                AvailabilityZones=["ap-south-1a"], SourceSnapshotIds=[snapshot_id])["Unsuccessful"] == []
        ec2.disable_fast_snapshot_restores(AvailabilityZones=["ap-south-1a"], SourceSnapshotIds=[snapshots[0]])
        refused = ec2.enable_fast_snapshot_restores(AvailabilityZones=["ap-south-1a"],
                                                    SourceSnapshotIds=[snapshots[5]])["Unsuccessful"]
        error = refused[0]["FastSnapshotRestoreStateErrors"][0]["Error"]
        assert error["Code"] == "FastSnapshotRestoreLimitExceeded" and "at most 5" in error["Message"]
        advance_clock(3600)
        assert ec2.enable_fast_snapshot_restores(
            AvailabilityZones=["ap-south-1a"], SourceSnapshotIds=[snapshots[5]])["Unsuccessful"] == []
    finally:
        for snapshot_id in snapshots:
            ec2.delete_snapshot(SnapshotId=snapshot_id)
