"""
# ml_container_cache_rollout

Rolls a published cache snapshot out to the EKS GPU node group, proves on every new node that
the images were already present, and only then tells data teams (Asset `ml_container_cache_ready`).

```text
validate_inputs ─► resolve_snapshot ─► precheck_node_group
  ─► create_launch_template_version ─► update_node_group
  ─┬► scale_up_for_validation ─┬► validate_nodes ─► publish_ready ─► retire_superseded_fsr
   └► scale_up_baseline ───────┘                    └► Asset ml_container_cache_ready
teardowns (run whatever happened, each decides whether it has anything to undo;
one that fails fails the run):
  delete_validation_pods ─► restore_node_group_scaling ─► restore_baseline_scaling
  ─► rollback_node_group ─► restore_snapshot_parameter ─► retire_rejected_fsr
```

* Runs on each `ml_container_cache` event (the build DAG's publish), or manually with a snapshot.
* The new launch template version changes only the cache volume's snapshot; everything else of
  the template's default version (Terraform owns it) is carried over explicitly.
* New nodes are found by the labels `eks.amazonaws.com/sourceLaunchTemplateId`/`Version` (EKS
  launches from its own copy of our template, so the instances' tags name the copy).
* A node group scaled to 0 gets one node (desiredSize 1) for the validation, and its own scaling
  back afterwards, also when the validation failed.
* The uncached baseline (`rollout.uncached_baseline`, Terraform's `uncached_baseline`): its node group is
  kept at 0 and gets one fresh node per rollout the same way, so each week's uncached start is a cold
  pull (a node kept up would still hold last week's images); a warm baseline is left out of the speed-up.
* Unless `publish_ready` succeeded, the node group goes back to its previous launch template
  version and the SSM parameter back to the previous snapshot; the run ends FAILED.
  `force` is used only when the `force_update` parameter asks for it.
* The run timeout is the sum of the configured deadlines plus a margin (`ml_cache.run_deadline`); if
  it still fires (Airflow then skips the teardowns), the DAG's failure callback restores the parameter
  and starts the rollback.
* Fast Snapshot Restore stays on the live snapshot only: once validated, the snapshot the nodes ran
  before loses it; after a rollback, the rejected one does.
* Notifications (`notifications:` in the config, `ml_cache.notify`): a failed task sends the DAG, run, task and
  cause in one line; a run failed without a failed task (timeout) and, if asked, a successful run send too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, chain, task
from airflow.sdk.definitions.asset import AssetAll

from ml_cache.assets import ML_CONTAINER_CACHE, ML_CONTAINER_CACHE_READY
from ml_cache.earlier_result import EarlierResult
from ml_cache.errors import fail_fast_task
from ml_cache.notify import PipelineNotifier
from ml_cache.operators.nodegroup import ScaleNodegroupOperator, UpdateNodegroupOperator
from ml_cache.operators.validation import DeleteValidationPodsOperator
from ml_cache.rollout_target import RolloutTarget
from ml_cache.run_deadline import run_timeout
from ml_cache.run_note import note_failed_run, note_failed_task
from ml_cache.sensors.validation import ValidateCacheOnNodesSensor
from ml_cache.settings import RolloutSettings
from ml_cache.settings.models import RolloutConfig
from ml_cache.settings.params import rollout_params
from ml_cache.steps import rollout as steps

AWS_CONN_ID = "aws_default"
SETTINGS = EarlierResult("validate_inputs", RolloutSettings)  # far-travelling results: no edges drawn
TARGET = EarlierResult("resolve_snapshot")
CURRENT = EarlierResult("precheck_node_group")
VERSION = EarlierResult("create_launch_template_version")
POLL = SETTINGS["timeouts.poll_seconds"]


def undo_after_timeout(context: dict[str, Any]) -> None:
    """A timed-out run's teardowns are skipped: restore the parameter, start the rollback."""
    steps.undo_after_timeout(context, aws_conn_id=AWS_CONN_ID)


