"""Steps of ml_container_cache_rollout that are not waits (those are operators)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from ml_cache import metrics
from ml_cache.assets import ML_CONTAINER_CACHE, latest_event, read_cache_event, ready_event_extra
from ml_cache.errors import error_code
from ml_cache.fsr_lifecycle import retire_fsr
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.hooks.eks import CacheEksHook
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.launch_template import cache_snapshot, version_description, with_cache_snapshot
from ml_cache.published import read_published, restore_snapshot
from ml_cache.rollout_target import RolloutTarget, snapshot_from_event, snapshot_from_published
from ml_cache.run_deadline import check_run_fits
from ml_cache.settings import RolloutSettings, load_config, resolve_rollout_settings
from ml_cache.settings.models import RolloutConfig
from ml_cache.tags import identity_token

log = logging.getLogger(__name__)


READY_TASK = "publish_ready"


class RolloutPrecheckFailed(RuntimeError):
    """The node group is not in a state (or shape) the rollout can safely change."""


def validate_inputs(params: dict[str, Any] | None, *, aws_conn_id: str, dagrun_timeout: timedelta | None
                    ) -> dict[str, Any]:
    """Config `rollout:` (Terraform's output) merged with the form, validated before any AWS call; its
    deadlines must fit the run timeout the DAG was parsed with."""
    region = CacheEksHook(aws_conn_id=aws_conn_id).conn_region_name
    settings: RolloutSettings = resolve_rollout_settings(load_config(), dict(params or {}), region=region)
    check_run_fits("rollout", settings.timeouts, dagrun_timeout)
    return settings.model_dump(mode="json")


def resolve_snapshot(settings: RolloutSettings, triggering_asset_events: Any, *, aws_conn_id: str) -> RolloutTarget:
    """The snapshot and its images: the form's, else the triggering build event's, else the published one."""
    event = latest_event(ML_CONTAINER_CACHE, triggering_asset_events=triggering_asset_events)
    if settings.rollout.snapshot_id is None and event is not None:
        return snapshot_from_event(read_cache_event(event.extra))
    published = read_published(CacheSsmHook(aws_conn_id=aws_conn_id), parameter=settings.aws.ssm_parameter,
                               metadata_parameter=settings.aws.ssm_metadata_parameter)
    return snapshot_from_published(published, requested=settings.rollout.snapshot_id)


def check_node_group(nodegroup: dict[str, Any], launch_template_id: str) -> str:
    """The launch template version the node group runs, if it is one we may change: ACTIVE (or UPDATING:
    another update runs, ours waits for it and retries with the same token) and on our template."""
    name = nodegroup.get("nodegroupName")
    if nodegroup.get("status") not in ("ACTIVE", "UPDATING"):
        raise RolloutPrecheckFailed(f"Node group {name} is {nodegroup.get('status')}, not ACTIVE or UPDATING "
                                    f"(health: {nodegroup.get('health', {}).get('issues')})")
    template = nodegroup.get("launchTemplate") or {}
    if template.get("id") != launch_template_id:
        raise RolloutPrecheckFailed(
            f"Node group {name} was not created from launch template {launch_template_id} "
            f"(it uses {template or 'no launch template'}): the cache cannot be rolled out to it"
        )
    return str(template["version"])


def precheck_node_group(rollout: RolloutConfig, *, aws_conn_id: str) -> dict[str, Any]:
    """The node group can be rolled; what it runs now (version, snapshot) is what a rollback restores."""
    nodegroup = CacheEksHook(aws_conn_id=aws_conn_id).describe_nodegroup(
        clusterName=rollout.cluster_name, nodegroupName=rollout.node_group_name)["nodegroup"]
    version = check_node_group(nodegroup, rollout.launch_template_id)
    data = CacheEc2Hook(aws_conn_id=aws_conn_id).describe_launch_template_version(
        rollout.launch_template_id, version)["LaunchTemplateData"]
    return {
        "launch_template_version": version,
        "previous_snapshot_id": cache_snapshot(data, rollout.cache_device_name),
        **validation_scaling(nodegroup),
        **baseline_scaling(rollout, aws_conn_id=aws_conn_id),
    }


def validation_scaling(nodegroup: dict[str, Any], prefix: str = "") -> dict[str, dict[str, int] | None]:
    """A group scaled to 0 has no node to validate on: it gets one for the validation
    (`<prefix>validation_scaling`) and its own scaling back afterwards (`<prefix>restore_scaling`); else both None."""
    scaling = {key: (nodegroup.get("scalingConfig") or {}).get(key) for key in ("minSize", "maxSize", "desiredSize")}
    if scaling.get("desiredSize"):
        return {f"{prefix}validation_scaling": None, f"{prefix}restore_scaling": None}
    return {f"{prefix}validation_scaling": {"minSize": 1, "maxSize": max(1, int(scaling.get("maxSize") or 0)),
                                            "desiredSize": 1},
            f"{prefix}restore_scaling": {key: int(value or 0) for key, value in scaling.items()}}


BASELINE = "baseline_"


def baseline_scaling(rollout: RolloutConfig, *, aws_conn_id: str) -> dict[str, dict[str, int] | None]:
    """The uncached baseline's group, kept at 0 nodes, gets ONE FRESH node per rollout and goes back to 0:
    a node that stayed up would keep the images its baseline pods pulled, and next week's "uncached" start
    would find them present. A group kept running is used as it is, with a warning (its starts may be warm;
    the report leaves warm ones out of the speed-up)."""
    if not (rollout.uncached_baseline and rollout.baseline_node_group_name):
        return {f"{BASELINE}validation_scaling": None, f"{BASELINE}restore_scaling": None}
    name = rollout.baseline_node_group_name
    try:
        nodegroup = CacheEksHook(aws_conn_id=aws_conn_id).describe_nodegroup(
            clusterName=rollout.cluster_name, nodegroupName=name)["nodegroup"]
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        raise RolloutPrecheckFailed(
            f"Baseline node group {name} does not exist in cluster {rollout.cluster_name}: create it (Terraform "
            "`uncached_baseline = true`) or set rollout.uncached_baseline to false") from None
    if nodegroup.get("status") not in ("ACTIVE", "UPDATING"):
        raise RolloutPrecheckFailed(f"Baseline node group {name} is {nodegroup.get('status')}, not ACTIVE or UPDATING")
    if (nodegroup.get("scalingConfig") or {}).get("desiredSize"):
        log.warning("Baseline node group %s runs %s node(s): its nodes keep what earlier baselines pulled, so the "
                    "uncached start may be warm; scale it to 0 and each rollout measures a fresh node", name,
                    nodegroup["scalingConfig"]["desiredSize"])
    return validation_scaling(nodegroup, BASELINE)


def rollout_published(ti: Any) -> bool:
    """`publish_ready` returned (its XCom exists only once it succeeded): the teardowns undo nothing."""
    return ti.xcom_pull(task_ids=READY_TASK) is not None


def create_launch_template_version(rollout: RolloutConfig, snapshot_id: str, run_id: str, *,
                                   aws_conn_id: str) -> str:
    """A new version from the template's default version (Terraform's content: see terraform/README.md,
    "who owns the launch template version") with only the cache snapshot changed.

    Idempotent per run: a retry finds the version this run created by its description.
    """
    ec2 = CacheEc2Hook(aws_conn_id=aws_conn_id)
    template_id = rollout.launch_template_id
    description = version_description(run_id, snapshot_id)
    existing = ec2.find_launch_template_versions(template_id, description)
    if existing:
        return str(existing[0]["VersionNumber"])
    default = ec2.describe_launch_template_version(template_id, "$Default")
    snapshot = ec2.describe_snapshot(snapshot_id)
    if snapshot["State"] != "completed":
        raise RolloutPrecheckFailed(f"Snapshot {snapshot_id} is {snapshot['State']}, not completed")
    new_data = with_cache_snapshot(default["LaunchTemplateData"], rollout.cache_device_name, snapshot_id,
                                   snapshot.get("VolumeSize"))
    created = ec2.create_launch_template_version(template_id, str(default["VersionNumber"]), new_data, description)
    return str(created["VersionNumber"])


def publish_ready(target: RolloutTarget, report: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The `ml_container_cache_ready` event's extra: the cache is on every new node and proven."""
    metrics.rollout_validated(report, arch=target.get("arch"))
    return ready_event_extra(target, report, run_id)


