"""Validation pods: on every node of the new launch template version, every cached image must start
from the node's store ("already present on machine"), within the start-up threshold."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.providers.common.compat.sdk import BaseOperator

from ml_cache.hooks.ec2 import CacheEc2Hook

NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
LAUNCH_TEMPLATE_VERSION_TAG = "aws:ec2launchtemplate:version"
POD_POLL_SECONDS = 0.5


class CacheValidationFailed(RuntimeError):
    """A node of the new version pulled an image, or a pod failed or started too slowly."""


@contextlib.contextmanager
def core_v1(settings: dict[str, Any], aws_conn_id: str) -> Iterator[Any]:
    """CoreV1Api through the provider's hooks: a kubernetes connection if configured, else EKS."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    if settings["kubernetes_conn_id"]:
        yield KubernetesHook(conn_id=settings["kubernetes_conn_id"]).core_v1_client
        return
    from airflow.providers.amazon.aws.hooks.eks import EksHook

    eks = EksHook(aws_conn_id=aws_conn_id)
    with eks.generate_config_file(eks_cluster_name=settings["cluster_name"],
                                  pod_namespace=settings["namespace"]) as config_file:
        yield KubernetesHook(config_file=config_file).core_v1_client


def instance_id_of(node: dict[str, Any]) -> str | None:
    """`aws:///us-west-2a/i-0abc…` -> `i-0abc…`."""
    provider_id = (node.get("spec") or {}).get("providerID") or ""
    return provider_id.rsplit("/", 1)[-1] or None


def nodes_on_version(nodes: list[dict[str, Any]], instances: dict[str, dict[str, Any]], version: str
                     ) -> list[dict[str, str]]:
    """The nodes whose EC2 instance was launched from launch template `version`."""
    selected = []
    for node in nodes:
        instance_id = instance_id_of(node)
        tags = {t["Key"]: t["Value"] for t in instances.get(instance_id or "", {}).get("Tags", [])}
        if tags.get(LAUNCH_TEMPLATE_VERSION_TAG) == str(version):
            selected.append({"node": node["metadata"]["name"], "instance_id": instance_id})
    return selected


class ValidateCacheOnNodesOperator(BaseOperator):
    """One pod per (new node, cached image), watched to completion, judged on kubelet's events.

    Pods are deleted afterwards, also when anything fails. The report (table in the log, Markdown
    for the summary) is returned and travels in the `ml_container_cache_ready` event.
    """

    template_fields: Sequence[str] = ("settings", "target", "version")

    def __init__(self, *, settings: Any, target: Any, version: Any, aws_conn_id: str = "aws_default",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.target = target
        self.version = version
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from ml_cache.validation import evaluate, report_markdown, report_table

        settings = self.settings
        images = [image["ref"] for image in self.target["images"]]
        run_id = context["ti"].run_id
        with core_v1(settings, self.aws_conn_id) as api:
            nodes = self._new_nodes(api)
            self.log.info("Validating %d image(s) on %d node(s) of version %s: %s", len(images), len(nodes),
                          self.version, [n["node"] for n in nodes])
            try:
                results = self._run_pods(api, nodes, images, run_id)
                baselines = self._run_pods(api, self._baseline_nodes(api), images, run_id, prefix="baseline")
            finally:
                self._delete_pods(api, run_id)
        report = evaluate(results, max_startup_seconds=settings["max_startup_seconds"], baselines=baselines,
                          expected_nodes=[n["node"] for n in nodes], expected_images=images)
        self.log.info("Validation report:\n%s", report_table(report))
        summary = report_markdown(report)
        self.log.info("Summary (Markdown):\n%s", summary)
        if not report.passed:
            raise CacheValidationFailed("Cache validation failed: " + "; ".join(report.failures))
        return {**report.to_dict(), "markdown": summary}

    def _nodes(self, api: Any, nodegroup: str) -> list[dict[str, Any]]:
        selector = f"{NODEGROUP_LABEL}={nodegroup}"
        return [api.api_client.sanitize_for_serialization(n) for n in api.list_node(label_selector=selector).items]

    def _new_nodes(self, api: Any) -> list[dict[str, str]]:
        nodes = self._nodes(api, self.settings["node_group_name"])
        ids = [i for i in (instance_id_of(n) for n in nodes) if i]
        instances = {i["InstanceId"]: i for i in CacheEc2Hook(aws_conn_id=self.aws_conn_id).describe_instances(ids)}
        return nodes_on_version(nodes, instances, str(self.version))

    def _baseline_nodes(self, api: Any) -> list[dict[str, str]]:
        """One node of the same instance type without the cache: the uncached start, for the ratio."""
        nodegroup = self.settings.get("baseline_node_group_name")
        if not (self.settings.get("uncached_baseline") and nodegroup):
            return []
        nodes = self._nodes(api, nodegroup)[:1]
        if not nodes:
            self.log.warning("No node in baseline node group %s: no uncached baseline", nodegroup)
        return [{"node": n["metadata"]["name"], "instance_id": instance_id_of(n)} for n in nodes]

    def _run_pods(self, api: Any, nodes: list[dict[str, str]], images: list[str], run_id: str,
                  prefix: str = "") -> list[Any]:
        from kubernetes.client.exceptions import ApiException

        from ml_cache.validation import node_result, validation_pod_manifest, validation_pod_name

        namespace = self.settings["namespace"]
        deadline_seconds = int(self.settings["validation_seconds"])
        pods = []
        for node in nodes:
            for image in images:
                manifest = validation_pod_manifest(namespace=namespace, image=image, node_name=node["node"],
                                                   active_deadline_seconds=deadline_seconds, run_id=run_id,
                                                   name=validation_pod_name(node["node"], prefix + image, run_id))
                created_at = datetime.now(UTC)
                try:
                    api.create_namespaced_pod(namespace, manifest)
                except ApiException as error:
                    if error.status != 409:  # a retried task finds its own pod
                        raise
                pods.append((node, image, manifest["metadata"]["name"], created_at))
        results = []
        deadline = time.monotonic() + deadline_seconds
        for node, image, name, created_at in pods:
            pod = self._wait_for_pod(api, namespace, name, deadline)
            events = api.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
            event_dicts = [api.api_client.sanitize_for_serialization(e) for e in events.items]
            results.append(node_result(pod, event_dicts, image=image, node=node["node"],
                                       instance_id=node["instance_id"], created_at=created_at))
        return results

    def _wait_for_pod(self, api: Any, namespace: str, name: str, deadline: float) -> dict[str, Any]:
        """Until the pod completed, or runs Ready, or the deadline: then judged as it is."""
        while True:
            pod = api.api_client.sanitize_for_serialization(api.read_namespaced_pod(name, namespace))
            status = pod.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            if status.get("phase") in ("Succeeded", "Failed") or ready or time.monotonic() > deadline:
                return pod
            time.sleep(POD_POLL_SECONDS)

    def _delete_pods(self, api: Any, run_id: str) -> None:
        from ml_cache.validation import MANAGED_BY, MANAGED_BY_LABEL, RUN_ID_LABEL, label_value

        namespace = self.settings["namespace"]
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{RUN_ID_LABEL}={label_value(run_id)}"
        for pod in api.list_namespaced_pod(namespace, label_selector=selector).items:
            with contextlib.suppress(Exception):  # cleanup must not hide the validation's own error
                api.delete_namespaced_pod(pod.metadata.name, namespace)
