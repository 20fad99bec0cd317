"""A DAG's run timeout, derived from the deadlines of the waits a run makes one after another.

Airflow 3.3 fails a run past `dagrun_timeout` from the scheduler and marks every unfinished task,
teardowns included, skipped (`SchedulerJobRunner._schedule_dag_run`): no terminate, no rollback.
So the run timeout must never fire while a wait's own deadline is still running: it is the sum of
the deadlines a run can spend in sequence (each counts once: a wait past its deadline fails at
once, it is not retried) plus `timeouts.run_margin_seconds` for everything else. The deadlines come
from the config file only (the trigger form has none), which the DAG file reads when parsed: one
small YAML read; `validate_inputs` refuses a run whose file changed since (`check_run_fits`).
A worker parses the DAG file again before each task, so there the check sees the worker's parse;
the scheduler's copy can lag it by the dag processor's refresh interval, which it cannot see.
"""

from __future__ import annotations

from datetime import timedelta

from ml_cache.images import InvalidInputs
from ml_cache.operators.build_script import DELIVERY_TIMEOUT_SECONDS
from ml_cache.settings.config import load_config
from ml_cache.settings.models import Timeouts

# The deadlines (Timeouts fields) of each DAG's waits, in the order a run can spend them.
DAG_WAITS: dict[str, tuple[str, ...]] = {
    # wait_for_builder: until running, then until its SSM agent is Online (each wait its own deadline);
    # run_build_script and quiesce_builder (both deferred with build_seconds); create_snapshot;
    # enable_fast_snapshot_restore. The teardowns do not wait (terminate, FSR disable are requests).
    "build": ("agent_online_seconds", "agent_online_seconds", "build_seconds", "build_seconds",
              "snapshot_seconds", "fsr_seconds"),
    # update_node_group, scale_up_for_validation (scale_up_baseline beside it), validate_nodes (cached pods, then
    # the uncached baseline), restore_node_group_scaling, restore_baseline_scaling, rollback_node_group
    "rollout": ("update_seconds", "update_seconds", "validation_seconds", "validation_seconds", "update_seconds",
                "update_seconds", "update_seconds"),
    # apply_cleanup: FSR going off
    "janitor": ("fsr_seconds",),
}

# Deadlines that are constants, not settings: each Run Command of the build may wait its delivery
# timeout on top of its execution timeout (run_build_script, quiesce_builder).
DAG_FIXED_WAIT_SECONDS: dict[str, int] = {"build": 2 * DELIVERY_TIMEOUT_SECONDS}


def configured_timeouts() -> Timeouts:
    """The config file's `timeouts:`; the defaults when the file cannot be read or is invalid, so
    the DAG still parses (its `validate_inputs` then reports the file's error)."""
    try:
        return Timeouts.model_validate(load_config().get("timeouts") or {})
    except ValueError:
        return Timeouts()


def run_timeout(dag: str, timeouts: Timeouts | None = None) -> timedelta:
    """`dagrun_timeout` for `dag` ("build", "rollout", "janitor"): its deadlines' sum plus the margin."""
    timeouts = timeouts if timeouts is not None else configured_timeouts()
    seconds = (sum(getattr(timeouts, name) for name in DAG_WAITS[dag]) + DAG_FIXED_WAIT_SECONDS.get(dag, 0)
               + timeouts.run_margin_seconds)
    return timedelta(seconds=seconds)


def check_run_fits(dag: str, timeouts: Timeouts, dagrun_timeout: timedelta | None) -> None:
    """Refuse a run whose deadlines need more than the timeout its DAG was parsed with."""
    needed = run_timeout(dag, timeouts)
    if dagrun_timeout is not None and dagrun_timeout < needed:
        raise InvalidInputs(
            f"timeouts: the configured deadlines need a run timeout of {needed}, but this DAG was parsed with "
            f"{dagrun_timeout} (the config file changed since): trigger again once the DAG is re-parsed")
