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
from ml_cache.images import InvalidInputs
from ml_cache.operators.builder import builder_tags
from ml_cache.settings import BuildSettings
from ml_cache.settings.config import load_config
from ml_cache.settings.resolve import resolve_build_settings
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


def config_settings(aws_conn_id: str) -> BuildSettings:
    """The run's pipeline and AWS names: from the config file alone (the trigger form cannot change them),
    so the callback needs no XCom (a DAG callback outside the dag processor cannot read one)."""
    region = CacheEc2Hook(aws_conn_id=aws_conn_id).conn_region_name
    return resolve_build_settings(load_config(), None, region=region)


def clean_up_failed_build(context: dict[str, Any], *, aws_conn_id: str = "aws_default") -> None:
    """`on_failure_callback` of the build DAG: no builder and no unpublished FSR outlive a failed run.

    The builders go first and need only the file's pipeline name: a config edited since the run started
    (even one that no longer validates) never keeps a builder alive."""
    run_id, reason = context["run_id"], context.get("reason")
    terminated = terminate_run_builders(str(load_config().get("pipeline")), run_id, aws_conn_id=aws_conn_id)
    log.info("Run %s failed (%s): terminated builders %s", run_id, reason, terminated or "none left")
    try:
        settings = config_settings(aws_conn_id)
    except InvalidInputs as error:
        log.warning("Run %s: FSR of its snapshots left to the janitor: the config does not validate: %s", run_id, error)
        return
    retired = retire_run_fsr(settings, run_id, aws_conn_id=aws_conn_id)
    log.info("Run %s: FSR disabled on unpublished snapshots %s", run_id, retired or "none had it")
