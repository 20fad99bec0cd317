"""The rollout DAG on the local cloud: prechecks, the update and its rollback paths.

The node group, its launch template and the snapshots live in the local cloud (moto + our EKS
update extension); the DAG reaches them through `aws_default` exactly as it reaches AWS.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

from tests.dags.conftest import METADATA_PARAMETER, PARAMETER, assert_failed_with, run_dag
from tests.plugins.ml_cache import producers

CLUSTER = "ml-container-cache"
NODEGROUP = "ml-container-cache-gpu"


def _snapshot(cloud) -> str:
    ec2 = cloud.client("ec2")
    volume = ec2.create_volume(AvailabilityZone="us-west-2a", Size=8)["VolumeId"]
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snapshot], WaiterConfig={"Delay": 1})
    return snapshot


@pytest.fixture
def node_group(cloud):
    """A cluster and a GPU node group created from our launch template, caching `previous`."""
    ec2, eks, iam = cloud.client("ec2"), cloud.client("eks"), cloud.client("iam")
    previous, new = _snapshot(cloud), _snapshot(cloud)
    template = ec2.create_launch_template(
        LaunchTemplateName=f"gpu-{previous}",
        LaunchTemplateData={
            "InstanceType": "g6e.xlarge",
            "MetadataOptions": {"HttpTokens": "required"},
            "BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {
                "SnapshotId": previous, "VolumeSize": 8, "VolumeType": "gp3", "DeleteOnTermination": True}}],
        },
    )["LaunchTemplate"]["LaunchTemplateId"]
    role = iam.create_role(RoleName=f"eks-{previous}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    eks.create_cluster(name=CLUSTER, roleArn=role, resourcesVpcConfig={"subnetIds": subnets})
    eks.create_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP, nodeRole=role, subnets=subnets,
                         launchTemplate={"id": template, "version": "1"},
                         scalingConfig={"minSize": 0, "maxSize": 2, "desiredSize": 0})
    cloud.client("ssm").put_parameter(Name=PARAMETER, Value=new, Type="String", Overwrite=True)
    # what the build's publish_snapshot writes for `new` (the producer's real output)
    cloud.client("ssm").put_parameter(Name=METADATA_PARAMETER, Type="String", Overwrite=True,
                                      Value=json.dumps(producers.published_metadata(new)))
    config = yaml.safe_load(cloud.config_path.read_text())
    config["rollout"].update({"cluster_name": CLUSTER, "node_group_name": NODEGROUP,
                              "launch_template_id": template, "kubernetes_conn_id": "kubernetes_nowhere"})
    config.setdefault("timeouts", {}).update({"update_seconds": 60, "validation_seconds": 30})
    cloud.config_path.write_text(yaml.safe_dump(config))
    yield {"template": template, "previous": previous, "new": new}
    eks.delete_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)
    eks.delete_cluster(name=CLUSTER)


def _nodegroup_version(cloud) -> str:
    nodegroup = cloud.client("eks").describe_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)["nodegroup"]
    return str(nodegroup["launchTemplate"]["version"])


def test_update_failed_rolls_back(cloud, node_group, rollout_dag, capfd):
    cloud.set_faults(nodegroup_update_failed="NodeCreationFailure", nodegroup_update_seconds=0.5)
    run, states = run_dag(rollout_dag)
    assert_failed_with(run, states, "update_node_group", r"ended Failed: NodeCreationFailure", capfd)
    assert states["publish_ready"] == "upstream_failed"
    assert states["rollback_node_group"] == "success" and states["restore_snapshot_parameter"] == "success"
    assert _nodegroup_version(cloud) == "1"
    assert cloud.parameter() == node_group["previous"]
    # the new version exists and carries over everything but the snapshot
    versions = cloud.client("ec2").describe_launch_template_versions(LaunchTemplateId=node_group["template"])
    data = {str(v["VersionNumber"]): v["LaunchTemplateData"] for v in versions["LaunchTemplateVersions"]}
    assert data["2"]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == node_group["new"]
    assert data["2"]["InstanceType"] == data["1"]["InstanceType"] == "g6e.xlarge"
    assert data["2"]["MetadataOptions"] == data["1"]["MetadataOptions"]


def test_validation_failure_rolls_the_node_group_back(cloud, node_group, rollout_dag, capfd):
    """The update succeeds, validation cannot prove the cache (no reachable cluster here): roll back."""
    cloud.set_faults(nodegroup_update_seconds=0.5)
    run, states = run_dag(rollout_dag)
    assert_failed_with(run, states, "validate_nodes", "kubernetes_nowhere", capfd)
    assert states["update_node_group"] == "success"
    assert states["rollback_node_group"] == "success"
    assert _nodegroup_version(cloud) == "1"
    assert cloud.parameter() == node_group["previous"]
    # the group was scaled to 0: one node for the validation, then its own scaling back
    eks = cloud.client("eks")
    scaling = {p["type"]: p["value"] for u in _updates(cloud, "ConfigUpdate") for p in u["params"]}
    assert states["scale_up_for_validation"] == states["restore_node_group_scaling"] == "success"
    assert [u["status"] for u in _updates(cloud, "ConfigUpdate")] == ["Successful", "Successful"], scaling
    nodegroup = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)["nodegroup"]
    assert nodegroup["scalingConfig"] == {"minSize": 0, "maxSize": 2, "desiredSize": 0}


def _updates(cloud, kind: str) -> list[dict]:
    eks = cloud.client("eks")
    updates = [eks.describe_update(name=CLUSTER, nodegroupName=NODEGROUP, updateId=update_id)["update"]
               for update_id in eks.list_updates(name=CLUSTER, nodegroupName=NODEGROUP)["updateIds"]]
    return sorted((u for u in updates if u["type"] == kind), key=lambda u: u["createdAt"])


def test_node_group_from_another_template_fails_the_precheck(cloud, node_group, rollout_dag, capfd):
    config = yaml.safe_load(cloud.config_path.read_text())
    config["rollout"]["launch_template_id"] = "lt-0123456789abcdef0"
    cloud.config_path.write_text(yaml.safe_dump(config))
    run, states = run_dag(rollout_dag)
    assert_failed_with(run, states, "precheck_node_group", "not created from launch template lt-0123456789abcdef0",
                       capfd)
    assert states["update_node_group"] == "upstream_failed"
    assert _nodegroup_version(cloud) == "1"
    assert cloud.parameter() == node_group["new"]  # nothing was rolled out, nothing to restore


BASELINE = "ml-container-cache-gpu-baseline"


def _with_baseline(cloud, node_group, *, create: bool = True, nodes: int = 0) -> None:
    """The uncached baseline configured, its group (if `create`) at 0 nodes as Terraform makes it (or at
    `nodes`: as a rollout scaled it)."""
    if create:
        eks = cloud.client("eks")
        gpu = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)["nodegroup"]
        eks.create_nodegroup(clusterName=CLUSTER, nodegroupName=BASELINE, nodeRole=gpu["nodeRole"],
                             subnets=gpu["subnets"][:1], launchTemplate={"id": node_group["template"], "version": "1"},
                             scalingConfig={"minSize": nodes, "maxSize": 1, "desiredSize": nodes})
    config = yaml.safe_load(cloud.config_path.read_text())
    config["rollout"].update({"uncached_baseline": True, "baseline_node_group_name": BASELINE})
    cloud.config_path.write_text(yaml.safe_dump(config))


def test_a_missing_baseline_group_fails_the_precheck(cloud, node_group, rollout_dag, capfd):
    _with_baseline(cloud, node_group, create=False)
    run, states = run_dag(rollout_dag)
    assert_failed_with(run, states, "precheck_node_group", f"Baseline node group {BASELINE} does not exist", capfd)
    assert states["update_node_group"] == "upstream_failed"
    assert len(cloud.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=node_group["template"])["LaunchTemplateVersions"]) == 1  # nothing changed


def test_the_baseline_group_gets_one_node_and_goes_back_to_zero_also_when_validation_fails(
        cloud, node_group, rollout_dag, capfd):
    """Each rollout measures the uncached start on a fresh node: the group kept at 0 is scaled to 1 beside
    the GPU group's validation node, and back by a teardown whatever happened."""
    _with_baseline(cloud, node_group)
    cloud.set_faults(nodegroup_update_seconds=0.5)
    eks = cloud.client("eks")
    try:
        run, states = run_dag(rollout_dag)
        assert_failed_with(run, states, "validate_nodes", "kubernetes_nowhere", capfd)
        assert states["scale_up_baseline"] == states["restore_baseline_scaling"] == "success"
        updates = [eks.describe_update(name=CLUSTER, nodegroupName=BASELINE, updateId=update_id)["update"]
                   for update_id in eks.list_updates(name=CLUSTER, nodegroupName=BASELINE)["updateIds"]]
        desired = [{p["type"]: p["value"] for p in u["params"]}.get("DesiredSize")
                   for u in sorted(updates, key=lambda u: u["createdAt"])]
        assert desired == ["1", "0"] and all(u["status"] == "Successful" for u in updates), updates
        assert eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=BASELINE)["nodegroup"]["scalingConfig"] == {
            "minSize": 0, "maxSize": 1, "desiredSize": 0}
    finally:
        eks.delete_nodegroup(clusterName=CLUSTER, nodegroupName=BASELINE)


