"""Every DAG file imports cleanly, and the build DAG has the shape the pipeline relies on."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from tests.conftest import REPO

DAGS = REPO / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {path.stem for path in DAGS.glob("*.py")} <= set(dagbag.dags)


def test_dag_ids_are_file_stems_and_docs_are_module_docstrings(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.fileloc.endswith(f"/{dag_id}.py")
        assert dag.doc_md and dag.doc_md.strip().startswith(f"# {dag_id}")


def test_dag_files_are_wiring_only():
    """Hooks and AWS responses live in plugins/ml_cache (steps, operators): a DAG file only wires them."""
    for path in DAGS.glob("*.py"):
        text = path.read_text()
        assert "Hook(" not in text, f"{path.name} constructs a hook"
        assert "boto3" not in text and ".conn." not in text, f"{path.name} talks to AWS itself"


def _earlier_results(value):
    from ml_cache.earlier_result import EarlierResult

    if isinstance(value, EarlierResult):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _earlier_results(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _earlier_results(item)


def test_every_earlier_result_comes_from_an_upstream_task(dagbag):
    """EarlierResult draws no edge, so the chain must put its producer before its consumer."""
    checked = 0
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            upstream = task.get_flat_relative_ids(upstream=True)
            for field in task.template_fields:
                for ref in _earlier_results(getattr(task, field, None)):
                    assert ref.task_id in upstream, f"{dag.dag_id}.{task.task_id} reads {ref.task_id}, not upstream"
                    checked += 1
    assert checked >= 10


def test_build_graph_draws_the_pipeline_and_nothing_else(dagbag):
    """The graph view shows the pipeline's order: no bundle of settings/builder edges across the DAG."""
    dag = dagbag.dags["ml_container_cache_build"]
    edges = {(task.task_id, down) for task in dag.tasks for down in task.downstream_task_ids}
    pipeline = ["validate_inputs", "resolve_images", "decide_build", "build_or_skip", "resolve_ami",
                "register_build_script", "launch_builder", "wait_for_builder", "run_build_script",
                "verify_build_report", "quiesce_builder", "verify_quiesced", "create_snapshot",
                "enable_fast_snapshot_restore", "publish_snapshot"]
    fork = {("build_or_skip", "up_to_date")}
    teardown = {("launch_builder", "terminate_builder"), ("create_snapshot", "terminate_builder"),
                ("launch_builder", "retire_unpublished_fsr"), ("publish_snapshot", "retire_unpublished_fsr")}
    verdict = {("publish_snapshot", "finish_build")}
    assert edges == set(itertools.pairwise(pipeline)) | fork | teardown | verdict


def test_rollout_graph_draws_the_pipeline_and_its_rollback(dagbag):
    dag = dagbag.dags["ml_container_cache_rollout"]
    edges = {(task.task_id, down) for task in dag.tasks for down in task.downstream_task_ids}
    pipeline = ["validate_inputs", "resolve_snapshot", "precheck_node_group", "create_launch_template_version",
                "update_node_group", "scale_up_for_validation", "validate_nodes", "publish_ready",
                "retire_superseded_fsr"]
    baseline = {("update_node_group", "scale_up_baseline"), ("scale_up_baseline", "validate_nodes")}  # beside it
    teardowns = ["publish_ready", "delete_validation_pods", "restore_node_group_scaling", "restore_baseline_scaling",
                 "rollback_node_group", "restore_snapshot_parameter", "retire_rejected_fsr"]
    assert edges == set(itertools.pairwise(pipeline)) | baseline | set(itertools.pairwise(teardowns))


def test_build_dag_schedule_and_limits(dagbag):
    dag = dagbag.dags["ml_container_cache_build"]
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert str(dag.timetable.summary) == "0 3 * * 1"


def test_build_run_timeout_outlasts_every_deadline_of_the_config(dagbag):
    """Past dagrun_timeout the scheduler skips the teardowns: it must never fire while a wait may."""
    from ml_cache.run_deadline import configured_timeouts, run_timeout

    dag = dagbag.dags["ml_container_cache_build"]
    t = configured_timeouts()
    waits = 2 * t.agent_online_seconds + 2 * (t.build_seconds + 600) + t.snapshot_seconds + t.fsr_seconds
    assert dag.dagrun_timeout == run_timeout("build") == timedelta(seconds=waits + t.run_margin_seconds)


