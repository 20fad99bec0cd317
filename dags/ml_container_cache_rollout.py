"""
# ml_container_cache_rollout

Rolls a published cache snapshot out to the EKS GPU node group, proves on every new node that
the images were already present, and only then tells data teams (Asset `ml_container_cache_ready`).

```
validate_inputs ─► resolve_snapshot ─► precheck_node_group ─► create_launch_template_version
  ─► update_node_group ─► validate_nodes ─► publish_ready ─► Asset ml_container_cache_ready
                 └──(any failure after the update)──► rollback_node_group, restore_snapshot_parameter
```

* Runs on each `ml_container_cache` event (the build DAG's publish), or manually with a snapshot.
* The new launch template version changes only the cache volume's snapshot; everything else of
  the template's default version (Terraform owns it) is carried over explicitly.
* On a failed update or a failed validation the node group goes back to its previous launch
  template version and the SSM parameter back to the previous snapshot; the run ends FAILED.
  `force` is used only when the `force_update` parameter asks for it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.definitions.asset import AssetAll

from ml_cache.assets import ML_CONTAINER_CACHE, ML_CONTAINER_CACHE_READY
from ml_cache.operators.nodegroup import UpdateNodegroupOperator
from ml_cache.operators.validation import DeleteValidationPodsOperator
from ml_cache.sensors.validation import ValidateCacheOnNodesSensor

AWS_CONN_ID = "aws_default"

with DAG(
    dag_id="ml_container_cache_rollout",
    description="Roll the cache snapshot out to the GPU node group, validate, roll back on failure",
    doc_md=__doc__,
    schedule=AssetAll(ML_CONTAINER_CACHE),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=4),
    # Every task is idempotent (tokens, tags, run-marked versions), so retries are safe; two also
    # absorb apache/airflow#71580 (a trigger that fires at once can fail the resumed try).
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "aws_conn_id": AWS_CONN_ID},
    tags=["ml-container-cache", "eks"],
    params={
        "snapshot_id": Param(None, type=["null", "string"], pattern=r"^snap-[0-9a-f]{8,17}$",
                             description="Snapshot to roll out. Empty: the triggering event's, else the SSM "
                                         "parameter's."),
        "max_startup_seconds": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=3600,
                                     description="A validation pod slower than this fails the rollout. "
                                                 "Empty: config default."),
        "force_update": Param(None, type=["null", "boolean"],
                              description="EKS `force`: override PodDisruptionBudgets. Empty: config default."),
        "uncached_baseline": Param(None, type=["null", "boolean"],
                                   description="Also time each image on a node without the cache."),
    },
) as dag:

    @task(retries=0)  # bad input does not get better by waiting
    def validate_inputs(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Config `rollout:` (Terraform's output) merged with the form, validated before any AWS call."""
        from ml_cache.hooks.eks import CacheEksHook
        from ml_cache.settings import load_config, resolve_rollout_settings

        region = CacheEksHook(aws_conn_id=AWS_CONN_ID).conn_region_name
        return resolve_rollout_settings(load_config(), dict(params or {}), region=region)

    @task(inlets=[ML_CONTAINER_CACHE])
    def resolve_snapshot(settings: dict[str, Any], **context: Any) -> dict[str, Any]:
        """The snapshot and its images: form, else the triggering event, else the SSM parameters."""
        from ml_cache.assets import latest_event, read_cache_event
        from ml_cache.hooks.ssm import CacheSsmHook
        from ml_cache.published import read_published
        from ml_cache.rollout import snapshot_from_event, snapshot_from_published

        # only the triggering event: a manual run takes the form's snapshot, else the published one
        event = latest_event(ML_CONTAINER_CACHE, triggering_asset_events=context.get("triggering_asset_events"))
        if settings["snapshot_id"] is None and event is not None:
            return snapshot_from_event(read_cache_event(event.extra))
        published = read_published(CacheSsmHook(aws_conn_id=AWS_CONN_ID), parameter=settings["ssm_parameter"],
                                   metadata_parameter=settings["ssm_metadata_parameter"])
        return snapshot_from_published(published, requested=settings["snapshot_id"])

    @task(multiple_outputs=True)
    def precheck_node_group(settings: dict[str, Any]) -> dict[str, Any]:
        """The node group exists, is ACTIVE, and runs our launch template; remember what it runs now."""
        from ml_cache.hooks.ec2 import CacheEc2Hook
        from ml_cache.hooks.eks import CacheEksHook
        from ml_cache.rollout import check_node_group

        nodegroup = CacheEksHook(aws_conn_id=AWS_CONN_ID).describe_nodegroup(
            clusterName=settings["cluster_name"], nodegroupName=settings["node_group_name"])["nodegroup"]
        return check_node_group(nodegroup, settings, CacheEc2Hook(aws_conn_id=AWS_CONN_ID))

    @task
    def create_launch_template_version(settings: dict[str, Any], target: dict[str, Any], **context: Any) -> str:
        """A new version from the template's default (Terraform's content), only the cache snapshot changed."""
        from ml_cache.hooks.ec2 import CacheEc2Hook
        from ml_cache.rollout import create_cache_version

        return create_cache_version(CacheEc2Hook(aws_conn_id=AWS_CONN_ID), settings, target, context["run_id"])

    @task(outlets=[ML_CONTAINER_CACHE_READY])
    def publish_ready(target: dict[str, Any], report: dict[str, Any], **context: Any) -> dict[str, Any]:
        """The cache is on every new node and proven: data teams' DAGs may start."""
        from ml_cache.assets import ready_event_extra

        extra = ready_event_extra(target, report, context["run_id"])
        context["outlet_events"][ML_CONTAINER_CACHE_READY].extra = extra
        return extra

    @task(trigger_rule="one_failed")
    def restore_snapshot_parameter(settings: dict[str, Any], target: dict[str, Any],
                                   current: dict[str, Any]) -> str | None:
        """The SSM parameter goes back to the snapshot the node group ran before this rollout."""
        from airflow.providers.common.compat.sdk import AirflowSkipException

        from ml_cache.hooks.ssm import CacheSsmHook
        from ml_cache.published import restore_snapshot

        if not current or not target:
            raise AirflowSkipException("Nothing was rolled out: the parameter stays as it is")
        return restore_snapshot(CacheSsmHook(aws_conn_id=AWS_CONN_ID), parameter=settings["ssm_parameter"],
                                metadata_parameter=settings["ssm_metadata_parameter"],
                                failed_snapshot_id=target["snapshot_id"],
                                previous_snapshot_id=current.get("previous_snapshot_id"))

    settings = validate_inputs()
    target = resolve_snapshot(settings)
    current = precheck_node_group(settings)
    version = create_launch_template_version(settings, target)
    update = UpdateNodegroupOperator(task_id="update_node_group", settings=settings, version=version)
    # Never retried: a first try that missed made the kubelet pull, so a second would "hit".
    report = ValidateCacheOnNodesSensor(task_id="validate_nodes", settings=settings, target=target,
                                        version=version, retries=0)
    delete_pods = DeleteValidationPodsOperator(task_id="delete_validation_pods", settings=settings)
    ready = publish_ready(target, report.output)
    rollback = UpdateNodegroupOperator(task_id="rollback_node_group", settings=settings,
                                       version=current["launch_template_version"], skip_if_current=True,
                                       trigger_rule="one_failed")
    restored = restore_snapshot_parameter(settings, target, current)

    target >> current >> version
    update >> report >> delete_pods.as_teardown()
    [update, report] >> rollback
    [update, report] >> restored
