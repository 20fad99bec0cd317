"""
# example_gpu_training

An example of a data team's GPU DAG that depends on the ML container image cache. It runs each
time the rollout publishes the Asset `ml_container_cache_ready`, that is, when every GPU node
runs the new snapshot and has been shown to start every cached image without pulling it.

```text
Asset ml_container_cache_ready ─► read_cache_event ─► train_model (KubernetesPodOperator, GPU node)
```

* `read_cache_event` reads the event's extra (`snapshot_id`, `image_set`, `images` [{ref, digest}],
  `arch`, `validation`, `run_id`): from the triggering event on an asset-triggered run, from the
  latest event of the Asset on a manual run. It picks the image named by the `image_name` param
  and pins it by digest, so the pod runs exactly the bytes that are in the cache.
* `train_model` starts the pod on a GPU node of the cached node group (nodeSelector + the
  `nvidia.com/gpu` toleration), `imagePullPolicy: IfNotPresent`. Nothing talks to the cluster
  when the file is parsed; the Kubernetes connection is a param (default from
  `$ML_CACHE_KUBERNETES_CONN_ID`, else `kubernetes_default`).
* Copy this file, change `image_name` and `command` and the GPU count (`$ML_TRAINING_GPUS`).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG, Param, task
from kubernetes.client import models as k8s

from ml_cache.assets import ML_CONTAINER_CACHE_READY

KUBERNETES_CONN_ID = os.environ.get("ML_CACHE_KUBERNETES_CONN_ID", "kubernetes_default")
IMAGE_NAME = os.environ.get("ML_TRAINING_IMAGE_NAME", "nvcr.io/nvidia/pytorch")
COMMAND = json.loads(os.environ.get(
    "ML_TRAINING_COMMAND",
    json.dumps(["python3", "-c", "import torch; print('cuda available:', torch.cuda.is_available())"]),
))
GPUS = int(os.environ.get("ML_TRAINING_GPUS", "1"))
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true", "ml-cache/enabled": "true"}
GPU_TOLERATION = k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")


def from_event(key: str) -> str:
    """A template for one field of what read_cache_event returned."""
    return "{{ ti.xcom_pull(task_ids='read_cache_event')['" + key + "'] }}"


with DAG(
    dag_id="example_gpu_training",
    description="Example data-team DAG: train on a GPU node once the image cache is rolled out and proven",
    doc_md=__doc__,
    schedule=[ML_CONTAINER_CACHE_READY],
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=12),
    render_template_as_native_obj=True,  # `command` renders as a list, not its string form
    default_args={"retries": 0},
    tags=["ml-container-cache", "example", "gpu"],
    params={
        "image_name": Param(IMAGE_NAME, type="string", minLength=1,
                            description="Cached image to train with: full repository or its last components."),
        "command": Param(COMMAND, type="array", items={"type": "string"}, minItems=1,
                         description="Command of the training container."),
        "namespace": Param(os.environ.get("ML_TRAINING_NAMESPACE", "default"), type="string",
                           pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Kubernetes namespace."),
        "kubernetes_conn_id": Param(KUBERNETES_CONN_ID, type="string", description="Airflow Kubernetes connection."),
    },
) as dag:

    @task(inlets=[ML_CONTAINER_CACHE_READY])
    def read_cache_event(params: dict[str, Any] | None = None, triggering_asset_events=None,
                         inlet_events=None) -> dict[str, Any]:
        """Take snapshot and images from the event that triggered the run (or the latest one)."""
        from ml_cache.assets import AssetEventError, latest_event, pick_image, read_ready_event

        found = latest_event(ML_CONTAINER_CACHE_READY, triggering_asset_events=triggering_asset_events,
                             inlet_events=inlet_events)  # a manual run: the Asset's latest event
        if found is None:
            raise AssetEventError(
                f"no {ML_CONTAINER_CACHE_READY.name} event yet: the cache was never rolled out and validated")
        event = read_ready_event(found.extra)
        image = pick_image(event.images, (params or {})["image_name"])
        print(f"cache: snapshot {event.snapshot_id} ({event.arch}), image set {event.image_set}, "
              f"rollout run {event.run_id}; training image {image}")
        return {"snapshot_id": event.snapshot_id, "image": image, "arch": event.arch, "cache_run_id": event.run_id}

    event = read_cache_event()

    train_model = KubernetesPodOperator(
        task_id="train_model",
        kubernetes_conn_id="{{ params.kubernetes_conn_id }}",
        namespace="{{ params.namespace }}",
        name="train-model",
        image=from_event("image"),
        image_pull_policy="IfNotPresent",
        cmds="{{ params.command }}",
        env_vars={"ML_CACHE_SNAPSHOT_ID": from_event("snapshot_id")},
        labels={"app.kubernetes.io/part-of": "example-gpu-training",
                "ml-cache/snapshot-id": from_event("snapshot_id")},
        node_selector=GPU_NODE_SELECTOR,
        tolerations=[GPU_TOLERATION],
        container_resources=k8s.V1ResourceRequirements(limits={"nvidia.com/gpu": str(GPUS)}) if GPUS else None,
        automount_service_account_token=False,
        get_logs=True,
        on_finish_action="delete_pod",
        startup_timeout_seconds=900,  # a cache miss (a node without the snapshot) still pulls, slowly
    )

    event >> train_model
