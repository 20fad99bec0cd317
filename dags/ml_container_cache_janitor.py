"""
# ml_container_cache_janitor

Keeps a year of weekly builds cheap and inside the FSR quota: terminates orphaned builders and
deletes their leftover volumes, turns Fast Snapshot Restore off on snapshots that are neither live
nor a rollback target, deletes snapshots beyond the retention, prunes old SSM document versions,
and reports each action (or, with `dry_run`, each would-be action) with the money it saves.

```text
validate_inputs ─► take_inventory ─► plan_cleanup ─► apply_cleanup ─► report_cleanup
                   (read-only)       (pure rules)    (skipped in a     (table + JSON XCom)
                                                      dry run)
```

* Daily at 05:00 UTC (`ML_CACHE_JANITOR_SCHEDULE` changes it) and manually; `dry_run` changes nothing.
* The run timeout is the FSR deadline `apply_cleanup` may wait plus a margin (`ml_cache.run_deadline`).
* Never deleted: a snapshot the SSM parameter holds or held in its recent history
  (`lifecycle.parameter_history_versions`), one a launch template version in use by a node group
  (or the target of an update in progress) or $Default/$Latest caches, one of a build still
  running, one whose FSR stays on. FSR is disabled first, the snapshot deleted once it is off.
* Orphaned builder: tagged role=builder, launched longer ago than the build deadline (agent online +
  build + snapshot timeouts) on AWS's clock, and its build run is not queued or running.
* A retry of `apply_cleanup` re-plans from a fresh inventory; every action is idempotent.
* Notifications (`notifications:` in the config, `ml_cache.notify`): a failed task sends the DAG, run, task and
  cause in one line; a run failed without a failed task (timeout) and, if asked, a successful run send too.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, chain, task
from airflow.timetables.trigger import CronTriggerTimetable

from ml_cache.earlier_result import EarlierResult
from ml_cache.errors import fail_fast_task
from ml_cache.janitor.inventory import Inventory
from ml_cache.janitor.plan import Plan
from ml_cache.notify import PipelineNotifier
from ml_cache.run_deadline import check_run_fits, configured_timeouts, run_timeout
from ml_cache.run_note import note_failed_run, note_failed_task
from ml_cache.settings import JanitorSettings
from ml_cache.steps import janitor as steps

AWS_CONN_ID = "aws_default"
SETTINGS = EarlierResult("validate_inputs", JanitorSettings)  # far-travelling results: no edges drawn
INVENTORY = EarlierResult("take_inventory", Inventory)
PLAN = EarlierResult("plan_cleanup", Plan)

with DAG(
    dag_id="ml_container_cache_janitor",
    description="Terminate orphaned builders, retire FSR, delete old snapshots and document versions",
    doc_md=__doc__,
    schedule=CronTriggerTimetable(os.environ.get("ML_CACHE_JANITOR_SCHEDULE", "0 5 * * *"), timezone="UTC"),
    catchup=False,
    # Running on deploy: it touches only what the pipeline tagged and stops what would keep billing
    # (orphaned builders, superseded FSR); with nothing built yet it finds nothing to do.
    is_paused_upon_creation=False,
    max_active_runs=1,
    dagrun_timeout=run_timeout("janitor"),  # apply_cleanup may wait up to timeouts.fsr_seconds for FSR to go off
    on_failure_callback=[note_failed_run, PipelineNotifier("run_failure", aws_conn_id=AWS_CONN_ID)],  # a run timeout
    on_success_callback=PipelineNotifier("run_success", aws_conn_id=AWS_CONN_ID),
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "aws_conn_id": AWS_CONN_ID,
                  # a failed task's cause becomes the run's note (ml_cache.run_note), and is notified
                  "on_failure_callback": [note_failed_task, PipelineNotifier("task_failure", aws_conn_id=AWS_CONN_ID)]},
    tags=["ml-container-cache", "ebs", "cost"],
    params={"dry_run": Param(False, type="boolean", description="Only report what would be done.")},
) as dag:

    @task(retries=0)  # bad input does not get better by waiting
    @fail_fast_task  # the cause in one line, without pydantic's frames
    def validate_inputs(params: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
        """Config `lifecycle:` and `rollout:` with the run's dry_run, validated before any AWS call."""
        check_run_fits("janitor", configured_timeouts(), context["dag"].dagrun_timeout)
        return steps.validate_inputs(params, aws_conn_id=AWS_CONN_ID)

    @task
    @fail_fast_task
    def take_inventory(settings: JanitorSettings, **context: Any) -> dict[str, Any]:
        """What exists (builders, volumes, snapshots, FSR, document versions) and what references it."""
        return steps.take_inventory(settings, context["ti"], aws_conn_id=AWS_CONN_ID)

    @task
    def plan_cleanup(settings: JanitorSettings, inventory: Inventory) -> dict[str, Any]:
        """Every action with its reason and savings, and what is kept and why."""
        return steps.plan(settings, inventory)

    @task
    @fail_fast_task
    def apply_cleanup(settings: JanitorSettings, inventory: Inventory, plan: Plan, **context: Any) -> dict[str, Any]:
        """Does the plan: FSR off before deletion; skipped in a dry run."""
        return steps.apply(settings, inventory, plan, context["ti"], aws_conn_id=AWS_CONN_ID)

    @task(trigger_rule="none_failed")  # also after a skipped apply_cleanup (dry run)
    def report_cleanup(settings: JanitorSettings, inventory: Inventory, plan: Plan,
                       **context: Any) -> dict[str, Any]:
        """The table of actions with $ per month saved and the total, also as this task's XCom."""
        return steps.report(settings, inventory, plan, context["ti"].xcom_pull(task_ids="apply_cleanup"))

    chain(validate_inputs(), take_inventory(SETTINGS), plan_cleanup(SETTINGS, INVENTORY),
          apply_cleanup(SETTINGS, INVENTORY, PLAN), report_cleanup(SETTINGS, INVENTORY, PLAN))
