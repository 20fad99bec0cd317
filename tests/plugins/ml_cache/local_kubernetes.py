"""The rollout's cluster at the protocol level: the local cloud's Kubernetes API stand-in and its EC2,
reached through the Airflow connections `kubernetes_local` and `aws_default`, as the DAG reaches them.

Nodes are registered through the API with the labels EKS gives a managed node group's nodes (the
node group, the source launch template id and version) for instances launched from EKS's own copy
of the template (its id and versions differ from ours), so the code under test finds them as on
EKS. The local cloud runs no pod bound to such a node: the test is their kubelet, and `Cluster.finish` ends pods as a
recorded pod ended, writing its status (PUT pods/status) and its events (POST events) with the
recorded times moved to just after the pod's creation.
"""

from __future__ import annotations

import json
import math
import re
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from ml_cache.validation.manifest import CREATED_AT_ANNOTATION
from tests.devstack.conftest import cloud  # noqa: F401 - the session's local cloud
from tests.plugins.ml_cache.validation.recorded import recorded

REGION = "us-west-2"
KUBERNETES_CONN_ID = "kubernetes_local"
EKS_AMI = "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id"
NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
SOURCE_ID_LABEL = "eks.amazonaws.com/sourceLaunchTemplateId"
SOURCE_VERSION_LABEL = "eks.amazonaws.com/sourceLaunchTemplateVersion"
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z")


class Cluster:
    """One test's namespace, launch template, instances and registered nodes; the kubelet's writes."""

    def __init__(self, core: Any, ec2: Any, ssm: Any) -> None:
        self.core, self.ec2 = core, ec2
        self.namespace = f"mlc-{uuid.uuid4().hex[:8]}"
        self.image_id = ssm.get_parameter(Name=EKS_AMI)["Parameter"]["Value"]
        self.instances: list[str] = []
        self.nodes: list[str] = []
        self._template_id: str | None = None

    @property
    def template_id(self) -> str:
        """Our launch template, at versions 1 and 2 (what a rollout moves the node group from and to)."""
        if self._template_id is None:
            data = {"ImageId": self.image_id, "InstanceType": "g6e.xlarge"}
            self._template_id = self.ec2.create_launch_template(
                LaunchTemplateName=self.namespace, LaunchTemplateData=data)["LaunchTemplate"]["LaunchTemplateId"]
            self.ec2.create_launch_template_version(LaunchTemplateId=self._template_id, SourceVersion="1",
                                                    LaunchTemplateData=data)
        return self._template_id

    def launch(self) -> str:
        """An instance from EKS's copy of the template: its EC2 tags name the copy, never our version."""
        copy = self.ec2.create_launch_template(
            LaunchTemplateName=f"eks-{uuid.uuid4()}", LaunchTemplateData={"ImageId": self.image_id,
                                                                          "InstanceType": "g6e.xlarge"})
        source = {"LaunchTemplate": {"LaunchTemplateId": copy["LaunchTemplate"]["LaunchTemplateId"], "Version": "1"}}
        instance_id = self.ec2.run_instances(MinCount=1, MaxCount=1, **source)["Instances"][0]["InstanceId"]
        self.instances.append(instance_id)
        return instance_id

    def add_node(self, name: str, nodegroup: str, version: str | None) -> str:
        """A node of `nodegroup` on a new instance, registered as its kubelet would, labelled with the
        source launch template `version` (none: not from our template); its instance id."""
        instance_id = self.launch()
        labels = {NODEGROUP_LABEL: nodegroup}
        if version:
            labels.update({SOURCE_ID_LABEL: self.template_id, SOURCE_VERSION_LABEL: version})
        self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
                               "spec": {"providerID": f"aws:///{REGION}a/{instance_id}"}})
        self.nodes.append(name)
        return instance_id

    def remove_node(self, name: str) -> None:
        self.core.delete_node(name)
        self.nodes.remove(name)

    def pods(self) -> dict[str, dict[str, Any]]:
        """The namespace's pods as plain dicts, by name, in creation order."""
        listed = self.core.list_namespaced_pod(self.namespace).items
        return {pod.metadata.name: self.core.api_client.sanitize_for_serialization(pod) for pod in listed}

    def finish(self, names: list[str], fixture: str) -> None:
        """The kubelet's writes: each pod ends as the recorded one did (status, then events)."""
        recorded_pod, events = recorded(fixture)
        for name in names:
            pod = self.core.api_client.sanitize_for_serialization(self.core.read_namespaced_pod(name, self.namespace))
            rewrite = _rewriter(recorded_pod, pod)
            self.core.replace_namespaced_pod_status(name, self.namespace,
                                                    {**pod, "status": rewrite(recorded_pod["status"])})
            involved = {"name": name, "namespace": self.namespace, "uid": pod["metadata"]["uid"],
                        "resourceVersion": pod["metadata"]["resourceVersion"]}
            for event in events:
                event = rewrite(event)
                self.core.create_namespaced_event(self.namespace, {
                    **event, "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": self.namespace},
                    "involvedObject": {**event["involvedObject"], **involved}})

    def close(self) -> None:
        for name in list(self.nodes):
            self.remove_node(name)
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            self.core.delete_namespaced_pod(pod.metadata.name, self.namespace)
        if self.instances:
            self.ec2.terminate_instances(InstanceIds=self.instances)


