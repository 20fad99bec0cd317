"""The janitor DAG's shape: the pipeline's order, a daily schedule, one run at a time, the dry_run Param."""

from __future__ import annotations

import itertools

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def janitor():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags["ml_container_cache_janitor"]


def test_janitor_graph_is_inventory_plan_apply_report(janitor):
    edges = {(task.task_id, down) for task in janitor.tasks for down in task.downstream_task_ids}
    order = ["validate_inputs", "take_inventory", "plan_cleanup", "apply_cleanup", "report_cleanup"]
    assert edges == set(itertools.pairwise(order))
    assert janitor.get_task("report_cleanup").trigger_rule == "none_failed"  # reports after a dry run's skip
    assert janitor.get_task("validate_inputs").retries == 0
    assert janitor.get_task("apply_cleanup").retries >= 1  # a retry re-plans from a fresh inventory


def test_janitor_runs_daily_once_at_a_time_without_catchup(janitor):
    assert str(janitor.timetable.summary) == "0 5 * * *"
    assert janitor.max_active_runs == 1 and janitor.catchup is False


def test_dry_run_param_is_a_boolean_defaulting_to_a_real_run(janitor):
    from airflow.sdk.exceptions import ParamValidationError

    param = janitor.params.get_param("dry_run")
    assert param.value is False and param.schema["type"] == "boolean"
    janitor.params.validate()
    with pytest.raises(ParamValidationError):
        param.resolve("yes")


def test_janitor_run_timeout_is_its_fsr_wait_plus_the_margin(janitor):
    from datetime import timedelta

    from ml_cache.run_deadline import configured_timeouts

    t = configured_timeouts()
    assert janitor.dagrun_timeout == timedelta(seconds=t.fsr_seconds + t.run_margin_seconds)


def test_janitor_aws_tasks_fail_at_once_on_permanent_errors(janitor):
    for task_id in ("take_inventory", "apply_cleanup"):
        assert hasattr(janitor.get_task(task_id).python_callable, "__wrapped__"), task_id