def restore_snapshot_parameter(settings: RolloutSettings, target: RolloutTarget, current: dict[str, Any], *,
                               aws_conn_id: str) -> str | None:
    """The SSM parameter goes back to the snapshot the node group ran before this rollout."""
    return restore_snapshot(CacheSsmHook(aws_conn_id=aws_conn_id), parameter=settings.aws.ssm_parameter,
                            metadata_parameter=settings.aws.ssm_metadata_parameter,
                            failed_snapshot_id=target["snapshot_id"],
                            previous_snapshot_id=current.get("previous_snapshot_id"))


def retire_superseded_fsr(settings: RolloutSettings, target: RolloutTarget, current: dict[str, Any], *,
                          aws_conn_id: str) -> list[str]:
    """Validated: the snapshot the nodes ran before is no rollback target any more, so it loses FSR
    (unless it is the one rolled out, or still the published one)."""
    previous = current.get("previous_snapshot_id")
    if not previous or previous == target["snapshot_id"] or previous == _published_id(settings, aws_conn_id):
        return []
    return retire_fsr(CacheEc2Hook(aws_conn_id=aws_conn_id), previous)


def retire_rejected_fsr(settings: RolloutSettings, target: RolloutTarget, *, aws_conn_id: str) -> list[str]:
    """Rolled back: the rejected snapshot is neither live nor a rollback target, so it loses FSR
    (unless someone published it again meanwhile)."""
    if target["snapshot_id"] == _published_id(settings, aws_conn_id):
        return []
    return retire_fsr(CacheEc2Hook(aws_conn_id=aws_conn_id), target["snapshot_id"])


