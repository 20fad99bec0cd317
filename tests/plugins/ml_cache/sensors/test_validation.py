"""The validation sensor, poke by poke, with its real hooks against the local cloud: the Kubernetes
API stand-in (kubernetes_local), whose nodes say by EKS's source launch template labels which are on
the new version (their instances come from EKS's copy of the template: the EC2 tags name the copy).

The test is the nodes' kubelet: pods "finish" as recorded ones (validation/fixtures/) did, a cache
hit, or a pull for a miss and the baseline, written through the API (pod status, events).
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from ml_cache.sensors.validation import CacheValidationFailed, ValidateCacheOnNodesSensor
from ml_cache.settings.models import RolloutConfig
from ml_cache.validation.manifest import CREATED_AT_ANNOTATION, RUN_ID_LABEL, label_value
from tests.plugins.ml_cache.local_kubernetes import (  # noqa: F401 - fixtures
    KUBERNETES_CONN_ID,
    Cluster,
    cloud,
    cluster,
    connections,
)

IMAGE = "127.0.0.1:5000/ml-cache-demo/large:1"  # the image of the recorded pods
RUN_ID = "manual__2026-11-29T02:36:21.123456+00:00"


def nodegroups(cluster: Cluster) -> tuple[str, str]:  # noqa: F811
    """The rollout's node group and the uncached baseline's, this test's own."""
    return f"gpu-{cluster.namespace}", f"plain-{cluster.namespace}"


@pytest.fixture
def instance_ids(cluster: Cluster) -> dict[str, str]:  # noqa: F811
    """The rollout's node group: two nodes on launch template version 2, one still on 1; one baseline node."""
    gpu, baseline = nodegroups(cluster)
    ids = {name: cluster.add_node(name, gpu, version) for name, version in (("new-1", "2"), ("new-2", "2"),
                                                                              ("old", "1"))}
    return {**ids, "plain": cluster.add_node("plain", baseline, None)}


def sensor(cluster: Cluster, deadline_seconds: int = 120, **changes) -> ValidateCacheOnNodesSensor:  # noqa: F811
    gpu, baseline = nodegroups(cluster)
    rollout = RolloutConfig(**{
        "kubernetes_conn_id": KUBERNETES_CONN_ID, "cluster_name": "c", "namespace": cluster.namespace,
        "node_group_name": gpu, "launch_template_id": cluster.template_id,
        "baseline_node_group_name": baseline, "uncached_baseline": True, "max_startup_seconds": 10,
        **changes})
    return ValidateCacheOnNodesSensor(task_id="validate_nodes", rollout=rollout, version="2",
                                      deadline_seconds=deadline_seconds, poll_seconds=2,
                                      target={"images": [{"ref": IMAGE, "digest": "sha256:" + "ab" * 32}]})


def poke(task: ValidateCacheOnNodesSensor):
    return task.poke({"run_id": RUN_ID})


def uids(pods: dict[str, dict]) -> dict[str, str]:
    return {name: pod["metadata"]["uid"] for name, pod in pods.items()}


def test_poke_mode_by_default():
    """Not reschedule: Airflow 3.3 fails a reschedule poke on a stale executor success (apache/airflow#71172)."""
    task = ValidateCacheOnNodesSensor(task_id="validate_nodes", version="2", deadline_seconds=1, poll_seconds=1,
                                      target={"images": []}, rollout=RolloutConfig(
                                          cluster_name="c", node_group_name="gpu",
                                          launch_template_id="lt-0123456789abcdef0"))
    assert task.mode == "poke"


