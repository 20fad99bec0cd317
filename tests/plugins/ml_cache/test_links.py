"""The console links: each operator that makes or changes something declares one, and the URL it renders
from what the operator persisted names the region and the resource, in the connection's partition."""

from __future__ import annotations

import pytest

from ml_cache.links import EC2InstanceLink, NodegroupLink, RunCommandLink, SnapshotLink
from ml_cache.operators.build_script import RunBuilderScriptOperator
from ml_cache.operators.builder import LaunchBuilderOperator
from ml_cache.operators.nodegroup import ScaleNodegroupOperator, UpdateNodegroupOperator
from ml_cache.operators.snapshot import CreateCacheSnapshotOperator


def rendered(link, partition: str = "aws", **ids: str) -> str:
    return link().format_link(region_name="eu-west-1", aws_domain=link.get_aws_domain(partition), **ids)


@pytest.mark.parametrize(("operator", "link"), [
    (LaunchBuilderOperator, EC2InstanceLink), (RunBuilderScriptOperator, RunCommandLink),
    (CreateCacheSnapshotOperator, SnapshotLink), (UpdateNodegroupOperator, NodegroupLink),
    (ScaleNodegroupOperator, NodegroupLink),
])
def test_each_operator_declares_its_link(operator, link) -> None:
    assert [type(each) for each in operator.operator_extra_links] == [link]


def test_links_name_the_region_and_the_resource() -> None:
    assert rendered(SnapshotLink, snapshot_id="snap-0abc") == \
        "https://console.aws.amazon.com/ec2/home?region=eu-west-1#SnapshotDetails:snapshotId=snap-0abc"
    assert rendered(NodegroupLink, cluster_name="ml", nodegroup_name="gpu") == \
        "https://console.aws.amazon.com/eks/home?region=eu-west-1#/clusters/ml/nodegroups/gpu"
    assert rendered(RunCommandLink, "aws-cn", command_id="c-1", instance_id="i-2") == \
        "https://console.amazonaws.cn/systems-manager/run-command/c-1/i-2?region=eu-west-1"


def test_keys_are_distinct() -> None:
    keys = [link.key for link in (EC2InstanceLink, NodegroupLink, RunCommandLink, SnapshotLink)]
    assert len(set(keys)) == len(keys)