def test_update_in_progress_is_retried_with_the_same_token(cloud, node_group, rollout_dag):
    eks = cloud.client("eks")
    cloud.set_faults(nodegroup_update_seconds=4)
    eks.update_nodegroup_version(clusterName=CLUSTER, nodegroupName=NODEGROUP,
                                 launchTemplate={"id": node_group["template"], "version": "1"},
                                 clientRequestToken="someone-else")
    before = set(eks.list_updates(name=CLUSTER, nodegroupName=NODEGROUP)["updateIds"])
    _, states = run_dag(rollout_dag)
    assert states["update_node_group"] == "success", states
    to_version = [{p["type"]: p["value"] for p in update["params"]}.get("LaunchTemplateVersion")
                  for update in _updates(cloud, "VersionUpdate") if update["id"] not in before]
    # retried with the same token: one update to the new version, not one per attempt
    # (the other new one is the rollback to version 1: validation cannot reach a cluster here)
    assert sorted(to_version) == ["1", "2"]


def test_bad_snapshot_param_is_rejected_before_any_aws_call(cloud, node_group, rollout_dag):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="snapshot_id"):
        run_dag(rollout_dag, snapshot_id="snap-$(id)")
    versions = cloud.client("ec2").describe_launch_template_versions(LaunchTemplateId=node_group["template"])
    assert len(versions["LaunchTemplateVersions"]) == 1
    assert _nodegroup_version(cloud) == "1"


