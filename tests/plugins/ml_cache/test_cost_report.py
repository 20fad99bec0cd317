"""gather_run_cost on the local cloud (moto's EBS direct APIs and instances, the extension's FSR)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from devstack import clock
from ml_cache.cost import GIB, run_cost_report
from ml_cache.cost_report import gather_run_cost
from ml_cache.hooks.ebs import CacheEbsHook
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.settings.models import Prices
from ml_cache.tags import tag_specifications
from tests.plugins.ml_cache.cloud_snapshots import ebs_direct_snapshot

ZONES = ["ca-central-1a", "ca-central-1b", "ca-central-1d"]
TAGS = {"ml-cache:pipeline": "cost-report-test", "ml-cache:run-id": "cost-report-test"}


def test_gather_run_cost_reads_builder_sizes_and_fsr_and_carries_earlier_snapshots(cloud_conn) -> None:
    cloud_conn.set_faults(fsr_enabling_seconds=0, fsr_optimizing_seconds=0, fsr_disabling_seconds=0)
    ec2, ebs = cloud_conn.client("ec2"), cloud_conn.client("ebs")
    ec2_hook, ebs_hook = CacheEc2Hook(aws_conn_id=cloud_conn.conn_id), CacheEbsHook(aws_conn_id=cloud_conn.conn_id)
    two_back = ebs_direct_snapshot(ebs, {0: b"x" * 64})
    previous = ebs_direct_snapshot(ebs, {0: b"a" * 64, 1: b"b" * 64, 2: b"c" * 64})
    current = ebs_direct_snapshot(ebs, {0: b"a" * 64, 1: b"B" * 64, 2: b"c" * 64})
    ec2_hook.enable_fast_snapshot_restores(two_back, ZONES[:1])
    ec2_hook.disable_fast_snapshot_restores(two_back, ZONES[:1])  # retired long ago
    ec2_hook.enable_fast_snapshot_restores(previous, ZONES[:2])
    ec2_hook.disable_fast_snapshot_restores(previous, ZONES[1:2])  # one AZ retired, one still billing
    ec2_hook.enable_fast_snapshot_restores(current, ZONES)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    builder = ec2_hook.run_instance(ImageId=image, InstanceType="c6i.2xlarge",
                                    TagSpecifications=tag_specifications(["instance"], TAGS))["InstanceId"]
    ec2_hook.terminate_instances([builder])
    start = clock.now()  # the local cloud's clock (in this process), which a test may have advanced
    previous_cost = run_cost_report(
        Prices(), now=start + timedelta(hours=4), instance_id="i-0", instance_type="c6i.2xlarge", builder_hours=1.0,
        snapshot_id=previous, parent_snapshot_id=None, full_bytes=40 * GIB, incremental_bytes=40 * GIB,
        fsr_zones=ZONES[:2], fsr_az_hours_so_far=2.0, previous_cost=None, carried_fsr_az_hours=0.0,
        fsr_accruing_snapshot_ids=[previous, two_back])
    try:
        report = gather_run_cost(
            ec2_hook, ebs_hook, prices=Prices(), builder_instance_id=builder, snapshot_id=current,
            parent_snapshot_id=previous, fsr_zones=ZONES,
            previous_metadata={"snapshot_id": previous, "cost": previous_cost}, now=start + timedelta(hours=10))
    finally:
        for snapshot_id, zones in ((previous, ZONES[:1]), (current, ZONES)):
            ec2_hook.disable_fast_snapshot_restores(snapshot_id, zones)

    block_size = ebs.list_snapshot_blocks(SnapshotId=current)["BlockSize"]
    assert report["builder"] == {"instance_id": builder, "instance_type": "c6i.2xlarge", "hours": round(1 / 60, 4),
                                 "usd": round(0.34 / 60, 4)}  # terminated at once: EC2's one-minute minimum
    assert report["snapshot"]["full_bytes"] == 3 * block_size
    assert report["snapshot"]["incremental_bytes"] == block_size  # only block 1 changed
    assert report["fsr"]["availability_zones"] == ZONES
    assert 3 * 10 < report["fsr"]["az_hours_so_far"] <= 3 * 10 + 3 / 60 + 1e-9  # enabled just before `start`
    total = report["running_total"]
    assert total["runs"] == 2
    assert total["since"] == previous_cost["as_of"]
    # the previous snapshot's live AZ billed 6 h since its report; its retired AZ and two_back nothing more
    assert total["fsr_az_hours"] == pytest.approx(2.0 + report["fsr"]["az_hours_so_far"] + 6.0)
    assert total["fsr_accruing_snapshot_ids"] == sorted([current, previous])


def test_gather_run_cost_without_a_parent_counts_the_whole_snapshot_as_new(cloud_conn) -> None:
    ec2, ebs = cloud_conn.client("ec2"), cloud_conn.client("ebs")
    ec2_hook, ebs_hook = CacheEc2Hook(aws_conn_id=cloud_conn.conn_id), CacheEbsHook(aws_conn_id=cloud_conn.conn_id)
    current = ebs_direct_snapshot(ebs, {0: b"a" * 64, 5: b"b" * 64})
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    builder = ec2_hook.run_instance(ImageId=image, InstanceType="g9.unknown",
                                    TagSpecifications=tag_specifications(["instance"], TAGS))["InstanceId"]
    try:
        report = gather_run_cost(ec2_hook, ebs_hook, prices=Prices(), builder_instance_id=builder,
                                 snapshot_id=current, parent_snapshot_id=None, fsr_zones=[],
                                 previous_metadata={}, now=clock.now() + timedelta(hours=2))
    finally:
        ec2_hook.terminate_instances([builder])

    assert report["snapshot"]["incremental_bytes"] == report["snapshot"]["full_bytes"] > 0
    assert report["builder"]["hours"] == pytest.approx(2.0, abs=0.01)  # still running: up to `now`
    assert report["builder"]["usd"] is None
    assert report["unpriced"] == ["builder instance type g9.unknown has no price in prices.instance_per_hour"]
    assert report["fsr"]["az_hours_so_far"] == 0.0
    assert report["running_total"]["runs"] == 1
