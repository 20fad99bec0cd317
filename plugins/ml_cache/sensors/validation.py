"""Validation pods: on every node of the new launch template version, every cached image must start
from the node's store ("already present on machine"), within the start-up threshold.

A sensor in poke mode, not a deferrable operator, because:
- the measurement does not depend on when we look: every timestamp comes from the kubelet and the
  API server, so a poke every `poll_seconds` loses nothing against a watch;
- the triggerer would add nothing to a poll whose answer is already in the API server's objects;
- the triggerer would need its own Kubernetes access (an EKS kubeconfig with an exec credential,
  an async client); pokes use the same hook as the teardown;
- poke mode works under `dag.test()` (the DAG tests run it).
Poke, not reschedule: Airflow 3.3 can fail a reschedule-mode poke whose previous poke's exit it had not
yet processed (the executor's stale "success" for the same try: apache/airflow#71172, fix open in #71194),
which showed every rollout a failed first try (`make run` hit it with 2 s pokes). Holding one worker slot
for the validation (at most 2 x `validation_seconds`, once per rollout) costs less than that confusion.
Each poke is stateless: it lists this run's pods, creates a phase's pods when none exists yet
(cached first; once they finished, the uncached baseline, so its pulls never overlap the cached
starts), and when both phases are done judges them and returns the report. `validation_seconds`
after a phase's pods were created, they are judged as they are. The pods are deleted by the
DeleteValidationPodsOperator teardown, also when this fails.

Retries are safe because of that: a retry finds the pods the first try created (the teardown
waits for the last try) and judges the same evidence; it never creates a pod again, so a first try
that made the kubelet pull cannot turn into a "hit" (a worker lost mid-wait is retried).
A failed verdict is final, though: CacheValidationFailed is an AirflowFailException, never retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseSensorOperator, PokeReturnValue

from ml_cache.hooks.kubernetes import CacheKubernetesHook
from ml_cache.settings.models import RolloutConfig
from ml_cache.validation.manifest import run_selector, validation_pod_manifest
from ml_cache.validation.pods import (
    Phase,
    PlannedPod,
    instance_id_of,
    nodegroup_selector,
    nodes_on_version,
    phase_of,
    plan_pods,
)
from ml_cache.validation.report import evaluate, node_result, report_markdown, report_table

# only a backstop: each phase ends by itself `validation_seconds` after its pods were created
SENSOR_TIMEOUT_MARGIN_SECONDS = 600


class CacheValidationFailed(AirflowFailException):
    """A node of the new version pulled an image, or a pod failed or started too slowly."""


def kubernetes_hook(rollout: RolloutConfig, aws_conn_id: str) -> CacheKubernetesHook:
    """The rollout's Kubernetes access: `kubernetes_conn_id` if configured, else EKS."""
    return CacheKubernetesHook(conn_id=rollout.kubernetes_conn_id, eks_cluster=rollout.cluster_name,
                               aws_conn_id=aws_conn_id, namespace=rollout.namespace)


class ValidateCacheOnNodesSensor(BaseSensorOperator):
    """One pod per (new node, cached image), judged on kubelet's events once all finished.

    Returns the report (logged as a plain table; a Markdown summary under `markdown`), which
    travels in the `ml_container_cache_ready` event; raises CacheValidationFailed when it failed.
    """

    template_fields: Sequence[str] = ("rollout", "target", "version", "deadline_seconds", "poll_seconds")

    def __init__(self, *, rollout: RolloutConfig, target: dict[str, Any], version: str, deadline_seconds: int,
                 poll_seconds: int, aws_conn_id: str = "aws_default", **kwargs: Any) -> None:
        kwargs.setdefault("mode", "poke")
        super().__init__(**kwargs)
        self.rollout = rollout
        self.target = target
        self.version = version
        self.deadline_seconds = deadline_seconds
        self.poll_seconds = poll_seconds
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> Any:
        # rendered only now: the poke interval and the backstop come from the run's settings
        self.poke_interval = float(self.poll_seconds)
        self.timeout = 2 * float(self.deadline_seconds) + SENSOR_TIMEOUT_MARGIN_SECONDS
        return super().execute(context)

    def poke(self, context: Any) -> bool | PokeReturnValue:
        run_id = context["run_id"]
        images = [image["ref"] for image in self.target["images"]]
        hook = kubernetes_hook(self.rollout, self.aws_conn_id)
        pods = {pod["metadata"]["name"]: pod for pod in hook.list_pods(run_selector(run_id))}
        cached = plan_pods(self._new_nodes(hook), images, run_id)
        if not self._phase_done(hook, cached, pods, run_id, "cached"):
            return False
        baseline = plan_pods(self._baseline_nodes(hook), images, run_id, baseline=True)
        if not self._phase_done(hook, baseline, pods, run_id, "baseline"):
            return False
        report = evaluate(self._results(hook, cached, pods), baselines=self._results(hook, baseline, pods),
                          max_startup_seconds=self.rollout.max_startup_seconds,
                          expected_nodes=sorted({p.node for p in cached}), expected_images=images)
        self.log.info("Validation report:\n%s", report_table(report))  # plain text; Markdown only in XCom
        summary = report_markdown(report)
        if not report.passed:
            raise CacheValidationFailed("Cache validation failed: " + "; ".join(report.failures))
        return PokeReturnValue(is_done=True, xcom_value={**report.to_dict(), "markdown": summary})

    def _phase_done(self, hook: CacheKubernetesHook, planned: list[PlannedPod], pods: dict[str, Any],
                    run_id: str, kind: str) -> bool:
        deadline = int(self.deadline_seconds)
        phase = phase_of(planned, pods, now=datetime.now(UTC), deadline_seconds=deadline)
        if phase is Phase.NOT_STARTED:
            self.log.info("Validating %d %s pod(s) on %d node(s) of version %s: %s", len(planned), kind,
                          len({p.node for p in planned}), self.version, sorted({p.node for p in planned}))
            for pod in planned:
                manifest = validation_pod_manifest(
                    namespace=self.rollout.namespace, image=pod.image, node_name=pod.node,
                    active_deadline_seconds=deadline, run_id=run_id, name=pod.name,
                    created_at=datetime.now(UTC).isoformat(timespec="microseconds"))
                hook.create_pod(manifest)
        return phase is Phase.DONE

    def _results(self, hook: CacheKubernetesHook, planned: list[PlannedPod], pods: dict[str, Any]) -> list[Any]:
        """A pod never created (or gone) has no result: evaluate names it as missing."""
        return [node_result(pods[p.name], hook.list_pod_events(p.name), image=p.image, node=p.node,
                            instance_id=p.instance_id)
                for p in planned if p.name in pods]

    def _new_nodes(self, hook: CacheKubernetesHook) -> list[dict[str, Any]]:
        """By the source launch template labels, never the instance tags (those name EKS's copy)."""
        nodegroup = self.rollout.node_group_name
        return nodes_on_version(hook.list_nodes(nodegroup_selector(nodegroup)), nodegroup,
                                self.rollout.launch_template_id, str(self.version))

    def _baseline_nodes(self, hook: CacheKubernetesHook) -> list[dict[str, Any]]:
        """One node of the same instance type without the cache: the uncached start, for the ratio."""
        nodegroup = self.rollout.baseline_node_group_name
        if not (self.rollout.uncached_baseline and nodegroup):
            return []
        nodes = hook.list_nodes(nodegroup_selector(nodegroup))[:1]
        if not nodes:
            self.log.warning("No node in baseline node group %s: no uncached baseline", nodegroup)
        return [{"node": n["metadata"]["name"], "instance_id": instance_id_of(n)} for n in nodes]
