"""EKS managed node group updates: UpdateNodegroupVersion, DescribeUpdate, ListUpdates.

An update is InProgress for DEVSTACK_NODEGROUP_UPDATE_SECONDS (fault `nodegroup_update_seconds`),
then Successful (the node group takes the new launch template version / Kubernetes version) or,
with the fault `nodegroup_update_failed` set to an EKS error code, Failed with that error and the
node group unchanged. A second update while one runs is ResourceInUseException, unless it repeats
the first one's clientRequestToken.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from moto.core.responses import ActionResult
from moto.eks import urls as eks_urls
from moto.eks.exceptions import InvalidParameterException, ResourceInUseException, ResourceNotFoundException
from moto.eks.responses import EKSResponse

from devstack import faults
from devstack.moto_ext import _patch

ROUTES = (
    "{0}/clusters/(?P<name>[^/]+)/node-groups/(?P<nodegroupName>[^/]+)/update-version$",
    "{0}/clusters/(?P<name>[^/]+)/updates$",
    "{0}/clusters/(?P<name>[^/]+)/updates/(?P<updateId>[^/]+)$",
)


@dataclass
class NodegroupUpdate:
    id: str
    cluster: str
    nodegroup: str
    params: list[dict[str, str]]
    client_request_token: str | None
    failure: str | None
    due_monotonic: float
    new_launch_template: dict[str, str] | None
    new_version: str | None
    new_release_version: str | None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: str = "InProgress"
    errors: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "type": "VersionUpdate", "params": self.params,
                "createdAt": self.created_at, "errors": self.errors}


_lock = threading.Lock()
_updates: dict[tuple[str, str], list[NodegroupUpdate]] = {}  # (account, region) -> updates


def reset() -> None:
    with _lock:
        _updates.clear()


def _not_found(message: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(clusterName=None, nodegroupName=None, fargateProfileName=None,
                                     addonName=None, message=message)


def _settle(response: Any) -> list[NodegroupUpdate]:
    """Finish the updates whose time has come; return this account/region's updates."""
    with _lock:
        updates = _updates.setdefault((response.current_account, response.region), [])
        for update in updates:
            if update.status == "InProgress" and time.monotonic() >= update.due_monotonic:
                _finish_when_nodes_converged(response, update)
        return list(updates)


def _finish_when_nodes_converged(response: Any, update: NodegroupUpdate) -> None:
    """With local nodes (devstack.nodes), Successful waits until they run the new version; a
    node group that never converges ends Failed with NodeCreationFailure."""
    from devstack import nodes

    backend = response.eks_backend
    nodegroup = backend.clusters[update.cluster].nodegroups.get(update.nodegroup)
    target = (getattr(nodegroup, "devstack_target_launch_template", None) or {}) if nodegroup else {}
    version = target.get("version") and nodes._resolve_version(response.current_account, response.region, target)
    if update.failure or nodes.converged(response.current_account, response.region, update.cluster,
                                         update.nodegroup, version or None):
        _finish(backend, update)
    elif time.monotonic() >= update.due_monotonic + nodes.update_timeout_seconds():
        update.failure = "NodeCreationFailure"
        _finish(backend, update)
        stuck = [n.instance_id for n in nodes.nodes_of(response.current_account, response.region, update.cluster,
                                                       update.nodegroup) if not n.ready]
        update.errors = [{"errorCode": "NodeCreationFailure",
                          "errorMessage": "Instances failed to join the kubernetes cluster",
                          "resourceIds": stuck or [update.nodegroup]}]


def _finish(backend: Any, update: NodegroupUpdate) -> None:
    nodegroup = backend.clusters[update.cluster].nodegroups.get(update.nodegroup)
    if update.failure:
        update.status = "Failed"
        update.errors = [{"errorCode": update.failure,
                          "errorMessage": f"devstack fault: node group update failed with {update.failure}",
                          "resourceIds": [update.nodegroup]}]
    else:
        update.status = "Successful"
        if nodegroup is not None:
            if update.new_launch_template:
                nodegroup.launch_template = {**(nodegroup.launch_template or {}), **update.new_launch_template}
            if update.new_version:
                nodegroup.version = update.new_version
            if update.new_release_version:
                nodegroup.release_version = update.new_release_version
    if nodegroup is not None:
        nodegroup.status = "ACTIVE"
        nodegroup.devstack_target_launch_template = None  # devstack.nodes: back to the group's own version


