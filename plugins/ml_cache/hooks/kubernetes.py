"""Kubernetes calls of the rollout's validation, through the provider's KubernetesHook.

Access is a kubernetes connection when one is configured, else a kubeconfig the provider's EksHook
generates for the cluster (an exec credential that asks STS for a token), as on EKS. Every call
returns plain dicts (the API's camelCase JSON), which the pure logic in ml_cache.validation reads.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import BaseHook

ALREADY_EXISTS = 409
NOT_FOUND = 404


class CacheKubernetesHook(BaseHook):
    """Nodes by label, validation pods (create, read, list, delete by label) and their events."""

    def __init__(self, *, conn_id: str | None = None, eks_cluster: str | None = None,
                 aws_conn_id: str | None = "aws_default", namespace: str = "default") -> None:
        super().__init__()
        if not conn_id and not eks_cluster:
            raise ValueError("CacheKubernetesHook needs a kubernetes conn_id or an eks_cluster")
        self.conn_id = conn_id
        self.eks_cluster = eks_cluster
        self.aws_conn_id = aws_conn_id
        self.namespace = namespace
        self._api: Any = None

    def get_conn(self) -> Any:
        """A CoreV1Api, built once. The EKS kubeconfig file only lives while the client loads it:
        the loaded configuration keeps the exec command, which refreshes the token."""
        if self._api is None:
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

            if self.conn_id:
                self._api = KubernetesHook(conn_id=self.conn_id).core_v1_client
            else:
                from airflow.providers.amazon.aws.hooks.eks import EksHook

                eks = EksHook(aws_conn_id=self.aws_conn_id)
                with eks.generate_config_file(eks_cluster_name=self.eks_cluster,
                                              pod_namespace=self.namespace) as config_file:
                    self._api = KubernetesHook(config_file=config_file).core_v1_client
        return self._api

    def _plain(self, obj: Any) -> Any:
        return self.get_conn().api_client.sanitize_for_serialization(obj)

    def list_nodes(self, label_selector: str) -> list[dict[str, Any]]:
        return [self._plain(node) for node in self.get_conn().list_node(label_selector=label_selector).items]

    def create_pod(self, manifest: dict[str, Any]) -> bool:
        """True when created, False when a pod of that name is already there (an earlier try's)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.get_conn().create_namespaced_pod(self.namespace, manifest)
        except ApiException as error:
            if error.status != ALREADY_EXISTS:
                raise
            return False
        return True

    def read_pod(self, name: str) -> dict[str, Any]:
        return self._plain(self.get_conn().read_namespaced_pod(name, self.namespace))

    def list_pods(self, label_selector: str) -> list[dict[str, Any]]:
        pods = self.get_conn().list_namespaced_pod(self.namespace, label_selector=label_selector)
        return [self._plain(pod) for pod in pods.items]

    def list_pod_events(self, name: str) -> list[dict[str, Any]]:
        events = self.get_conn().list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
        return [self._plain(event) for event in events.items]

    def delete_pods(self, label_selector: str) -> list[str]:
        """Delete every pod matching the selector, each on its own: one failed delete does not keep
        the others. Returns the names deleted; the first API error is raised after trying them all."""
        from kubernetes.client.exceptions import ApiException

        deleted, errors = [], []
        for pod in self.list_pods(label_selector):
            name = pod["metadata"]["name"]
            try:
                self.get_conn().delete_namespaced_pod(name, self.namespace)
                deleted.append(name)
            except ApiException as error:
                if error.status != NOT_FOUND:  # gone meanwhile is what we wanted
                    errors.append(error)
        if errors:
            raise errors[0]
        return deleted
