"""Waits whose condition holds within seconds end in the task's own try, without deferring.

A trigger that fires at once can fail the resumed try (apache/airflow#71580): every run showed a
failed first try of `enable_fast_snapshot_restore` on the local cloud, where FSR is enabled in 1 s.
"""

from __future__ import annotations

import re

from tests.dags.conftest import needs_data_plane, run_dag

SETTLED = ("wait_for_builder", "create_snapshot", "enable_fast_snapshot_restore")


def deferred_tasks(output: str) -> set[str]:
    """Tasks whose `dag.test()` section ran a trigger in line (they deferred)."""
    bodies = re.finditer(r"\[DAG TEST\] starting task_id=(\S+)(.*?)\[DAG TEST\] end task task_id=\1", output, re.S)
    sections = {match.group(1): match.group(2) for match in bodies}
    assert "enable_fast_snapshot_restore" in sections, "no dag.test() task sections in the log"
    return {task for task, body in sections.items() if "running trigger in line" in body}


@needs_data_plane
def test_fast_waits_take_one_try_and_never_defer(cloud, build_dag, caplog):
    run, states = run_dag(build_dag)
    assert str(run.state) == "success", states
    tries = {ti.task_id: ti.try_number for ti in run.get_task_instances()}
    assert {task: tries[task] for task in SETTLED} == dict.fromkeys(SETTLED, 1)
    assert not deferred_tasks(caplog.text) & set(SETTLED)
