"""The validation sensor, poke by poke, against an in-memory cluster that answers like the hook.

Pods "finish" as recorded ones (fixtures/): a cache hit, or a pull for a miss and the baseline.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from ml_cache.sensors import validation as sensor_module
from ml_cache.sensors.validation import CacheValidationFailed, ValidateCacheOnNodesSensor
from ml_cache.settings.models import RolloutConfig
from ml_cache.validation.manifest import CREATED_AT_ANNOTATION, RUN_ID_LABEL, label_value
from tests.plugins.ml_cache.validation.recorded import recorded

IMAGE = "127.0.0.1:5000/ml-cache-demo/large:1"  # the image of the recorded pods
RUN_ID = "manual__2026-11-29T02:36:21.123456+00:00"
ROLLOUT = {"kubernetes_conn_id": "kubernetes_local", "cluster_name": "c", "namespace": "ml-cache",
           "node_group_name": "gpu", "launch_template_id": "lt-0123456789abcdef0",
           "baseline_node_group_name": "gpu-uncached", "uncached_baseline": True, "max_startup_seconds": 10}


class FakeCluster:
    """The CacheKubernetesHook calls the sensor makes, over dicts."""

    def __init__(self) -> None:
        self.nodes = {"gpu": [self._node("new-1", "i-01"), self._node("new-2", "i-02"), self._node("old", "i-03")],
                      "gpu-uncached": [self._node("plain", "i-09")]}
        self.pods: dict[str, dict] = {}
        self.events: dict[str, list[dict]] = {}
        self.created: list[str] = []

    @staticmethod
    def _node(name: str, instance_id: str) -> dict:
        return {"metadata": {"name": name}, "spec": {"providerID": f"aws:///us-west-2a/{instance_id}"}}

    def list_nodes(self, label_selector: str) -> list[dict]:
        return self.nodes[label_selector.split("=", 1)[1]]

    def create_pod(self, manifest: dict) -> bool:
        name = manifest["metadata"]["name"]
        if name in self.pods:
            return False
        self.pods[name] = {**copy.deepcopy(manifest), "status": {"phase": "Pending"}}
        self.created.append(name)
        return True

    def list_pods(self, label_selector: str) -> list[dict]:
        wanted = dict(term.split("=", 1) for term in label_selector.split(","))
        return [p for p in self.pods.values() if wanted.items() <= p["metadata"]["labels"].items()]

    def list_pod_events(self, name: str) -> list[dict]:
        return self.events.get(name, [])

    def finish(self, names: list[str], fixture: str) -> None:
        """The pods end as the recorded one did (its status, creation time and events)."""
        recorded_pod, events = recorded(fixture)
        for name in names:
            pod = self.pods[name]
            pod["status"] = copy.deepcopy(recorded_pod["status"])
            pod["metadata"]["creationTimestamp"] = recorded_pod["metadata"]["creationTimestamp"]
            recorded_image = recorded_pod["spec"]["containers"][0]["image"]
            image = pod["spec"]["containers"][0]["image"]
            self.events[name] = [{**event, "message": event["message"].replace(recorded_image, image)}
                                 for event in copy.deepcopy(events)]


class FakeEc2:
    def __init__(self, aws_conn_id: str) -> None:
        pass

    def describe_instances(self, ids: list[str]) -> list[dict]:
        version = {"i-01": "2", "i-02": "2", "i-03": "1"}
        return [{"InstanceId": i, "Tags": [{"Key": "aws:ec2launchtemplate:version", "Value": version[i]}]}
                for i in ids if i in version]


@pytest.fixture
def cluster(monkeypatch) -> FakeCluster:
    fake = FakeCluster()
    monkeypatch.setattr(sensor_module, "kubernetes_hook", lambda settings, aws_conn_id: fake)
    monkeypatch.setattr(sensor_module, "CacheEc2Hook", FakeEc2)
    return fake


def sensor(**changes) -> ValidateCacheOnNodesSensor:
    return ValidateCacheOnNodesSensor(task_id="validate_nodes", rollout=RolloutConfig(**{**ROLLOUT, **changes}),
                                      version="2", deadline_seconds=120, poll_seconds=2,
                                      target={"images": [{"ref": IMAGE, "digest": "sha256:" + "ab" * 32}]})


def poke(task: ValidateCacheOnNodesSensor):
    return task.poke({"run_id": RUN_ID})


def test_reschedule_mode_by_default():
    task = sensor()
    assert task.mode == "reschedule"


def test_cached_pods_then_the_baseline_then_the_report(cluster):
    task = sensor()
    assert poke(task) is False
    cached = list(cluster.created)
    assert sorted(cluster.pods[name]["spec"]["nodeName"] for name in cached) == ["new-1", "new-2"]  # not "old"
    for name in cached:
        metadata = cluster.pods[name]["metadata"]
        assert metadata["labels"][RUN_ID_LABEL] == label_value(RUN_ID)
        assert datetime.fromisoformat(metadata["annotations"][CREATED_AT_ANNOTATION]).tzinfo is not None
    assert poke(task) is False and cluster.created == cached  # still running: nothing created again

    cluster.finish(cached, "cached_pod")
    assert poke(task) is False  # the baseline starts only now, so its pulls never overlap the cached starts
    baseline = cluster.created[len(cached):]
    assert [cluster.pods[name]["spec"]["nodeName"] for name in baseline] == ["plain"]

    cluster.finish(baseline, "uncached_pod")
    done = poke(task)
    report = done.xcom_value
    assert done.is_done and report["passed"] and report["nodes"] == ["new-1", "new-2"]
    assert [r["instance_id"] for r in report["results"]] == ["i-01", "i-02"]
    assert all(r["cache_hit"] is True for r in report["results"])
    assert report["baselines"][0]["cache_hit"] is False and report["speedups"][IMAGE] > 1
    assert report["markdown"].startswith("### Cache validation passed")


def test_a_miss_fails_the_task(cluster):
    task = sensor(uncached_baseline=False)
    poke(task)
    cluster.finish(cluster.created, "uncached_pod")
    with pytest.raises(CacheValidationFailed, match="cache miss"):
        poke(task)
    assert len(cluster.created) == 2  # no baseline asked for


def test_a_vanished_pod_is_never_created_again_and_fails_as_missing(cluster):
    task = sensor(uncached_baseline=False)
    poke(task)
    first, second = cluster.created
    del cluster.pods[second]  # e.g. evicted: a new pod would find the image the first one pulled
    cluster.finish([first], "cached_pod")
    with pytest.raises(CacheValidationFailed, match="no validation result"):
        poke(task)
    assert cluster.created == [first, second]


def test_at_the_deadline_pods_are_judged_as_they_are(cluster):
    task = sensor(uncached_baseline=False)
    poke(task)
    long_ago = (datetime.now(UTC) - timedelta(seconds=121)).isoformat()
    for pod in cluster.pods.values():
        pod["metadata"]["annotations"][CREATED_AT_ANNOTATION] = long_ago
    with pytest.raises(CacheValidationFailed, match="cache status unknown"):
        poke(task)


def test_no_node_on_the_new_version_fails(cluster):
    cluster.nodes["gpu"] = cluster.nodes["gpu"][2:]
    with pytest.raises(CacheValidationFailed, match="no validation pods"):
        poke(sensor(uncached_baseline=False))
    assert cluster.created == []


def test_rollout_dag_wires_the_sensor_and_its_teardown():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO

    dag = DagBag(dag_folder=str(REPO / "dags" / "ml_container_cache_rollout.py")).dags[
        "ml_container_cache_rollout"]
    validate, delete = dag.get_task("validate_nodes"), dag.get_task("delete_validation_pods")
    assert validate.mode == "reschedule" and validate.retries == 0
    assert delete.is_teardown and "validate_nodes" in delete.upstream_task_ids
    assert "delete_validation_pods" not in dag.get_task("publish_ready").upstream_task_ids
