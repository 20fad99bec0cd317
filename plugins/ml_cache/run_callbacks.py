"""Run-level cleanup for a build run the scheduler failed without its teardowns.

Past `dagrun_timeout`, Airflow 3.3 fails the run and marks every unfinished task, teardowns
included, SKIPPED (`SchedulerJobRunner._schedule_dag_run`); only the DAG's `on_failure_callback`
still runs (in the dag processor, reason "timed_out"). So that callback does what the build's
teardowns would have done, by tag: it terminates every builder of the run and takes FSR off the
run's snapshots that were not published. Both are idempotent, so after an ordinary failure (the
teardowns ran) the callback finds nothing left to do.
"""

from __future__ import annotations

import logging
from typing import Any

from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.operators.builder import builder_tags
from ml_cache.settings import BuildSettings
from ml_cache.steps.build import retire_unpublished_fsr
from ml_cache.tags import run_tags

log = logging.getLogger(__name__)


def terminate_run_builders(pipeline: str, run_id: str, *, aws_conn_id: str) -> list[str]:
    """Terminate every live instance tagged as a builder of this run; their ids."""
    ec2 = CacheEc2Hook(aws_conn_id=aws_conn_id)
    ids = sorted(instance["InstanceId"] for instance in ec2.find_instances(builder_tags(pipeline, run_id)))
    if ids:
        ec2.terminate_instances(ids)
    return ids


def retire_run_fsr(settings: BuildSettings, run_id: str, *, aws_conn_id: str) -> dict[str, list[str]]:
    """FSR off on every snapshot of this run that is not the published one; snapshot id -> AZs."""
    snapshots = CacheEc2Hook(aws_conn_id=aws_conn_id).find_snapshots(run_tags(settings.pipeline, run_id, role="cache"))
    retired = {s["SnapshotId"]: retire_unpublished_fsr(settings, s["SnapshotId"], aws_conn_id=aws_conn_id)
               for s in snapshots}
    return {snapshot_id: zones for snapshot_id, zones in retired.items() if zones}


def run_settings(context: dict[str, Any]) -> BuildSettings | None:
    """The settings `validate_inputs` returned in this run; None when it returned none (then the run
    launched nothing). The callback's context carries a task instance whenever any task ran."""
    ti = context.get("ti")
    value = ti.xcom_pull(task_ids="validate_inputs", run_id=context["run_id"]) if ti is not None else None
    return BuildSettings.model_validate(value) if value else None


def clean_up_failed_build(context: dict[str, Any], *, aws_conn_id: str = "aws_default") -> None:
    """`on_failure_callback` of the build DAG: no builder and no unpublished FSR outlive a failed run."""
    run_id = context["run_id"]
    settings = run_settings(context)
    if settings is None:
        log.info("Run %s failed (%s) before validate_inputs returned: nothing was launched", run_id,
                 context.get("reason"))
        return
    terminated = terminate_run_builders(settings.pipeline, run_id, aws_conn_id=aws_conn_id)
    log.info("Run %s failed (%s): terminated builders %s", run_id, context.get("reason"), terminated or "none left")
    retired = retire_run_fsr(settings, run_id, aws_conn_id=aws_conn_id)
    log.info("Run %s: FSR disabled on unpublished snapshots %s", run_id, retired or "none had it")
