"""The sensor's pure decisions: which nodes, which pods, and whether a phase is done."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ml_cache.validation.manifest import validation_pod_manifest
from ml_cache.validation.pods import (
    Phase,
    created_at,
    instance_id_of,
    nodes_on_version,
    phase_of,
    plan_pods,
    pod_finished,
)

NOW = datetime(2026, 11, 29, 3, 0, 0, tzinfo=UTC)


def node(name: str, instance_id: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}, "spec": {"providerID": f"aws:///us-west-2a/{instance_id}"}}


def pod(name: str, phase: str = "Pending", created: datetime = NOW, ready: bool = False) -> dict:
    manifest = validation_pod_manifest(namespace="default", image="x:1", node_name="n1", active_deadline_seconds=60,
                                       name=name, created_at=created.isoformat(timespec="microseconds"))
    manifest["status"] = {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]}
    return manifest


def test_nodes_on_the_new_version_by_the_source_launch_template_labels():
    def on(nodegroup: str, template: str, version: str) -> dict[str, str]:
        return {"eks.amazonaws.com/nodegroup": nodegroup, "eks.amazonaws.com/sourceLaunchTemplateId": template,
                "eks.amazonaws.com/sourceLaunchTemplateVersion": version}

    nodes = [node("a", "i-0a", **on("gpu", "lt-1", "3")), node("b", "i-0b", **on("gpu", "lt-1", "2")),
             node("c", "i-0c", **on("gpu", "lt-2", "3")), node("d", "i-0d", **on("other", "lt-1", "3")),
             node("e", "i-0e", **{"eks.amazonaws.com/nodegroup": "gpu"}),
             {"metadata": {"name": "f", "labels": on("gpu", "lt-1", "3")}, "spec": {}}]
    assert nodes_on_version(nodes, "gpu", "lt-1", "3") == [{"node": "a", "instance_id": "i-0a"},
                                                           {"node": "f", "instance_id": None}]
    assert instance_id_of(nodes[5]) is None


def test_plan_names_are_stable_and_baseline_pods_are_others():
    nodes = [{"node": "a", "instance_id": "i-0a"}, {"node": "b", "instance_id": "i-0b"}]
    cached = plan_pods(nodes, ["x:1", "y:1"], "run-1")
    assert [(p.node, p.image) for p in cached] == [("a", "x:1"), ("a", "y:1"), ("b", "x:1"), ("b", "y:1")]
    assert cached == plan_pods(nodes, ["x:1", "y:1"], "run-1")
    baseline = plan_pods(nodes, ["x:1", "y:1"], "run-1", baseline=True)
    assert not {p.name for p in cached} & {p.name for p in baseline}
    assert not {p.name for p in cached} & {p.name for p in plan_pods(nodes, ["x:1", "y:1"], "run-2")}


def test_finished_pods_and_their_creation_time():
    assert not pod_finished(pod("p", "Pending")) and not pod_finished(pod("p", "Running"))
    assert pod_finished(pod("p", "Running", ready=True))
    assert pod_finished(pod("p", "Succeeded")) and pod_finished(pod("p", "Failed"))
    assert created_at(pod("p", created=NOW + timedelta(microseconds=250))) == NOW + timedelta(microseconds=250)
    assert created_at({"metadata": {"creationTimestamp": "2026-11-29T03:00:00Z"}}) == NOW
    assert created_at({"metadata": {}}) is None


def test_phases():
    planned = plan_pods([{"node": "a", "instance_id": None}, {"node": "b", "instance_id": None}], ["x:1"], "r")
    first, second = (p.name for p in planned)
    at = {"now": NOW + timedelta(seconds=30), "deadline_seconds": 60}
    assert phase_of([], {}, **at) is Phase.DONE  # nothing to validate
    assert phase_of(planned, {}, **at) is Phase.NOT_STARTED
    assert phase_of(planned, {first: pod(first, "Succeeded"), second: pod(second)}, **at) is Phase.RUNNING
    assert phase_of(planned, {first: pod(first, "Succeeded"), second: pod(second, "Failed")}, **at) is Phase.DONE
    # a pod that is gone is not waited for, nor created again: it shows as missing in the report
    assert phase_of(planned, {first: pod(first, "Succeeded")}, **at) is Phase.DONE
    # the deadline counts from the last creation; then the pods are judged as they are
    late = {"now": NOW + timedelta(seconds=61), "deadline_seconds": 60}
    assert phase_of(planned, {first: pod(first), second: pod(second)}, **late) is Phase.DONE
    assert phase_of(planned, {first: pod(first), second: pod(second, created=NOW + timedelta(seconds=5))},
                    **late) is Phase.RUNNING
