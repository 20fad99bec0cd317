"""The node group operators' decisions against the local cloud's EKS: what the rollback and the scaling
teardown find to undo. Their waits run in the DAG tests (tests/dags/test_rollout_dag_runs.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from ml_cache.operators.nodegroup import ScaleNodegroupOperator, UpdateNodegroupOperator
from tests.devstack.conftest import devstack_call
from tests.plugins.ml_cache.local_kubernetes import REGION, cloud, connections  # noqa: F401 - fixtures


class TaskInstance:
    """What the operators read of Airflow's task instance: the results of earlier tasks."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results

    def xcom_pull(self, task_ids: str) -> Any:
        return self.results.get(task_ids)


@pytest.fixture
def group(connections) -> Iterator[dict[str, Any]]:  # noqa: F811
    """A node group scaled to 0 on version 1 of its launch template, which has a version 2."""
    handle, _ = connections

    def aws(service: str) -> Any:
        return boto3.client(service, endpoint_url=handle.endpoint, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    ec2, eks, iam = aws("ec2"), aws("eks"), aws("iam")
    name = f"ng-{uuid.uuid4().hex[:8]}"
    data = {"InstanceType": "g6e.xlarge"}
    template = ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data)["LaunchTemplate"][
        "LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=template, LaunchTemplateData=data)
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:1]
    eks.create_cluster(name=name, roleArn=role, resourcesVpcConfig={"subnetIds": subnets})
    eks.create_nodegroup(clusterName=name, nodegroupName=name, nodeRole=role, subnets=subnets,
                         launchTemplate={"id": template, "version": "1"},
                         scalingConfig={"minSize": 0, "maxSize": 2, "desiredSize": 0})
    try:
        yield {"eks": eks, "name": name, "template": template, "handle": handle}
    finally:
        devstack_call(handle, "DELETE", "/_devstack/faults")
        eks.delete_nodegroup(clusterName=name, nodegroupName=name)
        eks.delete_cluster(name=name)


def rollback(group: dict[str, Any]) -> UpdateNodegroupOperator:
    return UpdateNodegroupOperator(task_id="rollback_node_group", cluster_name=group["name"],
                                   node_group_name=group["name"], launch_template_id=group["template"], version="1",
                                   force=False, rollback=True, timeout_seconds=60, poll_seconds=1)


def test_the_rollback_waits_for_an_update_still_in_progress(group):
    """The rollout's update outlived its deadline: the group still says version 1, but that update may
    yet move it to 2, so the rollback is not done; without an update in progress it is."""
    devstack_call(group["handle"], "POST", "/_devstack/faults", {"nodegroup_update_seconds": 60})
    context = {"ti": TaskInstance({})}
    assert rollback(group)._change(context) is None
    group["eks"].update_nodegroup_version(clusterName=group["name"], nodegroupName=group["name"],
                                          launchTemplate={"id": group["template"], "version": "2"})
    assert rollback(group)._change(context) == "launch template version 1"


def test_a_published_rollout_is_never_rolled_back(group):
    group["eks"].update_nodegroup_version(clusterName=group["name"], nodegroupName=group["name"],
                                          launchTemplate={"id": group["template"], "version": "2"})
    assert rollback(group)._change({"ti": TaskInstance({"publish_ready": {"snapshot_id": "snap-1"}})}) is None


def test_the_scaling_teardown_restores_only_what_changed(group):
    def scale(scaling: dict[str, int] | None) -> ScaleNodegroupOperator:
        return ScaleNodegroupOperator(task_id="restore_node_group_scaling", cluster_name=group["name"],
                                      node_group_name=group["name"], scaling=scaling, timeout_seconds=60,
                                      poll_seconds=1)

    context = {"ti": TaskInstance({})}
    original = {"minSize": 0, "maxSize": 2, "desiredSize": 0}
    assert scale(None)._change(context) is None  # the group had nodes: nothing was scaled
    assert scale(original)._change(context) is None  # nothing scaled it up
    group["eks"].update_nodegroup_config(clusterName=group["name"], nodegroupName=group["name"],
                                         scalingConfig={"minSize": 1, "maxSize": 2, "desiredSize": 1})
    assert scale(original)._change(context) == "scaling desiredSize=0, maxSize=2, minSize=0"
