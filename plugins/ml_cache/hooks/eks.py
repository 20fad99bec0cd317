"""EKS calls of the rollout: node group description, version updates and their status."""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.hooks.eks import EksHook

from ml_cache.hooks._waiters import CustomWaitersMixin


class CacheEksHook(CustomWaitersMixin, EksHook):
    """The provider's EksHook plus UpdateNodegroupVersion / UpdateNodegroupConfig / DescribeUpdate and their
    waiter."""

    def update_nodegroup_version(self, cluster: str, nodegroup: str, launch_template: dict[str, str], *,
                                 force: bool, token: str) -> dict[str, Any]:
        """Idempotent by `token`: a retry with the same token returns the same update."""
        return self.conn.update_nodegroup_version(
            clusterName=cluster, nodegroupName=nodegroup, launchTemplate=launch_template, force=force,
            clientRequestToken=token,
        )["update"]

    def update_nodegroup_scaling(self, cluster: str, nodegroup: str, scaling: dict[str, int], *,
                                 token: str) -> dict[str, Any]:
        """UpdateNodegroupConfig of the scaling only (an update of type ConfigUpdate); idempotent by `token`."""
        return self.conn.update_nodegroup_config(clusterName=cluster, nodegroupName=nodegroup, scalingConfig=scaling,
                                                 clientRequestToken=token)["update"]

    def describe_update(self, cluster: str, nodegroup: str, update_id: str) -> dict[str, Any]:
        return self.conn.describe_update(name=cluster, nodegroupName=nodegroup, updateId=update_id)["update"]