def test_every_teardown_fails_the_run_when_it_fails(dagbag):
    for dag_id in ("ml_container_cache_build", "ml_container_cache_janitor"):
        teardowns = [task for task in dagbag.dags[dag_id].tasks if task.is_teardown]
        assert all(task.on_failure_fail_dagrun for task in teardowns), dag_id
    build = dagbag.dags["ml_container_cache_build"]
    assert {task.task_id for task in build.tasks if task.is_teardown} == {"terminate_builder",
                                                                          "retire_unpublished_fsr"}


def test_a_failed_step_reaches_a_leaf_that_decides_the_run_state(dagbag):
    """Teardowns with on_failure_fail_dagrun are leaves and the steps before them are not
    (DagRun._tis_for_dagrun_state): without a work leaf after publish, a failed build whose teardowns
    succeeded would end SUCCESS."""
    dag = dagbag.dags["ml_container_cache_build"]
    work_leaves = {task.task_id for task in dag.tasks if not task.downstream_task_ids and not task.is_teardown}
    assert work_leaves == {"up_to_date", "finish_build"}
    assert dag.get_task("finish_build").trigger_rule == "all_success"
    every_step = dag.get_task("finish_build").get_flat_relative_ids(upstream=True)
    assert {"run_build_script", "create_snapshot", "publish_snapshot"} <= every_step


def test_a_failed_build_run_cleans_up_by_tag_even_when_its_teardowns_were_skipped(dagbag):
    from ml_cache.run_callbacks import clean_up_failed_build

    callback = dagbag.dags["ml_container_cache_build"].on_failure_callback[0]  # first: before any notification
    assert callback.func is clean_up_failed_build and callback.keywords == {"aws_conn_id": "aws_default"}


@pytest.mark.parametrize("dag_id", ["ml_container_cache_build", "ml_container_cache_rollout",
                                    "ml_container_cache_janitor"])
def test_every_pipeline_dag_notifies_failed_tasks_failed_runs_and_successes(dagbag, dag_id):
    """Each task's last failed try notifies (it holds the exception); the DAG's failure callbacks end with the
    run notifier, after the cleanups; a run's success notifies when configured."""
    from ml_cache.notify import PipelineNotifier

    dag = dagbag.dags[dag_id]
    callbacks = dag.on_failure_callback if isinstance(dag.on_failure_callback, list) else [dag.on_failure_callback]
    assert [getattr(c, "event", None) for c in callbacks][-1] == "run_failure"
    assert all(not isinstance(c, PipelineNotifier) for c in callbacks[:-1])
    assert isinstance(dag.on_success_callback, PipelineNotifier) and dag.on_success_callback.event == "run_success"
    for task in dag.tasks:
        notifiers = [c for c in (task.on_failure_callback or []) if isinstance(c, PipelineNotifier)]
        assert [n.event for n in notifiers] == ["task_failure"], task.task_id
        assert notifiers[0].aws_conn_id == "aws_default"


def test_build_tasks_that_call_aws_fail_at_once_on_permanent_errors(dagbag):
    """`fail_fast_task` under `@task`: a refused permission is not retried twice."""
    dag = dagbag.dags["ml_container_cache_build"]
    pure = {"validate_inputs", "build_or_skip"}  # input checks (retries=0) and the branch
    for task in dag.tasks:
        if hasattr(task, "python_callable") and task.task_id not in pure:
            assert hasattr(task.python_callable, "__wrapped__"), f"{task.task_id} is not wrapped in fail_fast_task"


def test_terminate_is_the_teardown_of_the_launch(dagbag):
    dag = dagbag.dags["ml_container_cache_build"]
    terminate = dag.get_task("terminate_builder")
    assert terminate.is_teardown
    assert dag.get_task("launch_builder").is_setup
    assert "launch_builder" in terminate.upstream_task_ids
    assert "create_snapshot" in terminate.upstream_task_ids
    # publish never waits on the teardown and the teardown never gates publishing
    assert "terminate_builder" not in dag.get_task("publish_snapshot").get_flat_relative_ids(upstream=True)


