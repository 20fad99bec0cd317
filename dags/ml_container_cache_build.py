"""
# ml_container_cache_build

Pre-pulls ML container images into containerd on an EBS volume, snapshots it, enables Fast
Snapshot Restore (FSR) and publishes the snapshot id, so new EKS GPU nodes start pods in seconds.

```
validate_inputs ─► resolve_ami ─► register_build_script ─► launch_builder (setup)
  ─► wait_for_builder ─► run_build_script ─► verify_build_report ─► quiesce_builder
  ─► verify_quiesced ─► create_snapshot ─┬► terminate_builder (teardown: runs whatever failed)
                                          └► enable_fast_snapshot_restore ─► publish_snapshot
                                                               ─► Asset ml_container_cache
```

* Defaults come from `config/ml_container_cache.yaml` (or `$ML_CACHE_CONFIG`), read when the run
  starts; every field of the trigger form left empty keeps its default.
* Bad input fails `validate_inputs`, before any AWS call, naming the offending value.
* Publish is last: a failed run leaves the SSM parameter and the previous snapshot untouched,
  and `terminate_builder` leaves no instance running.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.timetables.trigger import CronTriggerTimetable

from ml_cache.assets import ML_CONTAINER_CACHE
from ml_cache.operators.build_script import RunBuilderScriptOperator
from ml_cache.operators.builder import LaunchBuilderOperator, TerminateBuilderOperator, WaitForBuilderOperator
from ml_cache.operators.snapshot import CreateCacheSnapshotOperator, EnableFastSnapshotRestoreOperator

AWS_CONN_ID = "aws_default"


def _optional(json_type: str, description: str, **schema: Any) -> Param:
    """A form field whose empty value means "the config file's default"."""
    return Param(None, type=["null", json_type], description=description + " Empty: config default.", **schema)


with DAG(
    dag_id="ml_container_cache_build",
    description="Build the ML container image cache snapshot and publish it",
    doc_md=__doc__,
    schedule=CronTriggerTimetable(os.environ.get("ML_CACHE_BUILD_SCHEDULE", "0 3 * * 1"), timezone="UTC"),
    # No start_date: the first scheduled build is the next tick, not one at deploy time.
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=float(os.environ.get("ML_CACHE_BUILD_TIMEOUT_HOURS", "8"))),
    # Every task is idempotent (tokens, tags, run-marked versions), so retries are safe; two also
    # absorb apache/airflow#71580 (a trigger that fires at once can fail the resumed try).
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "aws_conn_id": AWS_CONN_ID},
    tags=["ml-container-cache", "eks", "ebs"],
    params={
        "images": _optional("array", "Image references to cache (registry/repo:tag or @sha256:digest).",
                            items={"type": "string"}),
        "architecture": Param(None, type=["null", "string"], enum=[None, "x86_64", "arm64"],
                              description="CPU architecture of the GPU nodes. Empty: config default."),
        "kubernetes_version": _optional("string", "EKS version of the AL2023 AMI the builder runs.",
                                        pattern=r"^1\.[0-9]{2}$"),
        "instance_types": _optional("array", "Builder instance types, tried in order on capacity errors.",
                                    items={"type": "string"}),
        "fsr_availability_zones": _optional("array", "AZs of the GPU node group, where FSR is enabled.",
                                            items={"type": "string"}),
        "enable_fast_snapshot_restore": _optional("boolean", "Enable FSR (costs $0.75 per AZ-hour)."),
        "volume_size_gib": _optional("integer", "Data volume size: compressed + unpacked images, x1.3.",
                                     minimum=1, maximum=16384),
        "volume_iops": _optional("integer", "Data volume gp3 IOPS.", minimum=3000, maximum=16000),
        "volume_throughput_mibps": _optional("integer", "Data volume gp3 throughput (MiB/s).",
                                             minimum=125, maximum=1000),
        "pull_parallelism": _optional("integer", "Images pulled at once on the builder.", minimum=1, maximum=16),
        "snapshot_name": _optional("string", "Name tag of the snapshot.", maxLength=128),
        "snapshot_description": _optional("string", "Snapshot description.", maxLength=255),
    },
) as dag:

    @task(retries=0)  # bad input does not get better by waiting
    def validate_inputs(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Merge the form over the config file and validate everything, before any AWS call."""
        from ml_cache.hooks.ec2 import CacheEc2Hook
        from ml_cache.settings import load_config, resolve_build_settings

        region = CacheEc2Hook(aws_conn_id=AWS_CONN_ID).conn_region_name
        return resolve_build_settings(load_config(), dict(params or {}), region=region)

    @task
    def resolve_ami(settings: dict[str, Any]) -> str:
        """The EKS-optimized AL2023 AMI, from its public SSM parameter."""
        from ml_cache.hooks.ssm import CacheSsmHook

        name = settings["ami_ssm_parameter"]
        parameter = CacheSsmHook(aws_conn_id=AWS_CONN_ID).get_parameter(name)
        if parameter is None:
            raise RuntimeError(f"No EKS-optimized AMI parameter {name}: is Kubernetes "
                               f"{settings['kubernetes_version']} supported in this region?")
        return parameter["Value"]

    @task
    def register_build_script(settings: dict[str, Any]) -> dict[str, str]:
        """Our SSM document holds the builder script as shipped with this DAG (a new version if changed)."""
        from ml_cache.hooks.ssm import CacheSsmHook
        from ml_cache.ssm_document import register_document

        return register_document(CacheSsmHook(aws_conn_id=AWS_CONN_ID), settings["ssm_document"],
                                 {"ml-cache:pipeline": settings["pipeline"]})

    @task
    def verify_build_report(settings: dict[str, Any], builder: dict[str, Any], command_id: str) -> dict[str, Any]:
        """Exit 0 is not proof: every image must be in the report, unpacked, with its digest."""
        from ml_cache.hooks.ssm import CacheSsmHook
        from ml_cache.report import parse_build_report

        invocation = CacheSsmHook(aws_conn_id=AWS_CONN_ID).get_command_invocation(command_id, builder["instance_id"])
        return parse_build_report(invocation.get("StandardOutputContent", ""), settings["images"],
                                  volume_id=builder["data_volume_id"])

    @task
    def verify_quiesced(builder: dict[str, Any], command_id: str) -> dict[str, Any]:
        """containerd stopped, data synced, volume unmounted: only then is a snapshot consistent."""
        from ml_cache.hooks.ssm import CacheSsmHook
        from ml_cache.report import parse_quiesce_report

        invocation = CacheSsmHook(aws_conn_id=AWS_CONN_ID).get_command_invocation(command_id, builder["instance_id"])
        return parse_quiesce_report(invocation.get("StandardOutputContent", ""), volume_id=builder["data_volume_id"])

    @task(outlets=[ML_CONTAINER_CACHE])
    def publish_snapshot(settings: dict[str, Any], report: dict[str, Any], snapshot_id: str,
                         fsr_states: dict[str, str], **context: Any) -> dict[str, Any]:
        """Last step: SSM parameter (bare id), metadata sibling, Asset event."""
        from ml_cache.hooks.ec2 import CacheEc2Hook
        from ml_cache.hooks.ssm import CacheSsmHook
        from ml_cache.publish import asset_extra, publish_snapshot, snapshot_metadata

        snapshot = CacheEc2Hook(aws_conn_id=AWS_CONN_ID).describe_snapshot(snapshot_id)
        metadata = snapshot_metadata(settings, report, snapshot, fsr_states, context["run_id"])
        published = publish_snapshot(CacheSsmHook(aws_conn_id=AWS_CONN_ID), settings, metadata)
        context["outlet_events"][ML_CONTAINER_CACHE].extra = asset_extra(metadata)
        return {**published, **asset_extra(metadata)}

    settings = validate_inputs()
    ami = resolve_ami(settings)
    document = register_build_script(settings)
    launch = LaunchBuilderOperator(task_id="launch_builder", settings=settings, image_id=ami)
    builder = WaitForBuilderOperator(task_id="wait_for_builder", settings=settings, builder=launch.output)
    build = RunBuilderScriptOperator(task_id="run_build_script", action="build", settings=settings,
                                     builder=builder.output, document=document)
    report = verify_build_report(settings, builder.output, build.output)
    quiesce = RunBuilderScriptOperator(task_id="quiesce_builder", action="quiesce", settings=settings,
                                       builder=builder.output, document=document)
    quiesced = verify_quiesced(builder.output, quiesce.output)
    snapshot = CreateCacheSnapshotOperator(task_id="create_snapshot", settings=settings, builder=builder.output)
    fsr = EnableFastSnapshotRestoreOperator(task_id="enable_fast_snapshot_restore", settings=settings,
                                            snapshot_id=snapshot.output)
    published = publish_snapshot(settings, report, snapshot.output, fsr.output)
    terminate = TerminateBuilderOperator(task_id="terminate_builder", settings=settings, builder=launch.output)

    document >> launch
    report >> quiesce
    quiesced >> snapshot
    snapshot >> terminate  # the builder is not needed once the snapshot is complete
    terminate.as_teardown(setups=launch)
    fsr >> published
