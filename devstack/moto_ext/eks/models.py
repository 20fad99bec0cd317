"""EKS node group updates: their state, and the rules that move them from InProgress to an end.

An update is InProgress for DEVSTACK_NODEGROUP_UPDATE_SECONDS (fault `nodegroup_update_seconds`),
then Successful (the node group takes the new launch template version / Kubernetes version) or,
with the fault `nodegroup_update_failed` set to an EKS error code, Failed with that error and the
node group unchanged. A second update while one runs is ResourceInUseException, unless it repeats
the first one's clientRequestToken. A version update adds a version to EKS's copy of the launch
template (launch_template_copy); a config update (UpdateNodegroupConfig, type ConfigUpdate) sets
the scaling at once and is Successful once the nodes match it.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from moto.eks.exceptions import InvalidParameterException, ResourceInUseException

from devstack import clock, faults
from devstack.moto_ext.eks import launch_template_copy


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
    group: Any = field(default=None, repr=False)  # the node group object: a re-created namesake is another group
    type: str = "VersionUpdate"
    created_at: datetime = field(default_factory=clock.now)
    status: str = "InProgress"
    errors: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "type": self.type, "params": self.params,
                "createdAt": self.created_at, "errors": self.errors}


_lock = threading.Lock()
_updates: dict[tuple[str, str], list[NodegroupUpdate]] = {}  # (account, region) -> updates


def reset() -> None:
    with _lock:
        _updates.clear()


def settle(backend: Any, account: str, region: str) -> list[NodegroupUpdate]:
    """Finish the updates whose time has come; return this account/region's updates."""
    with _lock:
        updates = _updates.setdefault((account, region), [])
        # An update's history goes with its node group: DescribeUpdate on a deleted node group is
        # ResourceNotFoundException (https://docs.aws.amazon.com/eks/latest/APIReference/API_DescribeUpdate.html),
        # also once a node group of the same name was created again.
        updates[:] = [u for u in updates if _nodegroup(backend, u) is not None]
        for update in updates:
            if update.status == "InProgress" and time.monotonic() >= update.due_monotonic:
                _finish_when_nodes_converged(backend, account, region, update)
        return list(updates)


def _nodegroup(backend: Any, update: NodegroupUpdate) -> Any:
    cluster = backend.clusters.get(update.cluster)
    group = cluster.nodegroups.get(update.nodegroup) if cluster is not None else None
    return group if group is update.group else None


def _finish_when_nodes_converged(backend: Any, account: str, region: str, update: NodegroupUpdate) -> None:
    """With local nodes (devstack.nodes), Successful waits until they run the new version; a
    node group that never converges ends Failed with NodeCreationFailure."""
    from devstack import nodes

    nodegroup = _nodegroup(backend, update)
    target = (getattr(nodegroup, "devstack_target_launch_template", None) or {}) if nodegroup else {}
    version = target.get("version") and nodes._resolve_version(account, region, target)
    if update.failure or nodes.converged(account, region, update.cluster, update.nodegroup, version or None):
        _finish(backend, update)
    elif time.monotonic() >= update.due_monotonic + nodes.update_timeout_seconds():
        update.failure = "NodeCreationFailure"
        _finish(backend, update)
        stuck = [n.instance_id for n in nodes.nodes_of(account, region, update.cluster, update.nodegroup)
                 if not n.ready]
        update.errors = [{"errorCode": "NodeCreationFailure",
                          "errorMessage": "Instances failed to join the kubernetes cluster",
                          "resourceIds": stuck or [update.nodegroup]}]


def _finish(backend: Any, update: NodegroupUpdate) -> None:
    nodegroup = _nodegroup(backend, update)
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


def _repeated_or_free(updates: list[NodegroupUpdate], nodegroup: Any, token: str | None) -> NodegroupUpdate | None:
    """The update this clientRequestToken already started; else None, unless another one runs."""
    cluster_name, nodegroup_name = nodegroup.cluster_name, nodegroup.nodegroup_name
    mine = [u for u in updates if u.cluster == cluster_name and u.nodegroup == nodegroup_name]
    repeated = [u for u in mine if token and u.client_request_token == token]
    if repeated:
        return repeated[-1]
    running = [u for u in mine if u.status == "InProgress"]
    if running:
        raise ResourceInUseException(
            clusterName=cluster_name, nodegroupName=nodegroup_name, addonName=None,
            message=f"Nodegroup {nodegroup_name} is currently being updated (update {running[0].id})",
        )
    return None


def start_update(backend: Any, account: str, region: str, nodegroup: Any, token: str | None,
                 launch_template: dict[str, Any] | None, version: str | None,
                 release_version: str | None) -> NodegroupUpdate:
    """A new InProgress update, or the one this clientRequestToken already started."""
    cluster_name, nodegroup_name = nodegroup.cluster_name, nodegroup.nodegroup_name
    updates = settle(backend, account, region)
    with _lock:
        repeated = _repeated_or_free(updates, nodegroup, token)
        if repeated is not None:
            return repeated
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
            new_version=version, new_release_version=release_version, group=nodegroup,
        )
        _updates[(account, region)].append(update)
        nodegroup.status = "UPDATING"
        if update.new_launch_template and not update.failure:  # devstack.nodes rolls nodes to it
            nodegroup.devstack_target_launch_template = {**(nodegroup.launch_template or {}),
                                                         **update.new_launch_template}
            target = nodegroup.devstack_target_launch_template
            launch_template_copy.copy_for(ec2_backend(account, region), nodegroup, target)
    return update


def start_config_update(backend: Any, account: str, region: str, nodegroup: Any, token: str | None,
                        scaling: dict[str, int]) -> NodegroupUpdate:
    """UpdateNodegroupConfig's scalingConfig: applied at once, Successful once the nodes match it."""
    updates = settle(backend, account, region)
    with _lock:
        repeated = _repeated_or_free(updates, nodegroup, token)
        if repeated is not None:
            return repeated
        merged = {**(nodegroup.scaling_config or {}), **scaling}
        _check_scaling(nodegroup, merged)
        update = NodegroupUpdate(
            id=str(uuid.uuid4()), cluster=nodegroup.cluster_name, nodegroup=nodegroup.nodegroup_name,
            params=[{"type": f"{key[0].upper()}{key[1:]}", "value": str(value)} for key, value in scaling.items()],
            client_request_token=token, failure=None, type="ConfigUpdate",
            due_monotonic=time.monotonic() + faults.delay("nodegroup_update_seconds"),
            new_launch_template=None, new_version=None, new_release_version=None, group=nodegroup,
        )
        _updates[(account, region)].append(update)
        nodegroup.scaling_config = merged
        nodegroup.status = "UPDATING"
    return update


def _check_scaling(nodegroup: Any, scaling: dict[str, int]) -> None:
    """NodegroupScalingConfig (https://docs.aws.amazon.com/eks/latest/APIReference/API_NodegroupScalingConfig.html):
    minSize >= 0, maxSize >= 1, minSize <= desiredSize <= maxSize."""
    low, high, desired = (int(scaling.get(k, 0)) for k in ("minSize", "maxSize", "desiredSize"))
    if low < 0 or high < 1 or not low <= desired <= high:
        raise InvalidParameterException(
            clusterName=nodegroup.cluster_name, nodegroupName=nodegroup.nodegroup_name, addonName=None,
            message=f"Invalid scaling configuration {scaling}: need 0 <= minSize <= desiredSize <= maxSize, "
                    "maxSize >= 1")


def ec2_backend(account: str, region: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account][region]


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