def test_deadlines_longer_than_the_parsed_run_timeout_are_refused_at_once(cloud, node_group, rollout_dag, capfd):
    from ml_cache.run_deadline import run_timeout

    assert rollout_dag.dagrun_timeout == run_timeout("rollout")
    config = yaml.safe_load(cloud.config_path.read_text())
    config["timeouts"]["validation_seconds"] = int(rollout_dag.dagrun_timeout.total_seconds())
    cloud.config_path.write_text(yaml.safe_dump(config))
    run, states = run_dag(rollout_dag)
    assert_failed_with(run, states, "validate_inputs", "need a run timeout of", capfd, retried=False)
    versions = cloud.client("ec2").describe_launch_template_versions(LaunchTemplateId=node_group["template"])
    assert len(versions["LaunchTemplateVersions"]) == 1
    assert cloud.parameter() == node_group["new"]


def test_every_undo_is_a_teardown_that_fails_the_run_when_it_fails(rollout_dag):
    teardowns = {t.task_id for t in rollout_dag.tasks if t.is_teardown}
    assert teardowns == {"delete_validation_pods", "restore_node_group_scaling", "restore_baseline_scaling",
                         "rollback_node_group",
                         "restore_snapshot_parameter", "retire_rejected_fsr"}
    assert all(rollout_dag.get_task(t).on_failure_fail_dagrun for t in teardowns)
    # each runs after the whole rollout path, whatever its outcome
    assert {"update_node_group", "validate_nodes", "publish_ready"} <= rollout_dag.get_task(
        "delete_validation_pods").get_flat_relative_ids(upstream=True)
    assert rollout_dag.on_failure_callback