def test_cached_pods_then_the_baseline_then_the_report(cluster, instance_ids):  # noqa: F811
    task = sensor(cluster)
    assert poke(task) is False
    cached = cluster.pods()
    assert sorted(pod["spec"]["nodeName"] for pod in cached.values()) == ["new-1", "new-2"]  # not "old"
    for pod in cached.values():
        metadata = pod["metadata"]
        assert metadata["labels"][RUN_ID_LABEL] == label_value(RUN_ID)
        assert datetime.fromisoformat(metadata["annotations"][CREATED_AT_ANNOTATION]).tzinfo is not None
    assert poke(task) is False and uids(cluster.pods()) == uids(cached)  # still running: nothing created again

    cluster.finish(list(cached), "cached_pod")
    assert poke(task) is False  # the baseline starts only now, so its pulls never overlap the cached starts
    baseline = {name: pod for name, pod in cluster.pods().items() if name not in cached}
    assert [pod["spec"]["nodeName"] for pod in baseline.values()] == ["plain"]

    cluster.finish(list(baseline), "uncached_pod")
    done = poke(task)
    report = done.xcom_value
    assert done.is_done and report["passed"] and report["nodes"] == ["new-1", "new-2"]
    assert [r["instance_id"] for r in report["results"]] == [instance_ids["new-1"], instance_ids["new-2"]]
    assert all(r["cache_hit"] is True for r in report["results"])
    assert report["baselines"][0]["cache_hit"] is False and report["speedups"][IMAGE] > 1
    assert report["markdown"].startswith("### Cache validation passed")


def test_a_miss_fails_the_task(cluster, instance_ids):  # noqa: F811
    task = sensor(cluster, uncached_baseline=False)
    poke(task)
    cluster.finish(list(cluster.pods()), "uncached_pod")
    with pytest.raises(CacheValidationFailed, match="cache miss"):
        poke(task)
    assert len(cluster.pods()) == 2  # no baseline asked for


def test_a_retry_judges_the_first_trys_pods_and_creates_none(cluster, instance_ids):  # noqa: F811
    """A new try (a fresh sensor) after the first one's pods pulled: the same miss, never a "hit"."""
    poke(sensor(cluster, uncached_baseline=False))
    created = uids(cluster.pods())
    cluster.finish(list(created), "uncached_pod")
    retry = sensor(cluster, uncached_baseline=False)
    with pytest.raises(CacheValidationFailed, match="cache miss"):
        poke(retry)
    assert uids(cluster.pods()) == created


def test_a_failed_verdict_is_never_retried():
    from airflow.providers.common.compat.sdk import AirflowFailException

    assert issubclass(CacheValidationFailed, AirflowFailException)


def test_a_vanished_pod_is_never_created_again_and_fails_as_missing(cluster, instance_ids):  # noqa: F811
    task = sensor(cluster, uncached_baseline=False)
    poke(task)
    first, second = cluster.pods()
    # e.g. evicted: a new pod would find the image the first one pulled
    cluster.core.delete_namespaced_pod(second, cluster.namespace)
    cluster.finish([first], "cached_pod")
    with pytest.raises(CacheValidationFailed, match="no validation result"):
        poke(task)
    assert list(cluster.pods()) == [first]


def test_at_the_deadline_pods_are_judged_as_they_are(cluster, instance_ids):  # noqa: F811
    task = sensor(cluster, deadline_seconds=1, uncached_baseline=False)
    poke(task)
    time.sleep(1.2)  # the pods never finish: nobody plays their kubelet
    with pytest.raises(CacheValidationFailed, match="cache status unknown"):
        poke(task)


def test_no_node_on_the_new_version_fails(cluster, instance_ids):  # noqa: F811
    cluster.remove_node("new-1")
    cluster.remove_node("new-2")
    with pytest.raises(CacheValidationFailed, match="no validation pods"):
        poke(sensor(cluster, uncached_baseline=False))
    assert cluster.pods() == {}


def test_rollout_dag_wires_the_sensor_and_its_teardown():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO

    dag = DagBag(dag_folder=str(REPO / "dags" / "ml_container_cache_rollout.py")).dags[
        "ml_container_cache_rollout"]
    validate, delete = dag.get_task("validate_nodes"), dag.get_task("delete_validation_pods")
    assert validate.mode == "poke" and validate.retries == 2
    assert delete.is_teardown and delete.on_failure_fail_dagrun
    assert "validate_nodes" in delete.get_flat_relative_ids(upstream=True)
    assert "delete_validation_pods" not in dag.get_task("publish_ready").get_flat_relative_ids(upstream=True)