def _rewriter(recorded_pod: dict[str, Any], pod: dict[str, Any]) -> Any:
    """Recorded values -> this pod's (name, node, image); recorded times -> the same offsets after
    this pod's creation, rounded up to whole seconds so every time stays as precise as recorded."""
    created = datetime.fromisoformat(pod["metadata"]["annotations"][CREATED_AT_ANNOTATION])
    origin = _instant(recorded_pod["metadata"]["creationTimestamp"])
    shift = timedelta(seconds=math.ceil((created - origin).total_seconds()))
    recorded_meta, meta = recorded_pod["metadata"], pod["metadata"]
    names = {f"{recorded_meta['namespace']}/{recorded_meta['name']}": f"{meta['namespace']}/{meta['name']}",
             recorded_pod["spec"]["nodeName"]: pod["spec"]["nodeName"],
             recorded_pod["spec"]["containers"][0]["image"]: pod["spec"]["containers"][0]["image"]}

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: rewrite(item) for key, item in value.items()}
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        if isinstance(value, str) and (match := _TIMESTAMP.fullmatch(value)):
            moved = _instant(value) + shift
            fraction = f".{moved.microsecond:06d}"[:len(match.group(2))] if match.group(2) else ""
            return moved.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"
        if isinstance(value, str):
            for old, new in names.items():
                value = value.replace(old, new)
        return value

    return rewrite


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@pytest.fixture
def connections(cloud, monkeypatch) -> Any:  # noqa: F811
    """`aws_default` and `kubernetes_local` pointing at the local cloud, as `make run` configures them."""
    with urllib.request.urlopen(cloud.endpoint + "/_devstack/state", timeout=10) as answer:  # noqa: S310
        kubeconfig = json.load(answer)["kubernetes"]["kubeconfig"]
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(
        {"conn_type": "aws", "login": "testing", "password": "testing",
         "extra": {"region_name": REGION, "endpoint_url": cloud.endpoint}}))
    monkeypatch.setenv(f"AIRFLOW_CONN_{KUBERNETES_CONN_ID.upper()}", json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config_path": kubeconfig}}))
    return cloud, kubeconfig


@pytest.fixture
def cluster(connections) -> Iterator[Cluster]:
    """A fresh namespace on the stand-in, with clients the test (the kubelet, EC2's console) uses."""
    from kubernetes import client, config

    handle, kubeconfig = connections

    def aws(service: str) -> Any:
        return boto3.client(service, endpoint_url=handle.endpoint, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    made = Cluster(core, aws("ec2"), aws("ssm"))
    try:
        yield made
    finally:
        made.close()