def test_an_unpublished_snapshot_loses_fsr_whatever_failed(dagbag):
    """A teardown, so it runs after a failed FSR or publish and never decides the run's state."""
    dag = dagbag.dags["ml_container_cache_build"]
    retire = dag.get_task("retire_unpublished_fsr")
    assert retire.is_teardown
    assert {"launch_builder", "publish_snapshot"} <= retire.upstream_task_ids


def test_an_up_to_date_run_forks_before_anything_is_launched(dagbag):
    dag = dagbag.dags["ml_container_cache_build"]
    assert dag.get_task("build_or_skip").downstream_task_ids == {"up_to_date", "resolve_ami"}
    assert "launch_builder" in dag.get_task("resolve_ami").get_flat_relative_ids(upstream=False)


def test_build_params_form(dagbag):
    params = dagbag.dags["ml_container_cache_build"].params
    expected = {"images", "architecture", "kubernetes_version", "instance_types", "fsr_availability_zones",
                "enable_fast_snapshot_restore", "volume_size_gib", "volume_iops", "volume_throughput_mibps",
                "snapshot_name", "snapshot_description", "pull_parallelism", "incremental", "force_rebuild"}
    assert expected <= set(params)
    assert params.get_param("images").value  # the configured images, shown in the form (test_dag_ui.py)
    params.validate()


def test_publish_emits_the_cache_asset(dagbag):
    outlets = dagbag.dags["ml_container_cache_build"].get_task("publish_snapshot").outlets
    assert [asset.name for asset in outlets] == ["ml_container_cache"]


def test_rollout_runs_on_the_cache_asset_and_publishes_ready(dagbag):
    dag = dagbag.dags["ml_container_cache_rollout"]
    assert [asset.name for asset in dag.timetable.asset_condition.objects] == ["ml_container_cache"]
    assert dag.max_active_runs == 1
    assert [a.name for a in dag.get_task("publish_ready").outlets] == ["ml_container_cache_ready"]
    assert "validate_nodes" in dag.get_task("publish_ready").upstream_task_ids
    assert "update_node_group" in dag.get_task("validate_nodes").get_flat_relative_ids(upstream=True)


def test_rollback_is_a_teardown_that_fails_the_run_when_it_fails(dagbag):
    dag = dagbag.dags["ml_container_cache_rollout"]
    for task_id in ("rollback_node_group", "restore_snapshot_parameter"):
        task = dag.get_task(task_id)
        assert task.is_teardown and task.on_failure_fail_dagrun
        assert {"update_node_group", "validate_nodes", "publish_ready"} <= task.get_flat_relative_ids(upstream=True)
    # retries absorb Airflow's own hiccups; a failed verdict is final (AirflowFailException)
    from airflow.providers.common.compat.sdk import AirflowFailException

    from ml_cache.sensors.validation import CacheValidationFailed

    assert dag.get_task("validate_nodes").retries >= 1 and issubclass(CacheValidationFailed, AirflowFailException)
    assert dag.params.get_param("force_update").value is False  # never `force` unless asked


def test_data_team_example_schedules_on_the_ready_asset(dagbag):
    dag = dagbag.dags["example_gpu_training"]
    assert [asset.name for asset in dag.timetable.asset_condition.objects] == ["ml_container_cache_ready"]


def test_console_links_survive_serialization(dagbag):
    """What the API server shows: the deserialized tasks keep their console links (name and XCom key)."""
    from airflow.serialization.serialized_objects import DagSerialization

    def links(dag_id: str) -> dict[str, list[str]]:
        dag = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags[dag_id]))
        return {task.task_id: [link.name for link in task.operator_extra_links] for task in dag.tasks
                if task.operator_extra_links}

    build = links("ml_container_cache_build")
    assert build["launch_builder"] == ["Instance"] and build["run_build_script"] == ["Run Command"]
    assert build["create_snapshot"] == ["EBS snapshot"]
    assert links("ml_container_cache_rollout")["update_node_group"] == ["EKS node group"]
