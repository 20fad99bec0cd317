"""Build, then roll out onto real local GPU nodes: a cache hit publishes, a cache miss rolls back; each
rollout times the uncached baseline on a fresh node of the baseline group.

The nodes are the local cloud's: each restores its cache volume from the launch template's
snapshot (a copy of the builder's volume file), mounts it with the node's real mount script,
runs its own containerd, and a kubelet stand-in runs the validation pods with that containerd. EKS
launches them from its own copy of the launch template: the rollout finds them by the source labels.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.dags.conftest import CLUSTER, METADATA_PARAMETER, NODEGROUP, configure_rollout, needs_data_plane, run_dag


def validation_report(run) -> dict:
    """What validate_nodes returned (the report that travels in the ready event)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    query = XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids="validate_nodes", key="return_value")
    with create_session() as session:
        return XComModel.deserialize_value(session.scalars(query).first())


@needs_data_plane
@pytest.mark.slow
def test_build_then_rollout_hits_the_cache_and_a_miss_rolls_back(cloud, build_dag, rollout_dag, gpu_node_group,
                                                                baseline_group, capfd):
    build, states = run_dag(build_dag)
    assert str(build.state) == "success", states
    snapshot_id = cloud.parameter()
    configure_rollout(cloud, gpu_node_group, baseline=baseline_group)
    # A version nobody rolls out: the rollout's becomes 3, while EKS's copy of the template (which the
    # instances launch from, and which their aws:ec2launchtemplate:* tags name) gets its version 2.
    ec2 = cloud.client("ec2")
    data = ec2.describe_launch_template_versions(LaunchTemplateId=gpu_node_group, Versions=["1"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    ec2.create_launch_template_version(LaunchTemplateId=gpu_node_group, LaunchTemplateData=data)

    # 1. the snapshot just built: the node restored from it already has the image
    run, states = run_dag(rollout_dag)
    assert str(run.state) == "success", states
    report = validation_report(run)
    assert report["passed"] and report["results"]
    assert all(result["cache_hit"] is True for result in report["results"])
    eks = cloud.client("eks")
    version = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)["nodegroup"]["launchTemplate"]
    assert str(version["version"]) == "3"
    # published: the teardowns ran and undid nothing
    assert states["rollback_node_group"] == states["restore_snapshot_parameter"] == "success"
    assert cloud.parameter() == snapshot_id
    validated = {result["instance_id"] for result in report["results"]}
    reservations = ec2.describe_instances(InstanceIds=sorted(validated))["Reservations"]
    tags = [{t["Key"]: t["Value"] for t in i["Tags"]} for r in reservations for i in r["Instances"]]
    assert len(tags) == 1, tags  # the node group's one node, launched from version 3 through EKS's copy
    assert tags[0]["aws:ec2launchtemplate:version"] == "2" and tags[0]["aws:ec2launchtemplate:id"] != gpu_node_group
    # the uncached baseline: its group (kept at 0) got one fresh node, which had to pull every image, and is
    # back at 0 afterwards, so next week's baseline is a fresh node again
    assert report["baselines"] and all(b["cache_hit"] is False for b in report["baselines"]), report["baselines"]
    assert set(report["speedups"]) == {r["image"] for r in report["results"]}
    assert _scaling(cloud, BASELINE) == {"minSize": 0, "maxSize": 1, "desiredSize": 0}
    assert _instances(cloud, BASELINE, "running") == []
    first_baseline = {b["instance_id"] for b in report["baselines"]}

    # 2. the same snapshot, claimed to hold an image it does not have: the kubelet must pull it
    small = cloud.images["small"]
    repository, digest = small.split(":1.0@")
    missing = f"{repository}-not-cached:1.0@{digest}"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{repository}:1.0", f"docker://{repository}-not-cached:1.0"],
                   check=True, capture_output=True)
    cloud.client("ssm").put_parameter(Name=METADATA_PARAMETER, Type="String", Overwrite=True, Value=json.dumps(
        {"snapshot_id": snapshot_id, "images": [{"ref": missing, "digest": digest}]}))
    capfd.readouterr()
    run, states = run_dag(rollout_dag, snapshot_id=snapshot_id)
    assert str(run.state) == "failed"
    assert states["validate_nodes"] == "failed"
    assert "cache miss" in capfd.readouterr().out
    (validate,) = [ti for ti in run.get_task_instances() if ti.task_id == "validate_nodes"]
    assert validate.try_number == 1  # a failed verdict is final: never retried onto a node that now has the image
    assert states["rollback_node_group"] == "success"
    version = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)["nodegroup"]["launchTemplate"]
    assert str(version["version"]) == "3"  # back where the failed rollout (version 4) started
    # the failed rollout measured its baseline on another fresh node, and scaled the group back too
    assert _scaling(cloud, BASELINE) == {"minSize": 0, "maxSize": 1, "desiredSize": 0}
    launched = set(_instances(cloud, BASELINE))
    assert len(launched) == 2 and first_baseline < launched, launched


BASELINE = "ml-cache-e2e-baseline"


@pytest.fixture
def baseline_group(cloud, gpu_node_group):
    """The uncached baseline's group as Terraform's `uncached_baseline` makes it: the template's first version
    (a blank cache volume), the GPU taint, 0 nodes until a rollout asks for one."""
    eks = cloud.client("eks")
    gpu = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)["nodegroup"]
    eks.create_nodegroup(clusterName=CLUSTER, nodegroupName=BASELINE, nodeRole=gpu["nodeRole"],
                         subnets=gpu["subnets"], launchTemplate={"id": gpu_node_group, "version": "1"},
                         taints=gpu["taints"], labels={"ml-cache/enabled": "false"},
                         scalingConfig={"minSize": 0, "maxSize": 1, "desiredSize": 0})
    yield BASELINE
    eks.delete_nodegroup(clusterName=CLUSTER, nodegroupName=BASELINE)


def _scaling(cloud, nodegroup: str) -> dict:
    return cloud.client("eks").describe_nodegroup(clusterName=CLUSTER, nodegroupName=nodegroup)["nodegroup"][
        "scalingConfig"]


def _instances(cloud, nodegroup: str, *states: str) -> list[str]:
    filters = [{"Name": "tag:eks:nodegroup-name", "Values": [nodegroup]}]
    if states:
        filters.append({"Name": "instance-state-name", "Values": list(states)})
    reservations = cloud.client("ec2").describe_instances(Filters=filters)["Reservations"]
    return [i["InstanceId"] for r in reservations for i in r["Instances"]]