def test_a_timed_out_run_restores_the_parameter_and_starts_the_rollback(cloud, node_group):
    """What the DAG's failure callback does when the run timed out (its teardowns are then skipped)."""
    from ml_cache.settings import RolloutSettings
    from ml_cache.steps.rollout import undo_timed_out_run, validate_inputs

    eks = cloud.client("eks")
    cloud.set_faults(nodegroup_update_seconds=0.2)
    version = cloud.client("ec2").create_launch_template_version(
        LaunchTemplateId=node_group["template"], SourceVersion="1", LaunchTemplateData={})["LaunchTemplateVersion"]
    eks.update_nodegroup_version(clusterName=CLUSTER, nodegroupName=NODEGROUP, clientRequestToken="the-rollout",
                                 launchTemplate={"id": node_group["template"],
                                                 "version": str(version["VersionNumber"])})
    deadline = time.monotonic() + 30
    while _nodegroup_version(cloud) == "1" and time.monotonic() < deadline:
        time.sleep(0.1)  # DescribeNodegroup settles the update once its time came
    assert _nodegroup_version(cloud) == str(version["VersionNumber"])
    cloud.set_faults(nodegroup_update_seconds=60)  # the rollback stays InProgress: nobody waits for it
    settings = RolloutSettings.model_validate(validate_inputs(None, aws_conn_id="aws_default", dagrun_timeout=None))
    current = {"launch_template_version": "1", "previous_snapshot_id": node_group["previous"],
               "restore_scaling": {"minSize": 0, "maxSize": 2, "desiredSize": 0}}
    done = undo_timed_out_run(settings, {"snapshot_id": node_group["new"], "images": [], "image_set": None,
                                         "arch": None, "source": "test"}, current,
                              aws_conn_id="aws_default", dag_id="ml_container_cache_rollout", run_id="timed-out")
    assert cloud.parameter() == node_group["previous"]
    (rollback,) = [u for u in _updates(cloud, "VersionUpdate") if u["status"] == "InProgress"]
    assert {p["type"]: p["value"] for p in rollback["params"]}["LaunchTemplateVersion"] == "1"
    assert any(f"update {rollback['id']}, not waited for" in line for line in done), done


def test_a_timed_out_run_scales_the_baseline_group_back(cloud, node_group):
    """Its teardown was skipped with the run: the failure callback starts putting the baseline back to 0."""
    from ml_cache.settings import RolloutSettings
    from ml_cache.steps.rollout import undo_timed_out_run, validate_inputs

    _with_baseline(cloud, node_group, nodes=1)  # where scale_up_baseline left it
    eks = cloud.client("eks")
    try:
        settings = RolloutSettings.model_validate(validate_inputs(None, aws_conn_id="aws_default",
                                                                  dagrun_timeout=None))
        current = {"launch_template_version": "1", "previous_snapshot_id": node_group["previous"],
                   "restore_scaling": None, "baseline_restore_scaling": {"minSize": 0, "maxSize": 1, "desiredSize": 0}}
        done = undo_timed_out_run(settings, {"snapshot_id": node_group["new"], "images": [], "image_set": None,
                                             "arch": None, "source": "test"}, current,
                                  aws_conn_id="aws_default", dag_id="ml_container_cache_rollout", run_id="timed-out")
        assert any(line.startswith(f"scaling of {BASELINE} back to ") for line in done), done
        assert eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=BASELINE)["nodegroup"]["scalingConfig"][
            "desiredSize"] == 0
    finally:
        eks.delete_nodegroup(clusterName=CLUSTER, nodegroupName=BASELINE)


def test_an_update_past_its_deadline_fails_at_once_and_is_rolled_back_once_it_ends(cloud, node_group, rollout_dag,
                                                                                    capfd):
    """The update outlives `update_seconds`: the task fails at its first try (DeadlinePassed), and the
    rollback still moves the group back once that update ended (whether the teardown started before it
    ended depends on the machine's speed: tests/plugins/ml_cache/operators/test_nodegroup.py pins that case)."""
    config = yaml.safe_load(cloud.config_path.read_text())
    config["timeouts"]["update_seconds"] = 6
    cloud.config_path.write_text(yaml.safe_dump(config))
    cloud.set_faults(nodegroup_update_seconds=10)
    eks = cloud.client("eks")
    before = set(eks.list_updates(name=CLUSTER, nodegroupName=NODEGROUP)["updateIds"])

    def speed_up_later_updates() -> None:
        """Once the rollout's update started (it keeps its 10 s), the rollback's takes 0.5 s."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if set(eks.list_updates(name=CLUSTER, nodegroupName=NODEGROUP)["updateIds"]) - before:
                cloud.set_faults(nodegroup_update_seconds=0.5)
                return
            time.sleep(0.2)

    helper = threading.Thread(target=speed_up_later_updates, daemon=True)
    helper.start()
    run, states = run_dag(rollout_dag)
    helper.join()
    assert_failed_with(run, states, "update_node_group", "was still InProgress after 6 s", capfd, retried=False)
    assert states["rollback_node_group"] == "success"
    updates = [u for u in _updates(cloud, "VersionUpdate") if u["id"] not in before]
    assert [({p["type"]: p["value"] for p in u["params"]}["LaunchTemplateVersion"], u["status"]) for u in updates] == [
        ("2", "Successful"), ("1", "Successful")]
    assert _nodegroup_version(cloud) == "1"
    assert cloud.parameter() == node_group["previous"]
