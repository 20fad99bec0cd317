"""Which validation pods a rollout needs, and how far they got: the sensor's decisions, as pure logic.

Each poke of the sensor starts from nothing (it keeps no state between pokes, so a retry can judge), so
everything is recomputed from the cluster: the planned pods (their names are stable per node,
image and run), the pods that exist, and their creation time, which the creating client wrote
into an annotation. No airflow or kubernetes import here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from ml_cache.validation.evidence import parse_timestamp
from ml_cache.validation.manifest import CREATED_AT_ANNOTATION, validation_pod_name

NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
# EKS launches a node group's instances from its own copy of our launch template, so the instances'
# aws:ec2launchtemplate:* tags name the copy; only these node labels name our template and version
# (https://docs.aws.amazon.com/eks/latest/userguide/launch-templates.html).
SOURCE_TEMPLATE_ID_LABEL = "eks.amazonaws.com/sourceLaunchTemplateId"
SOURCE_TEMPLATE_VERSION_LABEL = "eks.amazonaws.com/sourceLaunchTemplateVersion"
BASELINE_PREFIX = "baseline"


def instance_id_of(node: Mapping[str, Any]) -> str | None:
    """`aws:///us-west-2a/i-0abc…` -> `i-0abc…`."""
    provider_id = (node.get("spec") or {}).get("providerID") or ""
    return provider_id.rsplit("/", 1)[-1] or None


def nodegroup_selector(nodegroup: str) -> str:
    return f"{NODEGROUP_LABEL}={nodegroup}"


def nodes_on_version(nodes: list[dict[str, Any]], nodegroup: str, template_id: str, version: str
                     ) -> list[dict[str, str | None]]:
    """The nodes of `nodegroup` launched from version `version` of our launch template `template_id`."""
    wanted = {NODEGROUP_LABEL: nodegroup, SOURCE_TEMPLATE_ID_LABEL: template_id,
              SOURCE_TEMPLATE_VERSION_LABEL: str(version)}
    return [{"node": node["metadata"]["name"], "instance_id": instance_id_of(node)} for node in nodes
            if wanted.items() <= ((node.get("metadata") or {}).get("labels") or {}).items()]


@dataclass(frozen=True)
class PlannedPod:
    """One (node, image) to validate; `name` is the pod's, stable for the run."""

    name: str
    node: str
    instance_id: str | None
    image: str


def plan_pods(nodes: list[dict[str, Any]], images: list[str], run_id: str, *, baseline: bool = False
              ) -> list[PlannedPod]:
    """Every (node, image) pair; baseline pods get other names than cached ones on the same node."""
    prefix = BASELINE_PREFIX if baseline else ""
    return [PlannedPod(validation_pod_name(node["node"], prefix + image, run_id), node["node"],
                       node.get("instance_id"), image)
            for node in nodes for image in images]


class Phase(Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    DONE = "done"


def pod_finished(pod: Mapping[str, Any]) -> bool:
    """Completed (Succeeded or Failed), or running Ready: then it is judged as it is."""
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return status.get("phase") in ("Succeeded", "Failed") or ready


def created_at(pod: Mapping[str, Any]) -> datetime | None:
    """When the pod was created: the creating client's annotation, else creationTimestamp."""
    metadata = pod.get("metadata") or {}
    instant = (parse_timestamp((metadata.get("annotations") or {}).get(CREATED_AT_ANNOTATION))
               or parse_timestamp(metadata.get("creationTimestamp")))
    return instant.at if instant else None


def phase_of(planned: list[PlannedPod], pods: Mapping[str, Mapping[str, Any]], *, now: datetime,
             deadline_seconds: float) -> Phase:
    """NOT_STARTED: none of the planned pods exists (so they are created now, all at once: a pod
    that exists is never created again, so a deleted pod cannot come back as a "hit").
    DONE: nothing planned, every existing pod finished, or `deadline_seconds` passed since the last
    one was created (then the pods are judged as they are)."""
    if not planned:
        return Phase.DONE
    present = [pods[p.name] for p in planned if p.name in pods]
    if not present:
        return Phase.NOT_STARTED
    if all(pod_finished(pod) for pod in present):
        return Phase.DONE
    created = [at for at in (created_at(pod) for pod in present) if at is not None]
    if created and now > max(created) + timedelta(seconds=deadline_seconds):
        return Phase.DONE
    return Phase.RUNNING
