"""EKS request handlers on moto's EKSResponse: UpdateNodegroupVersion/Config, DescribeUpdate, ListUpdates,
and CreateNodegroup making EKS's launch template copy."""

from __future__ import annotations

from typing import Any

from moto.core.responses import ActionResult
from moto.eks.exceptions import ResourceNotFoundException

from devstack.moto_ext.eks import launch_template_copy, models

ROUTES = (
    "{0}/clusters/(?P<name>[^/]+)/node-groups/(?P<nodegroupName>[^/]+)/update-version$",
    "{0}/clusters/(?P<name>[^/]+)/updates$",
    "{0}/clusters/(?P<name>[^/]+)/updates/(?P<updateId>[^/]+)$",
)


def _not_found(message: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(clusterName=None, nodegroupName=None, fargateProfileName=None,
                                     addonName=None, message=message)


def _settle(response: Any) -> list[models.NodegroupUpdate]:
    return models.settle(response.eks_backend, response.current_account, response.region)


def update_nodegroup_version(self: Any) -> ActionResult:
    nodegroup = self.eks_backend.describe_nodegroup(cluster_name=self._get_param("name"),
                                                    nodegroup_name=self._get_param("nodegroupName"))
    update = models.start_update(
        self.eks_backend, self.current_account, self.region, nodegroup, self._get_param("clientRequestToken"),
        self._get_param("launchTemplate"), self._get_param("version"), self._get_param("releaseVersion"),
    )
    return ActionResult({"update": update.describe()})


def update_nodegroup_config(self: Any) -> ActionResult:
    """Scaling only (what the rollout changes); labels, taints and the rest stay moto's."""
    nodegroup = self.eks_backend.describe_nodegroup(cluster_name=self._get_param("name"),
                                                    nodegroup_name=self._get_param("nodegroupName"))
    scaling = self._get_param("scalingConfig") or {}
    update = models.start_config_update(self.eks_backend, self.current_account, self.region, nodegroup,
                                        self._get_param("clientRequestToken"), scaling)
    return ActionResult({"update": update.describe()})


def describe_update(self: Any) -> ActionResult:
    cluster_name = self._get_param("name")
    update_id = self._get_param("updateId")
    nodegroup_name = self._get_param("nodegroupName")
    self.eks_backend.describe_cluster(name=cluster_name)
    for update in _settle(self):
        if update.id == update_id and update.cluster == cluster_name and (
                not nodegroup_name or update.nodegroup == nodegroup_name):
            return ActionResult({"update": update.describe()})
    raise _not_found(f"No update found for ID: {update_id}")


def list_updates(self: Any) -> ActionResult:
    cluster_name = self._get_param("name")
    nodegroup_name = self._get_param("nodegroupName")
    self.eks_backend.describe_cluster(name=cluster_name)
    ids = [u.id for u in _settle(self) if u.cluster == cluster_name
           and (not nodegroup_name or u.nodegroup == nodegroup_name)]
    return ActionResult({"updateIds": ids})


def describe_nodegroup(original: Any) -> Any:
    def handler(self: Any) -> Any:
        _settle(self)
        return original(self)

    return handler


def list_nodegroups(original: Any) -> Any:
    """ListNodegroups of a cluster that does not exist: EKS answers ResourceNotFoundException
    (https://docs.aws.amazon.com/eks/latest/APIReference/API_ListNodegroups.html#API_ListNodegroups_Errors);
    moto 5.2.5 fails with a KeyError (HTTP 500, which boto retries as a server error)."""
    def handler(self: Any) -> Any:
        self.eks_backend.describe_cluster(name=self._get_param("name"))  # moto raises EKS's own error
        return original(self)

    return handler


def create_nodegroup(original: Any) -> Any:
    def handler(self: Any) -> Any:
        result = original(self)
        nodegroup = self.eks_backend.describe_nodegroup(cluster_name=self._get_param("name"),
                                                        nodegroup_name=self._get_param("nodegroupName"))
        launch_template_copy.copy_for(models.ec2_backend(self.current_account, self.region), nodegroup,
                                      nodegroup.launch_template)
        return result

    return handler
