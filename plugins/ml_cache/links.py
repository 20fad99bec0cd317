"""Console links from a task to what it made or changed: the builder instance (the provider's EC2InstanceLink),
its Run Command invocation, the snapshot, the node group.

An operator persists the IDs as it learns them (BaseAwsLink.persist: region, partition and IDs in XCom);
Airflow 3 renders each link when the task finishes, failed or not, and the UI shows it as a button of the
task instance. No plugin registration is needed: Airflow 3 serializes a link as its name and XCom key.
"""

from __future__ import annotations

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink
from airflow.providers.amazon.aws.links.ec2 import EC2InstanceLink

__all__ = ["EC2InstanceLink", "NodegroupLink", "RunCommandLink", "SnapshotLink"]


class RunCommandLink(BaseAwsLink):
    """The builder script's Run Command invocation: status, output, the document version it ran."""

    name = "Run Command"
    key = "_ml_cache_run_command"
    format_str = BASE_AWS_CONSOLE_LINK + "/systems-manager/run-command/{command_id}/{instance_id}?region={region_name}"


class SnapshotLink(BaseAwsLink):
    """The cache snapshot: its state, progress, tags and Fast Snapshot Restore."""

    name = "EBS snapshot"
    key = "_ml_cache_snapshot"
    format_str = BASE_AWS_CONSOLE_LINK + "/ec2/home?region={region_name}#SnapshotDetails:snapshotId={snapshot_id}"


class NodegroupLink(BaseAwsLink):
    """The GPU node group the task updates (its Update history tab lists the update)."""

    name = "EKS node group"
    key = "_ml_cache_nodegroup"
    format_str = (BASE_AWS_CONSOLE_LINK
                  + "/eks/home?region={region_name}#/clusters/{cluster_name}/nodegroups/{nodegroup_name}")
