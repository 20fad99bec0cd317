"""The Kubernetes API stand-in, driven by the real kubernetes client (CoreV1Api) from its kubeconfig.

Two GPU nodes (a node group from a placeholder launch template: blank volume formatted by the
node's mount script), the small demo image in a loopback registry.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack import nodes, volumes
from devstack.demo_images import default_cache_dir, seed_registry
from devstack.registry import Registry
from tests.devstack.conftest import wait_for

MISSING = volumes.data_plane_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
GROUP = "gpu"
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    base = Path(tempfile.mkdtemp(prefix="k8s-r-", dir="/tmp"))
    previous = os.environ.get("DEVSTACK_PLAIN_HTTP_REGISTRIES")
    try:
        with Registry(base / "storage") as running:
            ref = seed_registry(running.address, default_cache_dir(), include_large=False)["small"]
            os.environ["DEVSTACK_PLAIN_HTTP_REGISTRIES"] = running.address
            yield ref
    finally:
        if previous is None:
            os.environ.pop("DEVSTACK_PLAIN_HTTP_REGISTRIES", None)
        else:
            os.environ["DEVSTACK_PLAIN_HTTP_REGISTRIES"] = previous
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(cloud, image) -> Iterator[str]:
    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=cloud.endpoint, region_name="us-west-2",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    ec2, eks, iam = client("ec2"), client("eks"), client("iam")
    nodes.enable(True)
    name = f"k8s-{time.monotonic_ns()}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{i}.0/24", AvailabilityZone=f"us-west-2{az}")[
        "Subnet"]["SubnetId"] for i, az in ((1, "a"), (2, "c"))]
    template = ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "InstanceType": "g6e.xlarge", "BlockDeviceMappings": [
            {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": True}}]})
    eks.create_cluster(name=name, roleArn=role, resourcesVpcConfig={"subnetIds": subnets})
    eks.create_nodegroup(clusterName=name, nodegroupName=GROUP, nodeRole=role, subnets=subnets,
                         scalingConfig={"minSize": 1, "maxSize": 2, "desiredSize": 2},
                         labels={"ml-cache/enabled": "true"},
                         taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}],
                         launchTemplate={"id": template["LaunchTemplate"]["LaunchTemplateId"], "version": "1"})
    wait_for(lambda: len([n for n in nodes.all_nodes() if n.cluster == name and n.ready]) == 2, 120, "2 nodes Ready")
    try:
        yield name
    finally:
        eks.delete_nodegroup(clusterName=name, nodegroupName=GROUP)
        wait_for(lambda: not [n for n in nodes.all_nodes() if n.cluster == name], 120, "nodes removed")
        nodes.enable(None)


@pytest.fixture(scope="module")
def core(cloud) -> Any:
    from kubernetes import client, config

    with urllib.request.urlopen(cloud.endpoint + "/_devstack/state", timeout=10) as answer:  # noqa: S310
        kubeconfig = json.load(answer)["kubernetes"]["kubeconfig"]
    assert Path(kubeconfig) == Path(cloud.home) / "kubeconfig"
    return client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))


def pod_body(name: str, image: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": image, "imagePullPolicy": "IfNotPresent"}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"suite": "k8s-api"}},
            "spec": {"restartPolicy": "Never", "containers": [container], **spec}}


def events_of(core: Any, name: str) -> list[Any]:
    found = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name},"
                                       "involvedObject.kind=Pod").items
    return sorted(found, key=lambda e: e.event_time)


def test_version_and_nodes_with_label_selector(core, cluster) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    assert client.VersionApi(core.api_client).get_code().git_version.startswith("v1.33")
    listed = core.list_node(label_selector=f"eks.amazonaws.com/nodegroup={GROUP},ml-cache/enabled=true").items
    listed = [n for n in listed if n.metadata.name in {x.name for x in nodes.all_nodes() if x.cluster == cluster}]
    assert len(listed) == 2
    zones = set()
    for node in listed:
        labels = node.metadata.labels
        assert labels["node.kubernetes.io/instance-type"] == "g6e.xlarge"
        assert labels["kubernetes.io/hostname"] == node.metadata.name
        assert node.metadata.name.endswith(".us-west-2.compute.internal")
        zones.add(labels["topology.kubernetes.io/zone"])
        assert node.spec.provider_id == f"aws:///{labels['topology.kubernetes.io/zone']}/{node.metadata.uid}"
        assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [("nvidia.com/gpu", "true", "NoSchedule")]
        assert [(c.type, c.status) for c in node.status.conditions] == [("Ready", "True")]
    assert zones == {"us-west-2a", "us-west-2c"}  # one node per subnet
    assert core.read_node(listed[0].metadata.name).metadata.uid == listed[0].metadata.uid
    assert core.list_node(label_selector="eks.amazonaws.com/nodegroup=nope").items == []
    with pytest.raises(ApiException) as missing:
        core.read_node("ip-10-0-0-1.nowhere")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["reason"] == "NotFound"


def test_pod_without_toleration_stays_pending_with_failed_scheduling(core, cluster, image) -> None:
    core.create_namespaced_pod("default", pod_body("no-toleration", image,
                                                   nodeSelector={"eks.amazonaws.com/nodegroup": GROUP}))
    try:
        event = wait_for(lambda: [e for e in events_of(core, "no-toleration") if e.reason == "FailedScheduling"],
                         15, "FailedScheduling")[0]
        assert event.type == "Warning" and event.source.component == "default-scheduler"
        assert "untolerated taint {nvidia.com/gpu: true}" in event.message
        pod = core.read_namespaced_pod("no-toleration", "default")
        assert pod.status.phase == "Pending" and pod.spec.node_name is None
        scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
        assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")
    finally:
        core.delete_namespaced_pod("no-toleration", "default")


def test_pod_lifecycle_through_the_client(core, cluster, image) -> None:
    from kubernetes.client.rest import ApiException

    body = pod_body("hello", image, nodeSelector={"eks.amazonaws.com/nodegroup": GROUP}, tolerations=[TOLERATION],
                    container={"command": ["/bin/sh", "-c"], "args": ["echo hello; echo $GREETING"],
                               "env": [{"name": "GREETING", "value": "from-env"}]})
    created = core.create_namespaced_pod("default", body)
    assert created.metadata.uid and created.metadata.resource_version and created.status.phase == "Pending"
    with pytest.raises(ApiException) as duplicate:
        core.create_namespaced_pod("default", body)
    assert duplicate.value.status == 409 and json.loads(duplicate.value.body)["reason"] == "AlreadyExists"
    pod = wait_for(lambda: (p := core.read_namespaced_pod("hello", "default")).status.phase in ("Succeeded", "Failed")
                   and p, 120, "pod finished")
    assert pod.status.phase == "Succeeded"
    node = pod.spec.node_name
    log = core.read_namespaced_pod_log("hello", "default", _preload_content=False).data.decode()
    assert log.split() == ["hello", "from-env"]
    reasons = [e.reason for e in events_of(core, "hello")]
    assert reasons[0] == "Scheduled" and reasons[-2:] == ["Created", "Started"]
    assert reasons[1:-2] in (["Pulling", "Pulled"], ["Pulled"])  # the first pod on a node pulls
    assert all(e.event_time.microsecond or e.event_time.second for e in events_of(core, "hello"))
    by_node = core.list_namespaced_pod("default", field_selector=f"spec.nodeName={node}",
                                       label_selector="suite=k8s-api").items
    assert "hello" in [p.metadata.name for p in by_node]
    assert core.list_namespaced_pod("default", label_selector="suite=other").items == []
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0 and terminated.reason == "Completed"
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert ready.last_transition_time.microsecond == 0  # whole seconds, as the real API
    core.delete_namespaced_pod("hello", "default")
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_pod("hello", "default")
    assert gone.value.status == 404


def test_image_pull_failure_backs_off_and_stays_pending(core, cluster, image) -> None:
    missing = image.split("@")[0].replace("/small:", "/absent:")
    core.create_namespaced_pod("default", pod_body("bad-image", missing, tolerations=[TOLERATION]))
    try:
        wait_for(lambda: "Error: ImagePullBackOff" in [e.message for e in events_of(core, "bad-image")], 60,
                 "ImagePullBackOff")
        events = events_of(core, "bad-image")
        messages = {e.reason: e.message for e in events}
        assert messages["Pulling"] == f'Pulling image "{missing}"'
        failed = [e.message for e in events if e.reason == "Failed"]
        assert failed[0].startswith(f'Failed to pull image "{missing}"') and "Error: ErrImagePull" in failed
        assert messages["BackOff"] == f'Back-off pulling image "{missing}"'
        pod = core.read_namespaced_pod("bad-image", "default")
        assert pod.status.phase == "Pending"
        assert pod.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
    finally:
        core.delete_namespaced_pod("bad-image", "default")


def test_delete_stops_a_running_container(core, cluster, image) -> None:
    core.create_namespaced_pod("default", pod_body("sleeper", image, tolerations=[TOLERATION],
                                                   container={"command": ["sleep", "300"]}))
    pod = wait_for(lambda: (p := core.read_namespaced_pod("sleeper", "default")).status.phase == "Running" and p,
                   120, "Running")
    assert pod.status.container_statuses[0].state.running.started_at is not None
    node = nodes.get(pod.spec.node_name)
    assert node is not None
    assert node.ctr("tasks", "ls", "-q").stdout.split() != []
    core.delete_namespaced_pod("sleeper", "default")
    wait_for(lambda: node.ctr("tasks", "ls", "-q").stdout.split() == [], 30, "task killed")
    wait_for(lambda: node.ctr("containers", "ls", "-q").stdout.split() == [], 30, "container removed")


def test_pull_policy_never_without_the_image(core, cluster, image) -> None:
    missing = image.split("@")[0].replace("/small:", "/never-pulled:")
    core.create_namespaced_pod("default", pod_body("never", missing, tolerations=[TOLERATION],
                                                   container={"imagePullPolicy": "Never"}))
    try:
        event = wait_for(lambda: [e for e in events_of(core, "never") if e.reason == "ErrImageNeverPull"], 60,
                         "ErrImageNeverPull")[0]
        assert event.type == "Warning"
        assert event.message == f'Container image "{missing}" is not present with pull policy of Never'
        assert "Pulling" not in [e.reason for e in events_of(core, "never")]
        waiting = core.read_namespaced_pod("never", "default").status.container_statuses[0].state.waiting
        assert waiting.reason == "ErrImageNeverPull"
    finally:
        core.delete_namespaced_pod("never", "default")


def test_a_kubelet_outside_registers_its_node_writes_pod_status_and_posts_events(core) -> None:
    """The endpoints a test playing the kubelet uses: its pods are left to it, not run here."""
    from kubernetes.client.rest import ApiException

    labels = {"eks.amazonaws.com/nodegroup": "played"}
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "played-1", "labels": labels},
            "spec": {"providerID": "aws:///us-west-2a/i-0played0000000001"}}
    created = core.create_node(body)
    try:
        assert created.metadata.uid and created.spec.provider_id == "aws:///us-west-2a/i-0played0000000001"
        with pytest.raises(ApiException) as twice:
            core.create_node(body)
        assert twice.value.status == 409
        listed = core.list_node(label_selector="eks.amazonaws.com/nodegroup=played").items
        assert [n.metadata.name for n in listed] == ["played-1"]
        assert core.read_node("played-1").metadata.uid == created.metadata.uid

        core.create_namespaced_pod("played", pod_body("bound", "127.0.0.1:5999/none:1", nodeName="played-1"))
        time.sleep(1.5)  # a scheduler pass or more: nothing runs it, nothing is recorded
        pod = core.read_namespaced_pod_status("bound", "played")
        assert pod.status.phase == "Pending" and events_of_in(core, "played", "bound") == []

        status = {"phase": "Succeeded", "startTime": "2026-12-01T10:00:01Z",
                  "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted",
                                  "lastTransitionTime": "2026-12-01T10:00:03Z"}]}
        sent = core.api_client.sanitize_for_serialization(pod)
        replaced = core.replace_namespaced_pod_status("bound", "played", {**sent, "status": status})
        assert replaced.status.phase == "Succeeded" and replaced.spec.node_name == "played-1"
        assert int(replaced.metadata.resource_version) > int(pod.metadata.resource_version)
        with pytest.raises(ApiException) as stale:  # written from an old read: the API refuses it
            core.replace_namespaced_pod_status("bound", "played", {**sent, "status": {"phase": "Failed"}})
        assert stale.value.status == 409 and json.loads(stale.value.body)["reason"] == "Conflict"
        assert core.read_namespaced_pod("bound", "played").status.phase == "Succeeded"

        event = {"metadata": {"name": "bound.1", "namespace": "played"}, "reason": "Pulled",
                 "message": 'Container image "x" already present on machine', "type": "Normal",
                 "involvedObject": {"kind": "Pod", "namespace": "played", "name": "bound", "uid": pod.metadata.uid},
                 "source": {"component": "kubelet", "host": "played-1"}, "firstTimestamp": "2026-12-01T10:00:02Z"}
        core.create_namespaced_event("played", event)
        (recorded,) = events_of_in(core, "played", "bound")
        assert (recorded.reason, recorded.source.host, recorded.involved_object.uid) == (
            "Pulled", "played-1", pod.metadata.uid)
        with pytest.raises(ApiException) as duplicate:
            core.create_namespaced_event("played", event)
        assert duplicate.value.status == 409
        with pytest.raises(ApiException) as elsewhere:
            core.create_namespaced_event("default", {**event, "metadata": {"name": "bound.2"}})
        assert elsewhere.value.status == 422
        core.delete_namespaced_pod("bound", "played")
    finally:
        core.delete_node("played-1")
    with pytest.raises(ApiException) as gone:
        core.read_node("played-1")
    assert gone.value.status == 404


def test_nodes_of_the_local_node_groups_are_not_deleted_through_the_api(core, cluster) -> None:
    from kubernetes.client.rest import ApiException

    name = next(n.name for n in nodes.all_nodes() if n.cluster == cluster)
    with pytest.raises(ApiException) as refused:
        core.delete_node(name)
    assert refused.value.status == 405
    assert core.read_node(name).metadata.name == name


def events_of_in(core: Any, namespace: str, name: str) -> list[Any]:
    return core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
