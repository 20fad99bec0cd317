"""Node objects for the local GPU nodes, and the scheduler's fit test (nodeSelector, taints)."""

from __future__ import annotations

from typing import Any

from devstack import nodes as local_nodes
from devstack.demo_images import machine_architecture
from devstack.k8s.models import rfc3339

TAINT_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
KUBELET_VERSION = "v1.33.0-eks-devstack"


def labels(node: local_nodes.Node) -> dict[str, str]:
    """The labels EKS and kubelet put on a managed node group's node, plus the group's own."""
    arch = machine_architecture()  # the node runs on this machine, whatever its instance type
    return {
        "beta.kubernetes.io/arch": arch, "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux", "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": node.name,
        "node.kubernetes.io/instance-type": node.instance_type,
        "beta.kubernetes.io/instance-type": node.instance_type,
        "topology.kubernetes.io/region": node.region, "topology.kubernetes.io/zone": node.zone,
        "failure-domain.beta.kubernetes.io/zone": node.zone,
        "eks.amazonaws.com/nodegroup": node.nodegroup,
        "eks.amazonaws.com/capacityType": "ON_DEMAND",
        "eks.amazonaws.com/sourceLaunchTemplateId": node.template_id,
        "eks.amazonaws.com/sourceLaunchTemplateVersion": node.template_version,
        **node.labels,
    }


def taints(node: local_nodes.Node) -> list[dict[str, str]]:
    return [{"key": t["key"], **({"value": t["value"]} if t.get("value") else {}),
             "effect": TAINT_EFFECTS.get(t.get("effect", ""), t.get("effect", ""))} for t in node.taints]


def node_object(node: local_nodes.Node, resource_version: str) -> dict[str, Any]:
    created = rfc3339(node.created_at)
    ready_since = rfc3339(node.ready_at) if node.ready_at else created
    ready = {"type": "Ready", "status": "True" if node.ready else "False",
             "lastHeartbeatTime": ready_since, "lastTransitionTime": ready_since,
             "reason": "KubeletReady" if node.ready else "KubeletNotReady",
             "message": "kubelet is posting ready status" if node.ready
             else (node.error or "container runtime is starting")}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node.name, "uid": node.instance_id, "resourceVersion": resource_version,
                     "creationTimestamp": created, "labels": labels(node),
                     "annotations": {"alpha.kubernetes.io/provided-node-ip": node.name}},
        "spec": {"providerID": f"aws:///{node.zone}/{node.instance_id}", "taints": taints(node) or None},
        "status": {
            "conditions": [ready],
            "addresses": [{"type": "InternalDNS", "address": node.name}, {"type": "Hostname", "address": node.name}],
            "nodeInfo": {"architecture": labels(node)["kubernetes.io/arch"], "bootID": node.instance_id,
                         "containerRuntimeVersion": "containerd://1.6", "kernelVersion": "",
                         "kubeProxyVersion": KUBELET_VERSION, "kubeletVersion": KUBELET_VERSION,
                         "machineID": node.instance_id, "operatingSystem": "linux",
                         "osImage": "Amazon Linux 2023 (devstack)", "systemUUID": node.instance_id},
        },
    }


def untolerated(node: local_nodes.Node, tolerations: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The node's NoSchedule/NoExecute taints that no toleration of the pod covers."""
    left = []
    for taint in taints(node):
        if taint["effect"] == "PreferNoSchedule":
            continue
        if not any(_tolerates(toleration or {}, taint) for toleration in tolerations):
            left.append(taint)
    return left


def _tolerates(toleration: dict[str, Any], taint: dict[str, str]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint["effect"]:
        return False
    if not toleration.get("key"):
        return toleration.get("operator") == "Exists"
    if toleration["key"] != taint["key"]:
        return False
    if toleration.get("operator") == "Exists":
        return True
    return (toleration.get("value") or "") == taint.get("value", "")


def fits(node: local_nodes.Node, spec: dict[str, Any]) -> str | None:
    """None when the pod may run on the node, else why not (the scheduler's message part)."""
    if not node.ready:
        return "node(s) were not ready"
    node_labels = labels(node)
    if any(node_labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return "node(s) didn't match Pod's node affinity/selector"
    left = untolerated(node, spec.get("tolerations") or [])
    if left:
        taint = left[0]
        return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
    return None
