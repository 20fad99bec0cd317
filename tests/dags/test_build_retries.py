"""Retried tasks find what their first try created, by tag, on the local cloud (fault 24, 5)."""

from __future__ import annotations

from types import SimpleNamespace

from ml_cache.operators.snapshot import CreateCacheSnapshotOperator
from ml_cache.tags import run_tags

RUN_ID = "manual__2026-11-29T03:00:00+00:00"


def _completed_snapshot(ec2, volume_id: str, tags: dict[str, str]) -> str:
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    snapshot = ec2.create_snapshot(VolumeId=volume_id, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": tag_list}])["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snapshot], WaiterConfig={"Delay": 1})
    return snapshot


def test_a_retried_create_snapshot_reuses_the_runs_snapshot(cloud):
    ec2 = cloud.client("ec2")
    volume = ec2.create_volume(AvailabilityZone="us-west-2a", Size=1)["VolumeId"]
    earlier = _completed_snapshot(ec2, volume, run_tags("ml-container-cache", RUN_ID, role="cache"))
    _completed_snapshot(ec2, volume, run_tags("ml-container-cache", "another-run", role="cache"))
    before = len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])

    operator = CreateCacheSnapshotOperator(task_id="create_snapshot", pipeline="ml-container-cache",
                                           volume_id=volume, name="ml-container-cache", description="cache",
                                           timeout_seconds=60, poll_seconds=1)
    assert operator.execute({"ti": SimpleNamespace(run_id=RUN_ID)}) == earlier
    assert len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) == before  # no duplicate


def test_a_retried_launch_gets_the_same_builder(cloud):
    from ml_cache.builder_instance import BuilderLaunch
    from ml_cache.operators.builder import LaunchBuilderOperator

    ssm = cloud.client("ssm")
    ami = ssm.get_parameter(Name="/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/"
                                 "recommended/image_id")["Parameter"]["Value"]
    subnet = cloud.client("ec2").describe_subnets()["Subnets"][0]["SubnetId"]  # a builder always names one
    launch = BuilderLaunch(pipeline="ml-container-cache", instance_types=["c6i.2xlarge"], subnet_ids=[subnet],
                           security_group_ids=[], instance_profile="ml-container-cache-builder", kms_key_id=None,
                           volume_iops=3000, volume_throughput_mibps=125, build_seconds=600)
    operator = LaunchBuilderOperator(task_id="launch_builder", launch=launch, image_id=ami, volume_size_gib=1)
    context = {"ti": SimpleNamespace(run_id=RUN_ID, dag_id="ml_container_cache_build", task_id="launch_builder",
                                     map_index=-1)}
    first = operator.execute(context)
    second = operator.execute(context)  # the worker died after RunInstances: the retry
    assert second["instance_id"] == first["instance_id"]
    assert [i["InstanceId"] for i in cloud.live_instances()] == [first["instance_id"]]