with DAG(
    dag_id="ml_container_cache_rollout",
    description="Roll the cache snapshot out to the GPU node group, validate, roll back on failure",
    doc_md=__doc__,
    schedule=AssetAll(ML_CONTAINER_CACHE),
    catchup=False,
    # Running on deploy: it runs only on a build's Asset event; paused, a published cache would never reach
    # the node group (and nothing in the UI would say so).
    is_paused_upon_creation=False,
    max_active_runs=1,
    dagrun_timeout=run_timeout("rollout"),
    # The undo first; Airflow runs each callback of the list on its own, so neither stops the other.
    on_failure_callback=[undo_after_timeout, note_failed_run, PipelineNotifier("run_failure", aws_conn_id=AWS_CONN_ID)],
    on_success_callback=PipelineNotifier("run_success", aws_conn_id=AWS_CONN_ID),
    # Every task is idempotent (tokens, tags, run-marked versions), so retries are safe; two also
    # absorb apache/airflow#71580 (a trigger that fires at once can fail the resumed try). Failures no
    # retry can cure (bad input, refused permissions, passed deadlines) fail at once (ml_cache.errors).
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "aws_conn_id": AWS_CONN_ID,
                  # a failed task's cause becomes the run's note (ml_cache.run_note), and is notified
                  "on_failure_callback": [note_failed_task, PipelineNotifier("task_failure", aws_conn_id=AWS_CONN_ID)]},
    tags=["ml-container-cache", "eks"],
    params=rollout_params(),
) as dag:

    @task
    @fail_fast_task
    def validate_inputs(params: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
        """Config `rollout:` (Terraform's output) merged with the form, validated before any AWS call."""
        return steps.validate_inputs(params, aws_conn_id=AWS_CONN_ID, dagrun_timeout=context["dag"].dagrun_timeout)

    @task(inlets=[ML_CONTAINER_CACHE])
    @fail_fast_task
    def resolve_snapshot(settings: RolloutSettings, **context: Any) -> RolloutTarget:
        """The snapshot and its images: form, else the triggering event, else the SSM parameters."""
        return steps.resolve_snapshot(settings, context.get("triggering_asset_events"), aws_conn_id=AWS_CONN_ID)

    @task
    @fail_fast_task
    def precheck_node_group(rollout: RolloutConfig) -> dict[str, Any]:
        """The node group exists, is ACTIVE, and runs our launch template; remember what it runs now."""
        return steps.precheck_node_group(rollout, aws_conn_id=AWS_CONN_ID)

    @task
    @fail_fast_task
    def create_launch_template_version(rollout: RolloutConfig, target: RolloutTarget, **context: Any) -> str:
        """A new version from the template's default (Terraform's content), only the cache snapshot changed."""
        return steps.create_launch_template_version(rollout, target["snapshot_id"], context["run_id"],
                                                    aws_conn_id=AWS_CONN_ID)

    @task(outlets=[ML_CONTAINER_CACHE_READY])
    def publish_ready(target: RolloutTarget, report: dict[str, Any], **context: Any) -> dict[str, Any]:
        """The cache is on every new node and proven: data teams' DAGs may start."""
        extra = steps.publish_ready(target, report, context["run_id"])
        context["outlet_events"][ML_CONTAINER_CACHE_READY].extra = extra
        return extra

    @task
    @fail_fast_task
    def restore_snapshot_parameter(settings: RolloutSettings, target: RolloutTarget, current: dict[str, Any],
                                   **context: Any) -> str | None:
        """Not published: the SSM parameter goes back to the snapshot the node group ran before this rollout."""
        if steps.rollout_published(context["ti"]):
            return None
        return steps.restore_snapshot_parameter(settings, target, current, aws_conn_id=AWS_CONN_ID)

    @task
    @fail_fast_task
    def retire_superseded_fsr(settings: RolloutSettings, target: RolloutTarget, current: dict[str, Any]) -> list[str]:
        """Validated: FSR off on the snapshot the nodes ran before (no rollback target any more)."""
        return steps.retire_superseded_fsr(settings, target, current, aws_conn_id=AWS_CONN_ID)

    @task
    @fail_fast_task
    def retire_rejected_fsr(settings: RolloutSettings, target: RolloutTarget, **context: Any) -> list[str]:
        """Not published: FSR off on the snapshot that failed."""
        if steps.rollout_published(context["ti"]):
            return []
        return steps.retire_rejected_fsr(settings, target, aws_conn_id=AWS_CONN_ID)

    node_group = {"cluster_name": SETTINGS["rollout.cluster_name"],
                  "node_group_name": SETTINGS["rollout.node_group_name"],
                  "timeout_seconds": SETTINGS["timeouts.update_seconds"], "poll_seconds": POLL}
    template = {"launch_template_id": SETTINGS["rollout.launch_template_id"], "force": SETTINGS["rollout.force_update"]}

    settings = validate_inputs()
    target = resolve_snapshot(SETTINGS)
    current = precheck_node_group(SETTINGS["rollout"])
    version = create_launch_template_version(SETTINGS["rollout"], TARGET)
    update = UpdateNodegroupOperator(task_id="update_node_group", version=version, **template, **node_group)
    # a node group scaled to 0 has no node to validate on: one for the validation
    scale_up = ScaleNodegroupOperator(task_id="scale_up_for_validation", scaling=CURRENT["validation_scaling"],
                                      **node_group)
    # A retry re-judges the same pods (never creates one again); a failed verdict is never retried.
    # the uncached baseline's group (kept at 0): one fresh node, so its pulls are cold
    baseline = {**node_group, "node_group_name": SETTINGS["rollout.baseline_node_group_name"]}
    scale_up_baseline = ScaleNodegroupOperator(task_id="scale_up_baseline",
                                               scaling=CURRENT["baseline_validation_scaling"], **baseline)
    report = ValidateCacheOnNodesSensor(task_id="validate_nodes", rollout=SETTINGS["rollout"], target=TARGET,
                                        version=VERSION, deadline_seconds=SETTINGS["timeouts.validation_seconds"],
                                        poll_seconds=POLL)
    ready = publish_ready(TARGET, report.output)
    chain(settings, target, current, version, update, [scale_up, scale_up_baseline], report, ready,
          retire_superseded_fsr(SETTINGS, TARGET, CURRENT))

    # Teardowns: each runs once everything before it is done, whatever its outcome, and decides itself
    # whether there is anything to undo (nothing once publish_ready succeeded; nothing changed, nothing
    # to undo); a teardown that fails fails the run.
    teardowns = [
        DeleteValidationPodsOperator(task_id="delete_validation_pods", rollout=SETTINGS["rollout"]),
        ScaleNodegroupOperator(task_id="restore_node_group_scaling", scaling=CURRENT["restore_scaling"],
                               **node_group),
        ScaleNodegroupOperator(task_id="restore_baseline_scaling", scaling=CURRENT["baseline_restore_scaling"],
                               **baseline),
        UpdateNodegroupOperator(task_id="rollback_node_group", version=CURRENT["launch_template_version"],
                                rollback=True, **template, **node_group),
        restore_snapshot_parameter(SETTINGS, TARGET, CURRENT),
        retire_rejected_fsr(SETTINGS, TARGET),
    ]
    ready >> teardowns[0]
    chain(*(teardown.as_teardown(on_failure_fail_dagrun=True) for teardown in teardowns))
