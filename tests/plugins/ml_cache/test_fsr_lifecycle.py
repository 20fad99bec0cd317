"""FSR's limits checked before enabling (the Region's quota counts every owner's snapshots, the
pipeline's limit only ours), and retirement, on the local cloud (it enforces AWS's 5 per Region)."""

from __future__ import annotations

import uuid

import pytest
import requests

from ml_cache.fsr_lifecycle import QUOTA_FSR_STATES, FsrQuotaExceeded, check_fsr_quota, fsr_snapshots, retire_fsr
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.settings.models import LifecycleConfig
from tests.plugins.ml_cache.cloud_snapshots import ZONES, cache_snapshot, fsr_states


@pytest.fixture
def ec2(cloud_conn):
    """The hook, an hour later on the local cloud's clock: FSR an earlier test left `disabling` is off."""
    requests.post(f"{cloud_conn.endpoint}/_devstack/clock", json={"advance_seconds": 3600}, timeout=10)
    cloud_conn.set_faults(fsr_enabling_seconds=0, fsr_optimizing_seconds=0, fsr_disabling_seconds=0)
    entries = cloud_conn.client("ec2").describe_fast_snapshot_restores()["FastSnapshotRestores"]
    assert {e["State"] for e in entries} <= {"disabled"}
    return CacheEc2Hook(aws_conn_id=cloud_conn.conn_id)


def test_the_pipeline_limit_counts_only_its_own_snapshots(cloud_conn, ec2):
    pipeline = f"fsr-{uuid.uuid4().hex[:8]}"
    live, new = cache_snapshot(cloud_conn, pipeline), cache_snapshot(cloud_conn, pipeline, fsr=False)
    cache_snapshot(cloud_conn, "another-pipeline")
    check_fsr_quota(ec2, snapshot_id=new, pipeline=pipeline, lifecycle=LifecycleConfig())  # live + new = 2
    with pytest.raises(FsrQuotaExceeded, match=rf"pipeline {pipeline} already has Fast Snapshot Restore on 1 "
                                               rf"snapshot\(s\) \({live} in {'/'.join(ZONES)}\); "
                                               r"lifecycle.fsr_max_snapshots is 1"):
        check_fsr_quota(ec2, snapshot_id=new, pipeline=pipeline, lifecycle=LifecycleConfig(fsr_max_snapshots=1))
    assert fsr_states(cloud_conn, new) == {}  # nothing was enabled


def test_the_region_quota_counts_every_owners_snapshots_and_fails_before_aws_would(cloud_conn, ec2):
    """A snapshot holds its slot until `disabled` (the local cloud models it so): `disabling` counts."""
    others = [cache_snapshot(cloud_conn, None) for _ in range(5)]  # not ours: untagged
    new = cache_snapshot(cloud_conn, "ours", fsr=False)
    with pytest.raises(FsrQuotaExceeded, match=r"5 snapshot\(s\) in ca-central-1 already have it .* the quota is 5"):
        check_fsr_quota(ec2, snapshot_id=new, pipeline="ours", lifecycle=LifecycleConfig())
    # the rule the guard anticipates: AWS answers Unsuccessful FastSnapshotRestoreLimitExceeded per AZ
    answer = cloud_conn.client("ec2").enable_fast_snapshot_restores(AvailabilityZones=ZONES, SourceSnapshotIds=[new])
    codes = {e["Error"]["Code"] for u in answer["Unsuccessful"] for e in u["FastSnapshotRestoreStateErrors"]}
    assert codes == {"FastSnapshotRestoreLimitExceeded"}
    retire_fsr(ec2, others[0])
    check_fsr_quota(ec2, snapshot_id=new, pipeline="ours", lifecycle=LifecycleConfig())  # a slot is free again


def test_a_snapshot_holds_its_quota_slot_until_disabled():
    entries = [{"SnapshotId": "snap-a", "AvailabilityZone": "z", "State": "disabling"},
               {"SnapshotId": "snap-b", "AvailabilityZone": "z", "State": "disabled"}]
    assert fsr_snapshots(entries, QUOTA_FSR_STATES) == {"snap-a": ["z"]}
    assert fsr_snapshots(entries) == {}  # not billed any more


def test_a_retry_after_enabling_does_not_count_its_own_snapshot(cloud_conn, ec2):
    pipeline = f"fsr-{uuid.uuid4().hex[:8]}"
    new = cache_snapshot(cloud_conn, pipeline)
    check_fsr_quota(ec2, snapshot_id=new, pipeline=pipeline, lifecycle=LifecycleConfig(fsr_max_snapshots=1))


def test_retire_disables_fsr_on_that_snapshot_only(cloud_conn, ec2):
    pipeline = f"retire-{uuid.uuid4().hex[:8]}"
    new, old = cache_snapshot(cloud_conn, pipeline), cache_snapshot(cloud_conn, pipeline)
    assert retire_fsr(ec2, old) == ZONES
    assert fsr_states(cloud_conn, old) == dict.fromkeys(ZONES, "disabled")
    assert fsr_states(cloud_conn, new) == dict.fromkeys(ZONES, "enabled")
    assert retire_fsr(ec2, old) == []  # nothing left to retire
