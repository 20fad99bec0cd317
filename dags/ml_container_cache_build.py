"""
# ml_container_cache_build

Pre-pulls ML container images into containerd on an EBS volume, snapshots it, enables Fast
Snapshot Restore (FSR) and publishes the snapshot id, so new EKS GPU nodes start pods in seconds.

```text
validate_inputs ─► resolve_images ─► decide_build ─► build_or_skip
  ├► up_to_date (nothing launched, no event)
  └► resolve_ami ─► register_build_script ─► launch_builder (setup)
     ─► wait_for_builder ─► run_build_script ─► verify_build_report
     ─► quiesce_builder ─► verify_quiesced ─► create_snapshot
          ├► terminate_builder (teardown: runs whatever failed)
          └► enable_fast_snapshot_restore ─► publish_snapshot (─► Asset)
               ├► finish_build (the run's verdict: upstream_failed when any step failed)
               └► retire_unpublished_fsr (teardown)
```

A failing teardown fails the run (`on_failure_fail_dagrun`). Airflow then counts the teardowns as
the run's leaves instead of the steps before them, so `finish_build` is the leaf that carries a
failed step into the run's state. The run timeout is derived from the configured deadlines
(`ml_cache.run_deadline`); a run failed past it anyway (the scheduler then skips the teardowns)
still loses its builders and its unpublished FSR through the DAG's `on_failure_callback`.

* Defaults come from `plugins/ml_cache/defaults/ml_container_cache.yaml` (or `$ML_CACHE_CONFIG`): the trigger form
  shows them, and a field left at its default takes the file's value when the run starts.
* Runs weekly, or also after a burst of ECR pushes when `ML_CACHE_PUSH_QUEUE_URL` names the queue
  Terraform's `ecr_push_events` fills (`ml_cache.push_schedule`; one run per burst, see
  `ml_cache.triggers.ecr_push`); the pushes are logged by `validate_inputs`, and a push the image
  set does not name ends at `up_to_date`.
* Bad input fails `validate_inputs`, before any AWS call, naming the offending value.
* `resolve_images` asks each registry, with the image's own credentials, for its digest on our
  platform and its size, before any EC2 call: a missing tag or architecture, or a credential that
  does not work, fails the run there, naming the image. The builder pulls exactly those digests,
  and the data volume is sized from those sizes (unless the form sets a size that is enough).
* `decide_build` compares this run's fingerprint (resolved digests, platform, builder script,
  volume settings) with the published one: when equal, and the published snapshot exists, is
  complete and has FSR as configured, the run ends at `up_to_date`: no instance, no snapshot, no
  event, so no rollout. `force_rebuild` overrides. Otherwise the builder's data volume starts from
  the published snapshot (only new layers are pulled; the new snapshot is incremental), or blank
  when that cannot be (the task log says why).
* FSR is enabled only within the Region's quota and the pipeline's limit (`lifecycle:`), and a
  snapshot this run made but did not publish never keeps it (`retire_unpublished_fsr`).
* Publish is last: a failed run leaves the SSM parameter and the previous snapshot untouched,
  and `terminate_builder` leaves no instance running.
* Notifications (`notifications:` in the config, `ml_cache.notify`): a failed task sends the DAG, run, task and
  cause in one line; a run failed without a failed task (timeout) and, if asked, a successful run send too.
  `late_build_minutes` adds a Deadline Alert: a run that far past the average of the last successful ones.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, chain, task

from ml_cache.assets import ML_CONTAINER_CACHE
from ml_cache.cost import render_cost
from ml_cache.earlier_result import EarlierResult
from ml_cache.errors import fail_fast_task
from ml_cache.notify import PipelineNotifier, late_build_alert
from ml_cache.operators.build_script import RunBuilderScriptOperator
from ml_cache.operators.builder import LaunchBuilderOperator, TerminateBuilderOperator, WaitForBuilderOperator
from ml_cache.operators.snapshot import CreateCacheSnapshotOperator, EnableFastSnapshotRestoreOperator
from ml_cache.push_schedule import build_schedule, pushes_of_run
from ml_cache.resolution import ImageResolution
from ml_cache.run_callbacks import clean_up_failed_build
from ml_cache.run_deadline import check_run_fits, configured_timeouts, run_timeout
from ml_cache.run_note import note_failed_run, note_failed_task
from ml_cache.settings import BuildSettings
from ml_cache.settings.params import build_params
from ml_cache.steps import build as steps

AWS_CONN_ID = "aws_default"
log = logging.getLogger(__name__)
SETTINGS = EarlierResult("validate_inputs", BuildSettings)  # far-travelling results: no edges drawn
RESOLVED = EarlierResult("resolve_images", ImageResolution)
DECISION = EarlierResult("decide_build")
BUILDER = EarlierResult("wait_for_builder")
POLL = SETTINGS["timeouts.poll_seconds"]

with DAG(
    dag_id="ml_container_cache_build",
    description="Build the ML container image cache snapshot and publish it",
    doc_md=__doc__,
    schedule=build_schedule(AWS_CONN_ID),  # weekly cron, OR a burst of ECR pushes when ML_CACHE_PUSH_QUEUE_URL is set
    # No start_date: the first scheduled build is the next tick, not one at deploy time.
    catchup=False,
    # Paused on deploy: a build launches EC2 and turns on FSR (billed per AZ-hour) every week, so a new
    # deployment starts spending when someone unpauses it, once the config (subnets, images) is right.
    is_paused_upon_creation=True,
    max_active_runs=1,
    dagrun_timeout=run_timeout("build"),  # the waits' deadlines from the config file, plus a margin
    # The cleanup first; Airflow runs each callback of the list on its own, so neither stops the other.
    on_failure_callback=[partial(clean_up_failed_build, aws_conn_id=AWS_CONN_ID),  # also after a timeout
                         note_failed_run, PipelineNotifier("run_failure", aws_conn_id=AWS_CONN_ID)],
    on_success_callback=PipelineNotifier("run_success", aws_conn_id=AWS_CONN_ID),
    deadline=late_build_alert(AWS_CONN_ID),  # notifications.late_build_minutes past the usual time; None: off
    # Every task is idempotent (tokens, tags, run-marked versions), so retries are safe; two also
    # absorb apache/airflow#71580 (a trigger that fires at once can fail the resumed try).
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "aws_conn_id": AWS_CONN_ID,
                  # a failed task's cause becomes the run's note (ml_cache.run_note), and is notified
                  "on_failure_callback": [note_failed_task, PipelineNotifier("task_failure", aws_conn_id=AWS_CONN_ID)]},
    tags=["ml-container-cache", "eks", "ebs"],
    params=build_params(),
) as dag:

    @task(retries=0)  # bad input does not get better by waiting
    @fail_fast_task  # the cause in one line, without pydantic's frames
    def validate_inputs(params: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
        """Merge the form over the config file and validate everything, before any AWS call."""
        check_run_fits("build", configured_timeouts(), context["dag"].dagrun_timeout)
        for push in pushes_of_run(context.get("triggering_asset_events")):
            log.info("Pushed: %s:%s %s", push["repository"], push["tag"], push["digest"])
        return steps.validate_inputs(params, aws_conn_id=AWS_CONN_ID)

    @task
    @fail_fast_task
    def resolve_images(settings: BuildSettings) -> dict[str, Any]:
        """Digests, platform and sizes from each registry with its credentials, before any EC2 call."""
        return steps.resolve_images(settings, aws_conn_id=AWS_CONN_ID)

    @task
    @fail_fast_task
    def decide_build(settings: BuildSettings, resolution: ImageResolution) -> dict[str, Any]:
        """Up to date, or build (from the published snapshot when it can): compares fingerprints."""
        decision = steps.decide_build(settings, resolution, aws_conn_id=AWS_CONN_ID)
        for reason in decision["reasons"]:
            log.info("%s: %s", "Up to date" if decision["up_to_date"] else "Build needed", reason)
        if not decision["up_to_date"]:
            log.info("Data volume: %s (%s)", decision["base"]["mode"], decision["base"]["reason"])
        return decision

    @task.branch
    def build_or_skip(decision: dict[str, Any]) -> str:
        """The pipeline's fork: `up_to_date` ends the run with nothing launched."""
        return "up_to_date" if decision["up_to_date"] else "resolve_ami"

    @task
    @fail_fast_task
    def up_to_date(settings: BuildSettings, decision: dict[str, Any], **context: Any) -> dict[str, Any]:
        """Nothing changed: no instance, no snapshot, no Asset event (hence no rollout)."""
        summary = steps.up_to_date_summary(settings, decision, context["dag_run"].start_date, aws_conn_id=AWS_CONN_ID)
        log.info("UP TO DATE: %s is live; 0 instances launched; decided in %s s\n%s", summary["snapshot_id"],
                 summary["decided_in_seconds"], render_cost(summary["cost"]))
        return summary

    @task
    @fail_fast_task
    def resolve_ami(settings: BuildSettings) -> str:
        """The EKS-optimized AL2023 AMI, from its public SSM parameter."""
        return steps.resolve_ami(settings, aws_conn_id=AWS_CONN_ID)

    @task
    @fail_fast_task
    def register_build_script(settings: BuildSettings) -> dict[str, str]:
        """Our SSM document holds the builder script as shipped with this DAG (a new version if changed)."""
        return steps.register_build_script(settings, aws_conn_id=AWS_CONN_ID)

    @task
    @fail_fast_task
    def verify_build_report(settings: BuildSettings, resolution: ImageResolution, builder: dict[str, Any],
                            command_id: str) -> dict[str, Any]:
        """Exit 0 is not proof: every image must be in the report, unpacked, at the resolved digest."""
        return steps.verify_build_report(settings, resolution, builder, command_id, aws_conn_id=AWS_CONN_ID)

    @task
    @fail_fast_task
    def verify_quiesced(builder: dict[str, Any], command_id: str) -> dict[str, Any]:
        """containerd stopped, data synced, volume unmounted: only then is a snapshot consistent."""
        return steps.verify_quiesced(builder, command_id, aws_conn_id=AWS_CONN_ID)

    @task(outlets=[ML_CONTAINER_CACHE])
    @fail_fast_task
    def publish_snapshot(settings: BuildSettings, resolution: ImageResolution, decision: dict[str, Any],
                         builder: dict[str, Any], report: dict[str, Any], snapshot_id: str,
                         fsr_states: dict[str, str], **context: Any) -> dict[str, Any]:
        """Last step: the run's cost, published tag, SSM parameter (bare id), metadata sibling, Asset event."""
        cost = steps.run_cost(settings, decision, builder, snapshot_id, fsr_states, aws_conn_id=AWS_CONN_ID)
        log.info("%s", render_cost(cost) if "error" not in cost else cost)
        published, extra = steps.publish_snapshot(settings, resolution, decision, report, snapshot_id, fsr_states,
                                                  context["run_id"], cost, aws_conn_id=AWS_CONN_ID)
        context["outlet_events"][ML_CONTAINER_CACHE].extra = extra
        return published

    @task
    @fail_fast_task
    def retire_unpublished_fsr(settings: BuildSettings, snapshot_id: str) -> list[str]:
        """Teardown: FSR off on this run's snapshot unless it is the published one."""
        zones = steps.retire_unpublished_fsr(settings, snapshot_id, aws_conn_id=AWS_CONN_ID)
        if zones:
            log.info("FSR disabled on unpublished %s in %s", snapshot_id, zones)
        return zones

    script = {"builder": BUILDER, "document": EarlierResult("register_build_script"),
              "images": RESOLVED["pinned_images"], "platform": SETTINGS["platform"],
              "pull_parallelism": SETTINGS["build.pull_parallelism"],
              "registry_credentials": RESOLVED["registry_credentials"],
              "registry_endpoints": RESOLVED["registry_endpoints"],
              "timeout_seconds": SETTINGS["timeouts.build_seconds"], "poll_seconds": POLL,
              "log_group": SETTINGS["aws.build_log_group"]}

    settings = validate_inputs()
    resolved = resolve_images(SETTINGS)
    decision = decide_build(SETTINGS, RESOLVED)
    fork = build_or_skip(DECISION)
    nothing_to_do = up_to_date(SETTINGS, DECISION)
    ami = resolve_ami(SETTINGS)
    document = register_build_script(SETTINGS)
    launch = LaunchBuilderOperator(task_id="launch_builder", launch=SETTINGS["builder_launch"],
                                   image_id=EarlierResult("resolve_ami"),
                                   volume_size_gib=DECISION["base.volume_size_gib"],
                                   base_snapshot_id=DECISION["base.snapshot_id"])
    builder = WaitForBuilderOperator(task_id="wait_for_builder", builder=launch.output,
                                     timeout_seconds=SETTINGS["timeouts.agent_online_seconds"], poll_seconds=POLL)
    build = RunBuilderScriptOperator(task_id="run_build_script", action="build", **script)
    report = verify_build_report(SETTINGS, RESOLVED, BUILDER, build.output)
    quiesce = RunBuilderScriptOperator(task_id="quiesce_builder", action="quiesce", **script)
    quiesced = verify_quiesced(BUILDER, quiesce.output)
    snapshot = CreateCacheSnapshotOperator(
        task_id="create_snapshot", pipeline=SETTINGS["pipeline"], volume_id=BUILDER["data_volume_id"],
        name=SETTINGS["build.snapshot_name"], description=SETTINGS["build.snapshot_description"],
        timeout_seconds=SETTINGS["timeouts.snapshot_seconds"], poll_seconds=POLL)
    fsr = EnableFastSnapshotRestoreOperator(
        task_id="enable_fast_snapshot_restore", snapshot_id=snapshot.output,
        enabled=SETTINGS["build.enable_fast_snapshot_restore"],
        availability_zones=SETTINGS["build.fsr_availability_zones"], pipeline=SETTINGS["pipeline"],
        lifecycle=SETTINGS["lifecycle"], timeout_seconds=SETTINGS["timeouts.fsr_seconds"], poll_seconds=POLL)
    published = publish_snapshot(SETTINGS, RESOLVED, DECISION, BUILDER, EarlierResult("verify_build_report"),
                                 EarlierResult("create_snapshot"), fsr.output)
    terminate = TerminateBuilderOperator(task_id="terminate_builder", pipeline=SETTINGS["pipeline"],
                                         builder=launch.output)
    unpublished = retire_unpublished_fsr(SETTINGS, EarlierResult("create_snapshot"))

    chain(settings, resolved, decision, fork, [nothing_to_do, ami])
    chain(ami, document, launch, builder, build, report, quiesce, quiesced, snapshot, fsr, published)
    snapshot >> terminate  # the builder is not needed once the snapshot is complete
    terminate.as_teardown(setups=launch, on_failure_fail_dagrun=True)
    published >> unpublished.as_teardown(setups=launch, on_failure_fail_dagrun=True)  # also when FSR or publish failed
    published >> EmptyOperator(task_id="finish_build")  # the leaf that fails the run when a step failed
