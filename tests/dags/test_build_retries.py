"""Retries on the local cloud with the production retry settings: retried tasks find what their first try
created (by tag, by ClientToken: faults 24, 5), failures no retry can cure fail at the first try (fault 7),
transient ones keep their retries, and a wait past its deadline is not retried."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ml_cache.errors import PermanentFailure
from ml_cache.operators.snapshot import CreateCacheSnapshotOperator
from ml_cache.tags import client_token, run_tags
from tests.dags.conftest import assert_failed_with, run_dag

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


def _launch_operator(cloud, volume_size_gib: int = 1):
    from ml_cache.builder_instance import BuilderLaunch
    from ml_cache.operators.builder import LaunchBuilderOperator

    ssm = cloud.client("ssm")
    ami = ssm.get_parameter(Name="/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/"
                                 "recommended/image_id")["Parameter"]["Value"]
    subnet = cloud.client("ec2").describe_subnets()["Subnets"][0]["SubnetId"]  # a builder always names one
    launch = BuilderLaunch(pipeline="ml-container-cache", instance_types=["c6i.2xlarge"], subnet_ids=[subnet],
                           security_group_ids=[], instance_profile="ml-container-cache-builder", kms_key_id=None,
                           volume_iops=3000, volume_throughput_mibps=125, build_seconds=600)
    return LaunchBuilderOperator(task_id="launch_builder", launch=launch, image_id=ami,
                                 volume_size_gib=volume_size_gib)


def _context(run_id: str = RUN_ID, max_tries: int = 2) -> dict:
    """The task instance as the Task SDK gives it: a retry keeps max_tries, a clear raises it."""
    return {"ti": SimpleNamespace(run_id=run_id, dag_id="ml_container_cache_build", task_id="launch_builder",
                                  map_index=-1, max_tries=max_tries, task=SimpleNamespace(retries=2))}


def _instance(cloud, instance_id: str) -> dict:
    return cloud.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def test_a_retried_launch_gets_the_same_builder(cloud):
    operator, context = _launch_operator(cloud), _context()
    first = operator.execute(context)
    second = operator.execute(context)  # the worker died after RunInstances: the retry
    assert second["instance_id"] == first["instance_id"]
    assert [i["InstanceId"] for i in cloud.live_instances()] == [first["instance_id"]]
    subnet = operator.launch.subnet_ids[0]
    assert _instance(cloud, first["instance_id"])["ClientToken"] == client_token(context["ti"], "c6i.2xlarge", subnet)


def test_a_retry_whose_request_drifted_is_an_idempotent_parameter_mismatch_at_once(cloud):
    context = _context(run_id="manual__2026-11-29T04:00:00+00:00")
    first = _launch_operator(cloud).execute(context)
    cloud.client("ec2").terminate_instances(InstanceIds=[first["instance_id"]])  # no live builder to reuse by tag
    before = cloud.instance_count()
    with pytest.raises(PermanentFailure, match="IdempotentParameterMismatch"):
        _launch_operator(cloud, volume_size_gib=2).execute(context)  # same token, another request
    assert cloud.instance_count() == before


@pytest.mark.parametrize("code", ["UnauthorizedOperation", "InvalidParameterValue", "InstanceLimitExceeded"])
def test_a_permanent_run_instances_error_fails_at_the_first_try_with_nothing_launched(cloud, build_dag, capfd, code):
    cloud.set_faults(run_instances_errors=[code])  # once: a retry would succeed
    before = cloud.instance_count()
    run, states = run_dag(build_dag)
    assert_failed_with(run, states, "launch_builder", rf"PermanentFailure: RunInstances failed .*: {code}", capfd,
                       retried=False)
    assert cloud.instance_count() == before and cloud.live_instances() == []
    assert cloud.parameter() == cloud.previous_snapshot


def _agent_deadline(cloud, seconds: int) -> None:
    cloud.config_path.write_text(cloud.config_path.read_text().replace("agent_online_seconds: 20",
                                                                       f"agent_online_seconds: {seconds}"))
    cloud.set_faults(agent_offline=True)


def test_a_wait_past_its_deadline_fails_at_the_first_try_and_terminates_the_builder(cloud, build_dag, capfd):
    _agent_deadline(cloud, 3)
    run, states = run_dag(build_dag)
    assert_failed_with(run, states, "wait_for_builder", r"DeadlinePassed: Deadline passed: .*not Online within 3 s",
                       capfd, retried=False)
    assert states["terminate_builder"] == "success"
    assert cloud.live_instances() == []
    assert cloud.parameter() == cloud.previous_snapshot


def test_a_transient_run_instances_error_keeps_its_retries(cloud, build_dag, capfd):
    # not a botocore-retried code: the task itself fails and Airflow retries it
    cloud.set_faults(run_instances_errors=["InsufficientFreeAddressesInSubnet"])
    _agent_deadline(cloud, 1)  # the run ends at the agent wait, not with a build
    run, states = run_dag(build_dag)
    (launch,) = [ti for ti in run.get_task_instances() if ti.task_id == "launch_builder"]
    assert (states["launch_builder"], launch.try_number) == ("success", 2)
    assert "InsufficientFreeAddressesInSubnet" in capfd.readouterr().out
    assert states["wait_for_builder"] == "failed" and cloud.live_instances() == []


def test_a_builder_gone_before_running_fails_the_wait_at_once_with_its_state_reason(cloud):
    import asyncio

    from ml_cache.operators.builder import WaitForBuilderOperator
    from ml_cache.triggers.ec2 import BuilderRunningTrigger

    builder = _launch_operator(cloud).execute(_context(run_id="manual__2026-11-29T05:00:00+00:00"))
    cloud.client("ec2").terminate_instances(InstanceIds=[builder["instance_id"]])

    async def first_event() -> dict:
        trigger = BuilderRunningTrigger(instance_id=builder["instance_id"], waiter_delay=1, waiter_max_attempts=5)
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    wait = WaitForBuilderOperator(task_id="wait_for_builder", builder=builder, timeout_seconds=5, poll_seconds=1)
    with pytest.raises(PermanentFailure, match=rf"Builder {builder['instance_id']} never ran: .*terminated"):
        wait.resume_execution("running", {"event": asyncio.run(first_event())}, {})
