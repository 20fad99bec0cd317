"""A cleared build run launches a new builder (issue 10: the client token carries the clear generation).

EC2 answers a reused ClientToken with the earlier instance for 24 hours after it terminated (the local
cloud enforces it: devstack/moto_ext/ec2/idempotency.py), so with a token from the run's identity alone
a cleared run would get its terminated builder back and never build.
"""

from __future__ import annotations

from typing import Any

from tests.dags.conftest import needs_data_plane, run_dag


def builder_of(run) -> dict[str, Any]:
    (launch,) = [ti for ti in run.get_task_instances() if ti.task_id == "launch_builder"]
    return launch.xcom_pull(task_ids="launch_builder")


def clear_as_the_ui_does(run) -> None:
    """What `POST /api/v2/dags/{dag_id}/dagRuns/{run_id}/clear` does (api_fastapi perform_clear_dag_run)."""
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    with create_session() as session:
        session.add(run)
        dag = DBDagBag().get_dag_for_run(run, session=session)
        dag.clear(run_id=run.run_id, task_ids=None, only_new=False, only_failed=False, run_on_latest_version=False,
                  session=session)


def run_again(dag, cleared, monkeypatch):
    """dag.test() on the cleared run itself, as the scheduler would pick it up (dag.test otherwise replaces
    the run of that logical date by a new one, with new task instances that were never cleared)."""
    import airflow.models.dagrun
    from airflow.utils.state import DagRunState

    def the_cleared_run(*, dag, session, **_: Any):
        run = session.merge(cleared)
        run.dag = dag  # what create_dagrun sets on a new run
        run.state = DagRunState.RUNNING
        session.commit()
        return run

    monkeypatch.setattr(airflow.models.dagrun, "get_or_create_dagrun", the_cleared_run)
    run = dag.test(logical_date=cleared.logical_date)
    return run, {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


@needs_data_plane
def test_a_cleared_run_launches_a_new_builder_and_succeeds(cloud, build_dag, monkeypatch):
    ec2 = cloud.client("ec2")
    cloud.set_faults(ssm_command_status="Failed")  # the build fails after the launch: the run is worth a clear
    failed, states = run_dag(build_dag)
    assert str(failed.state) == "failed" and states["launch_builder"] == "success", states
    first = builder_of(failed)["instance_id"]
    first_token = ec2.describe_instances(InstanceIds=[first])["Reservations"][0]["Instances"][0]["ClientToken"]
    assert states["terminate_builder"] == "success"
    assert cloud.parameter() == cloud.previous_snapshot

    cloud.reset_faults()  # the cause is fixed; the operator clears the run in the UI
    clear_as_the_ui_does(failed)
    run, states = run_again(build_dag, failed, monkeypatch)

    assert run.run_id == failed.run_id and run.clear_number >= 1
    assert str(run.state) == "success", states
    second = builder_of(run)["instance_id"]
    assert second != first
    described = ec2.describe_instances(InstanceIds=[first, second])["Reservations"]
    instances = {i["InstanceId"]: i for r in described for i in r["Instances"]}
    assert instances[second]["ClientToken"] != first_token
    assert {i["State"]["Name"] for i in instances.values()} == {"terminated"}  # both torn down
    assert cloud.parameter() != cloud.previous_snapshot  # the cleared run published
