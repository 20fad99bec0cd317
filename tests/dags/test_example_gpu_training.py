"""The data-team example: scheduled on the ready Asset, reads the cache event, trains on a GPU node."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ml_cache.assets import ML_CONTAINER_CACHE_READY, AssetEventError
from tests.conftest import REPO
from tests.plugins.ml_cache import producers

DIGEST = producers.PYTORCH_DIGEST
SNAPSHOT_ID = producers.SNAPSHOT_ID
EXTRA = producers.ready_extra()  # what the rollout's publish_ready writes, from a real build's event


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "example_gpu_training.py"))
    assert bag.import_errors == {}
    return bag.dags["example_gpu_training"]


def read_cache_event(dag, **context):
    params = {name: dag.params[name] for name in dag.params}
    return dag.get_task("read_cache_event").python_callable(params=params, **context)


def test_scheduled_on_the_ready_asset_only(dag):
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAll" and list(condition.objects) == [ML_CONTAINER_CACHE_READY]
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.doc_md.strip().startswith("# example_gpu_training")


def test_reads_the_triggering_event_and_pins_the_digest(dag):
    result = read_cache_event(dag, triggering_asset_events={ML_CONTAINER_CACHE_READY: [SimpleNamespace(extra=EXTRA)]})
    assert result == {"snapshot_id": SNAPSHOT_ID, "image": f"nvcr.io/nvidia/pytorch@{DIGEST}",
                      "arch": "x86_64", "cache_run_id": producers.ROLLOUT_RUN_ID}


def test_manual_run_uses_the_latest_event(dag):
    older = {**EXTRA, "snapshot_id": "snap-0aaaaaaaaaaaaaaaa"}
    result = read_cache_event(dag, triggering_asset_events={},
                              inlet_events={ML_CONTAINER_CACHE_READY: [SimpleNamespace(extra=older),
                                                                       SimpleNamespace(extra=EXTRA)]})
    assert result["snapshot_id"] == SNAPSHOT_ID
    with pytest.raises(AssetEventError, match="no ml_container_cache_ready event yet"):
        read_cache_event(dag, triggering_asset_events={}, inlet_events={ML_CONTAINER_CACHE_READY: []})


def test_an_image_the_cache_does_not_hold_fails_the_run(dag):
    extra = {**EXTRA, "images": [EXTRA["images"][1]]}
    with pytest.raises(AssetEventError, match=r"no cached image named 'nvcr\.io/nvidia/pytorch'"):
        read_cache_event(dag, triggering_asset_events={ML_CONTAINER_CACHE_READY: [SimpleNamespace(extra=extra)]})


def test_the_read_task_declares_the_asset_as_inlet(dag):
    read = dag.get_task("read_cache_event")
    assert [asset.name for asset in read.inlets] == ["ml_container_cache_ready"]
    assert "read_cache_event" in dag.get_task("train_model").upstream_task_ids


def test_training_pod_targets_cached_gpu_nodes(dag):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    train = dag.get_task("train_model")
    assert isinstance(train, KubernetesPodOperator)
    assert train.node_selector == {"nvidia.com/gpu.present": "true", "ml-cache/enabled": "true"}
    assert [(t.key, t.operator, t.effect) for t in train.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
    assert train.image_pull_policy == "IfNotPresent"
    assert train.container_resources.limits == {"nvidia.com/gpu": "1"}


class _TaskInstance:
    """Just enough of a task instance for rendering the pod's templates: the upstream's XCom."""

    def __init__(self, value):
        self.value = value

    def xcom_pull(self, task_ids=None, **_):
        assert task_ids == "read_cache_event"
        return self.value


def test_templates_render_the_pinned_image_and_the_command(dag):
    import copy

    train = copy.deepcopy(dag.get_task("train_model"))
    upstream = read_cache_event(dag, triggering_asset_events={ML_CONTAINER_CACHE_READY: [SimpleNamespace(extra=EXTRA)]})
    params = {name: dag.params[name] for name in dag.params}
    train.render_template_fields({"ti": _TaskInstance(upstream), "params": params}, jinja_env=dag.get_template_env())
    assert train.image == f"nvcr.io/nvidia/pytorch@{DIGEST}"
    assert train.cmds == params["command"] and isinstance(train.cmds, list)
    assert train.namespace == "default"
    assert train.kubernetes_conn_id == "kubernetes_default"
    assert train.labels["ml-cache/snapshot-id"] == SNAPSHOT_ID
    assert [(env.name, env.value) for env in train.env_vars] == [("ML_CACHE_SNAPSHOT_ID", SNAPSHOT_ID)]
