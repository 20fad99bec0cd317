"""The teardown deletes this run's validation pods, through the rollout's Kubernetes access: its real
hook against the local cloud's Kubernetes API stand-in (connection kubernetes_local)."""

from __future__ import annotations

from ml_cache.operators.validation import DeleteValidationPodsOperator
from ml_cache.settings.models import RolloutConfig
from ml_cache.validation.manifest import validation_pod_manifest
from tests.plugins.ml_cache.local_kubernetes import (  # noqa: F401 - fixtures
    KUBERNETES_CONN_ID,
    Cluster,
    cloud,
    cluster,
    connections,
)

ROLLOUT = RolloutConfig(cluster_name="ml-container-cache", node_group_name="gpu",
                        launch_template_id="lt-0123456789abcdef0", namespace="ml-cache")


def test_deletes_the_pods_of_its_run_only(cluster: Cluster) -> None:  # noqa: F811
    cluster.add_node("validated", f"gpu-{cluster.namespace}", "2")
    for run_id in ("manual__1", "manual__2"):  # this run's pod, and another run's
        cluster.core.create_namespaced_pod(cluster.namespace, validation_pod_manifest(
            namespace=cluster.namespace, image="127.0.0.1:5000/ml-cache-demo/small:1", node_name="validated",
            active_deadline_seconds=60, run_id=run_id))
    before = cluster.pods()
    ours, theirs = (next(name for name, pod in before.items() if pod["metadata"]["labels"]["ml-cache/run-id"] == run)
                    for run in ("manual__1", "manual__2"))

    rollout = ROLLOUT.model_copy(update={"kubernetes_conn_id": KUBERNETES_CONN_ID, "namespace": cluster.namespace})
    task = DeleteValidationPodsOperator(task_id="delete_validation_pods", rollout=rollout, aws_conn_id="aws_x")
    assert task.execute({"run_id": "manual__1"}) == [ours]
    assert list(cluster.pods()) == [theirs]
    assert task.execute({"run_id": "manual__1"}) == []  # nothing left is fine


def test_the_eks_hook_when_no_connection_is_configured():
    from ml_cache.sensors.validation import kubernetes_hook

    hook = kubernetes_hook(ROLLOUT, "aws_x")
    assert (hook.conn_id, hook.eks_cluster, hook.aws_conn_id, hook.namespace) == (
        None, "ml-container-cache", "aws_x", "ml-cache")
    local = kubernetes_hook(ROLLOUT.model_copy(update={"kubernetes_conn_id": "kubernetes_local"}), "aws_x")
    assert local.conn_id == "kubernetes_local"