def update_nodegroup_version(self: Any) -> ActionResult:
    cluster_name = self._get_param("name")
    nodegroup_name = self._get_param("nodegroupName")
    token = self._get_param("clientRequestToken")
    launch_template = self._get_param("launchTemplate")
    version = self._get_param("version")
    release_version = self._get_param("releaseVersion")
    nodegroup = self.eks_backend.describe_nodegroup(cluster_name=cluster_name, nodegroup_name=nodegroup_name)
    updates = _settle(self)
    with _lock:
        running = [u for u in updates if u.cluster == cluster_name and u.nodegroup == nodegroup_name
                   and u.status == "InProgress"]
        if token:
            repeated = [u for u in updates if u.cluster == cluster_name and u.nodegroup == nodegroup_name
                        and u.client_request_token == token]
            if repeated:
                return ActionResult({"update": repeated[-1].describe()})
        if running:
            raise ResourceInUseException(
                clusterName=cluster_name, nodegroupName=nodegroup_name, addonName=None,
                message=f"Nodegroup {nodegroup_name} is currently being updated (update {running[0].id})",
            )
        params = _check_launch_template(nodegroup, launch_template)
        if version:
            params.append({"type": "Version", "value": version})
        if release_version:
            params.append({"type": "ReleaseVersion", "value": release_version})
        update = NodegroupUpdate(
            id=str(uuid.uuid4()), cluster=cluster_name, nodegroup=nodegroup_name, params=params,
            client_request_token=token, failure=faults.current().nodegroup_update_failed,
            due_monotonic=time.monotonic() + faults.delay("nodegroup_update_seconds"),
            new_launch_template={k: str(v) for k, v in (launch_template or {}).items()} or None,
            new_version=version, new_release_version=release_version,
        )
        _updates[(self.current_account, self.region)].append(update)
        nodegroup.status = "UPDATING"
        if update.new_launch_template and not update.failure:  # devstack.nodes rolls nodes to it
            nodegroup.devstack_target_launch_template = {**(nodegroup.launch_template or {}),
                                                         **update.new_launch_template}
    return ActionResult({"update": update.describe()})


def _check_launch_template(nodegroup: Any, requested: dict[str, Any] | None) -> list[dict[str, str]]:
    """AWS: the same launch template (by id or name) the group was created with, a new version."""
    current = nodegroup.launch_template or {}
    if not requested:
        return []
    if not current:
        raise InvalidParameterException(
            clusterName=nodegroup.cluster_name, nodegroupName=nodegroup.nodegroup_name, addonName=None,
            message="The node group was not created with a launch template; none can be given in an update",
        )
    same = (requested.get("id") and requested["id"] == current.get("id")) or (
        requested.get("name") and requested["name"] == current.get("name"))
    if not same:
        raise InvalidParameterException(
            clusterName=nodegroup.cluster_name, nodegroupName=nodegroup.nodegroup_name, addonName=None,
            message=f"You cannot specify a launch template other than the one the node group uses "
                    f"({current.get('name') or current.get('id')})",
        )
    params = [{"type": "LaunchTemplateName", "value": str(current.get("name", ""))}]
    if requested.get("version"):
        params.append({"type": "LaunchTemplateVersion", "value": str(requested["version"])})
    return params


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


def install() -> None:
    for route in ROUTES:
        eks_urls.url_paths.setdefault(route, eks_urls.response.dispatch)
    _patch.replace(EKSResponse, "update_nodegroup_version", lambda _orig: update_nodegroup_version)
    _patch.replace(EKSResponse, "describe_update", lambda _orig: describe_update)
    _patch.replace(EKSResponse, "list_updates", lambda _orig: list_updates)
    _patch.replace(EKSResponse, "describe_nodegroup", describe_nodegroup)
