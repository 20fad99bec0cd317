"""The teardown deletes this run's validation pods, through the rollout's Kubernetes access."""

from __future__ import annotations

from ml_cache.operators import validation as operator_module
from ml_cache.operators.validation import DeleteValidationPodsOperator
from ml_cache.settings.models import RolloutConfig
from ml_cache.validation.manifest import run_selector

ROLLOUT = RolloutConfig(cluster_name="ml-container-cache", node_group_name="gpu",
                        launch_template_id="lt-0123456789abcdef0", namespace="ml-cache")


def test_deletes_the_pods_of_its_run_only(monkeypatch):
    asked = []

    class Hook:
        def delete_pods(self, label_selector: str) -> list[str]:
            asked.append(label_selector)
            return ["mlc-validate-0123456789ab"]

    def kubernetes_hook(rollout, aws_conn_id):
        asked.append((rollout.cluster_name, rollout.namespace, aws_conn_id))
        return Hook()

    monkeypatch.setattr(operator_module, "kubernetes_hook", kubernetes_hook)
    task = DeleteValidationPodsOperator(task_id="delete_validation_pods", rollout=ROLLOUT, aws_conn_id="aws_x")
    assert task.execute({"run_id": "manual__1"}) == ["mlc-validate-0123456789ab"]
    assert asked == [("ml-container-cache", "ml-cache", "aws_x"), run_selector("manual__1")]


def test_the_eks_hook_when_no_connection_is_configured():
    from ml_cache.sensors.validation import kubernetes_hook

    hook = kubernetes_hook(ROLLOUT, "aws_x")
    assert (hook.conn_id, hook.eks_cluster, hook.aws_conn_id, hook.namespace) == (
        None, "ml-container-cache", "aws_x", "ml-cache")
    local = kubernetes_hook(ROLLOUT.model_copy(update={"kubernetes_conn_id": "kubernetes_local"}), "aws_x")
    assert local.conn_id == "kubernetes_local"