def _published_id(settings: RolloutSettings, aws_conn_id: str) -> str | None:
    return read_published(CacheSsmHook(aws_conn_id=aws_conn_id), parameter=settings.aws.ssm_parameter,
                          metadata_parameter=settings.aws.ssm_metadata_parameter).snapshot_id


def undo_after_timeout(context: dict[str, Any], *, aws_conn_id: str) -> None:
    """The DAG's on_failure_callback. A run past `dagrun_timeout` gets its teardowns marked skipped
    (Airflow 3.3), so this (run by the dag processor, reason "timed_out") does their urgent part."""
    if context.get("reason") != "timed_out":
        return
    from airflow.sdk.execution_time.xcom import XCom

    dag_id, run_id = context["dag"].dag_id, context["run_id"]

    def result(task_id: str) -> Any:
        return XCom.get_one(key="return_value", dag_id=dag_id, task_id=task_id, run_id=run_id)

    settings, target, current = result("validate_inputs"), result("resolve_snapshot"), result("precheck_node_group")
    if result(READY_TASK) is not None or settings is None or target is None or current is None:
        log.info("Run %s timed out with nothing of the node group changed, or published", run_id)
        return
    done = undo_timed_out_run(RolloutSettings.model_validate(settings), target, current, aws_conn_id=aws_conn_id,
                              dag_id=dag_id, run_id=run_id)
    log.warning("Run %s timed out: %s", run_id, "; ".join(done))


def undo_timed_out_run(settings: RolloutSettings, target: RolloutTarget, current: dict[str, Any], *,
                       aws_conn_id: str, dag_id: str, run_id: str) -> list[str]:
    """The SSM parameter back to what the nodes ran, and the rollback update started, not waited for
    (the scaling's instead, when the version needs none: EKS runs one update at a time)."""
    restored = restore_snapshot_parameter(settings, target, current, aws_conn_id=aws_conn_id)
    done = [f"snapshot parameter restored to {restored}" if restored
            else "snapshot parameter left as it was (it no longer names the rolled-out snapshot)"]
    rollout, version = settings.rollout, str(current["launch_template_version"])
    scaling = current.get("restore_scaling")
    eks = CacheEksHook(aws_conn_id=aws_conn_id)
    nodegroup = eks.describe_nodegroup(clusterName=rollout.cluster_name,
                                       nodegroupName=rollout.node_group_name)["nodegroup"]
    running = str(nodegroup.get("launchTemplate", {}).get("version"))
    try:
        if running != version:
            update = eks.update_nodegroup_version(
                rollout.cluster_name, rollout.node_group_name, {"id": rollout.launch_template_id, "version": version},
                force=rollout.force_update,
                token=identity_token(dag_id, run_id, "on_failure_callback", running, version))
            done.append(f"rollback of {rollout.node_group_name} to launch template version {version} started "
                        f"(update {update['id']}, not waited for)"
                        + (f"; scale it back to {scaling} once it is done" if scaling else ""))
        elif scaling:
            done.append(_scale_back(eks, rollout.cluster_name, rollout.node_group_name, scaling, dag_id=dag_id,
                                    run_id=run_id))
    except ClientError as error:
        if error_code(error) != "ResourceInUseException":
            raise
        done.append(f"node group {rollout.node_group_name} is busy with another update: roll it back to launch "
                    f"template version {version}" + (f" and scaling {scaling}" if scaling else "") + " by hand")
    baseline = current.get(f"{BASELINE}restore_scaling")
    if baseline and rollout.baseline_node_group_name:
        done.append(_scale_back(eks, rollout.cluster_name, rollout.baseline_node_group_name, baseline,
                                dag_id=dag_id, run_id=run_id))
    return done


def _scale_back(eks: CacheEksHook, cluster: str, name: str, scaling: dict[str, int], *, dag_id: str,
                run_id: str) -> str:
    """Start putting a node group's own scaling back (not waited for); what was done, in words."""
    current = eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"].get("scalingConfig")
    if current == scaling:
        return f"node group {name} already scales {scaling}"
    try:
        update = eks.update_nodegroup_scaling(cluster, name, scaling, token=identity_token(
            dag_id, run_id, "on_failure_callback", name, str(current), str(scaling)))
    except ClientError as error:
        if error_code(error) != "ResourceInUseException":
            raise
        return f"node group {name} is busy with another update: scale it back to {scaling} by hand"
    return f"scaling of {name} back to {scaling} started (update {update['id']}, not waited for)"
