"""CacheEc2Hook: instances, snapshots and launch templates on moto; Fast Snapshot Restore on the local cloud."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.tags import tag_filters, tag_specifications


def _image_id(aws) -> str:
    return aws.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]


def _launch(hook: CacheEc2Hook, aws, tags: dict[str, str]) -> dict:
    return hook.run_instance(ImageId=_image_id(aws), InstanceType="c6i.2xlarge",
                             TagSpecifications=tag_specifications(["instance"], tags))


def _volume(aws, zone: str) -> str:
    return aws.client("ec2").create_volume(AvailabilityZone=zone, Size=1)["VolumeId"]


def test_tag_filters_match_every_tag_sorted() -> None:
    assert tag_filters({"b": "2", "a": "1"}) == [{"Name": "tag:a", "Values": ["1"]}, {"Name": "tag:b", "Values": ["2"]}]


def test_tag_specifications_tag_each_resource_type() -> None:
    specs = tag_specifications(["instance", "volume"], {"b": "2", "a": "1"})
    tags = [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]
    assert specs == [{"ResourceType": "instance", "Tags": tags}, {"ResourceType": "volume", "Tags": tags}]


def test_run_instance_returns_the_one_instance_tagged_at_launch(moto_conn, run_tags) -> None:
    hook = CacheEc2Hook(aws_conn_id=moto_conn.conn_id)
    instance = _launch(hook, moto_conn, run_tags)
    try:
        assert instance["InstanceId"].startswith("i-")
        assert {t["Key"]: t["Value"] for t in instance["Tags"]} == run_tags
        described = hook.describe_instance(instance["InstanceId"])
        assert described["InstanceId"] == instance["InstanceId"]
        assert described["InstanceType"] == "c6i.2xlarge"
        assert described["State"]["Name"] == "running"
    finally:
        hook.terminate_instances([instance["InstanceId"]])


def test_find_instances_filters_by_every_tag_and_by_state(moto_conn, run_tags) -> None:
    hook = CacheEc2Hook(aws_conn_id=moto_conn.conn_id)
    live = _launch(hook, moto_conn, run_tags)["InstanceId"]
    gone = _launch(hook, moto_conn, run_tags)["InstanceId"]
    other_run = _launch(hook, moto_conn, {**run_tags, "ml-cache:run-id": "another-run"})["InstanceId"]
    try:
        terminating = hook.terminate_instances([gone])
        assert [(i["InstanceId"], i["CurrentState"]["Name"]) for i in terminating] in (
            [(gone, "shutting-down")], [(gone, "terminated")])
        assert [i["InstanceId"] for i in hook.find_instances(run_tags)] == [live]
        assert [i["InstanceId"] for i in hook.find_instances(run_tags, states=["terminated"])] == [gone]
        assert [i["InstanceId"] for i in hook.find_instances({"ml-cache:run-id": "another-run"})] == [other_run]
        assert hook.find_instances({"ml-cache:run-id": f"nothing-{uuid.uuid4()}"}) == []
    finally:
        hook.terminate_instances([live, other_run])


def test_describe_instances_of_no_ids_is_empty_and_of_ids_lists_them(moto_conn, run_tags) -> None:
    hook = CacheEc2Hook(aws_conn_id=moto_conn.conn_id)
    assert hook.describe_instances([]) == []  # an empty InstanceIds would list every instance
    ids = [_launch(hook, moto_conn, run_tags)["InstanceId"] for _ in range(2)]
    try:
        assert sorted(i["InstanceId"] for i in hook.describe_instances(ids)) == sorted(ids)
    finally:
        hook.terminate_instances(ids)


def test_describe_instance_of_an_unknown_id_raises(moto_conn) -> None:
    with pytest.raises(ClientError, match=r"InvalidInstanceID\.NotFound"):
        CacheEc2Hook(aws_conn_id=moto_conn.conn_id).describe_instance("i-0123456789abcdef0")


def test_snapshot_created_tagged_found_by_tags_and_deleted(moto_conn, run_tags) -> None:
    hook = CacheEc2Hook(aws_conn_id=moto_conn.conn_id)
    volume_id = _volume(moto_conn, "us-east-2a")
    created = hook.create_snapshot(volume_id, "ml cache test", run_tags)
    snapshot_id = created["SnapshotId"]
    assert (created["VolumeId"], created["Description"]) == (volume_id, "ml cache test")
    assert {t["Key"]: t["Value"] for t in created["Tags"]} == run_tags
    assert hook.describe_snapshot(snapshot_id)["State"] == "completed"  # moto: completed at once
    unrelated = hook.create_snapshot(volume_id, "other run", {**run_tags, "ml-cache:run-id": "other"})
    assert [s["SnapshotId"] for s in hook.find_snapshots(run_tags)] == [snapshot_id]
    hook.delete_snapshot(snapshot_id)
    hook.delete_snapshot(unrelated["SnapshotId"])
    assert hook.find_snapshots(run_tags) == []
    with pytest.raises(ClientError, match=r"InvalidSnapshot\.NotFound"):
        hook.describe_snapshot(snapshot_id)


def test_launch_template_versions_found_by_description(moto_conn) -> None:
    hook = CacheEc2Hook(aws_conn_id=moto_conn.conn_id)
    template_id = moto_conn.client("ec2").create_launch_template(
        LaunchTemplateName=f"hooks-{uuid.uuid4()}", LaunchTemplateData={"InstanceType": "g5.xlarge"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    created = hook.create_launch_template_version(template_id, "1", {"InstanceType": "g5.2xlarge"}, "run-a")
    hook.create_launch_template_version(template_id, "1", {"InstanceType": "g5.4xlarge"}, "run-b")
    assert (created["LaunchTemplateId"], created["VersionNumber"]) == (template_id, 2)
    assert [v["VersionNumber"] for v in hook.find_launch_template_versions(template_id, "run-a")] == [2]
    assert hook.find_launch_template_versions(template_id, "run-c") == []
    described = hook.describe_launch_template_version(template_id, "2")
    assert described["LaunchTemplateData"]["InstanceType"] == "g5.2xlarge"
    assert described["VersionDescription"] == "run-a"


def _fsr_states(hook: CacheEc2Hook, snapshot_id: str) -> dict[str, str]:
    return {i["AvailabilityZone"]: i["State"] for i in hook.describe_fast_snapshot_restores(snapshot_id)}


def test_fast_snapshot_restores_enable_describe_disable(cloud_conn, run_tags) -> None:
    cloud_conn.set_faults(fsr_enabling_seconds=0, fsr_optimizing_seconds=0, fsr_disabling_seconds=5)
    hook = CacheEc2Hook(aws_conn_id=cloud_conn.conn_id)
    snapshot_id = hook.create_snapshot(_volume(cloud_conn, "ca-central-1a"), "fsr", run_tags)["SnapshotId"]
    zones = ["ca-central-1a", "ca-central-1b"]
    answer = hook.enable_fast_snapshot_restores(snapshot_id, zones)
    assert answer["Unsuccessful"] == []
    assert sorted(i["AvailabilityZone"] for i in answer["Successful"]) == zones
    assert _fsr_states(hook, snapshot_id) == dict.fromkeys(zones, "enabled")
    disabled = hook.disable_fast_snapshot_restores(snapshot_id, zones)
    assert {i["State"] for i in disabled["Successful"]} == {"disabling"}
    assert _fsr_states(hook, snapshot_id) == dict.fromkeys(zones, "disabling")


def test_fast_snapshot_restores_partial_failure_is_an_answer_not_an_exception(cloud_conn, run_tags) -> None:
    cloud_conn.set_faults(fsr_unsuccessful_azs=["ca-central-1b"], fsr_disabling_seconds=0)
    hook = CacheEc2Hook(aws_conn_id=cloud_conn.conn_id)
    snapshot_id = hook.create_snapshot(_volume(cloud_conn, "ca-central-1a"), "fsr", run_tags)["SnapshotId"]
    answer = hook.enable_fast_snapshot_restores(snapshot_id, ["ca-central-1a", "ca-central-1b"])
    try:
        assert [i["AvailabilityZone"] for i in answer["Successful"]] == ["ca-central-1a"]
        errors = [(e["AvailabilityZone"], e["Error"]["Code"])
                  for u in answer["Unsuccessful"] for e in u["FastSnapshotRestoreStateErrors"]]
        assert errors == [("ca-central-1b", "InternalError")]
        assert set(_fsr_states(hook, snapshot_id)) == {"ca-central-1a"}
    finally:
        hook.disable_fast_snapshot_restores(snapshot_id, ["ca-central-1a"])


def test_describe_fast_snapshot_restores_of_a_snapshot_without_fsr_is_empty(cloud_conn, run_tags) -> None:
    hook = CacheEc2Hook(aws_conn_id=cloud_conn.conn_id)
    snapshot_id = hook.create_snapshot(_volume(cloud_conn, "ca-central-1a"), "no fsr", run_tags)["SnapshotId"]
    assert hook.describe_fast_snapshot_restores(snapshot_id) == []

