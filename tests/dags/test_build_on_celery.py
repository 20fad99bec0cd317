"""The distributed engine: the build DAG end to end on CeleryExecutor, with a real Postgres metadata
database and a real Redis broker (Debian's packages on 127.0.0.1, started and stopped here), each Airflow
component its own process (devstack/stack/airflow_celery.py, what `make up AIRFLOW=celery` starts), against
the local cloud; beside the standalone/SQLite path that `make run` and the other DAG tests take."""

from __future__ import annotations

import os
import subprocess

import pytest

from devstack.process import free_port, free_port_block
from devstack.stack import airflow_celery

pytestmark = pytest.mark.skipif(airflow_celery.missing() is not None, reason=str(airflow_celery.missing()))



@pytest.mark.slow
def test_the_build_runs_end_to_end_on_celery_with_postgres_and_redis(cloud, tmp_path):
    from devstack.stack import dag_runs
    from devstack.stack.airflow_standalone import BUILD_DAG_ID
    from devstack.stack.layout import Layout

    # the Airflow port's neighbours: +2 Postgres, +3 Redis, +4 worker logs
    layout = Layout(home=tmp_path, cloud_port=int(cloud.endpoint.rsplit(":", 1)[1]), registry_port=free_port(),
                    airflow_port=free_port_block((2, 3, 4)))
    assert layout.config_path == cloud.config_path
    env = {key: value for key, value in os.environ.items()  # the pytest session's Airflow is not this one
           if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN", "ML_CACHE")) and key != "AIRFLOW_HOME"}
    started = airflow_celery.start_airflow_celery(layout, base_env=env)
    try:
        run_id = dag_runs.trigger_build(layout, with_rollout=False)
        run, tis = dag_runs.watch(layout, BUILD_DAG_ID, run_id, timeout=900)
        states = {ti["task_id"]: ti["state"] for ti in tis}
        assert run["state"] == "success", states
        assert states["publish_snapshot"] == "success" and states["terminate_builder"] == "success", states
        # every task that ran code ran on a Celery worker (the scheduler itself marks an EmptyOperator done)
        ran = [ti for ti in tis if ti["state"] == "success" and ti.get("operator") != "EmptyOperator"]
        elsewhere = [(ti["task_id"], ti.get("queue"), ti.get("hostname")) for ti in ran
                     if ti.get("queue") != "default" or not ti.get("hostname")]
        assert ran and not elsewhere, elsewhere

        # The run lives in Postgres, and the worker took its tasks from Redis.
        psql = [str(airflow_celery.postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", str(layout.postgres_port),
                "-U", airflow_celery.DATABASE, "-d", airflow_celery.DATABASE, "-tA", "-c"]
        stored = subprocess.run([*psql, "SELECT run_id, state FROM dag_run"], capture_output=True, text=True,
                                check=True).stdout.split()
        assert f"{run_id}|success" in stored, stored
        worker_log = layout.log_file("airflow-worker").read_text(errors="replace")
        received = worker_log.count("] received")
        assert received >= len(ran), worker_log[-3000:]
    finally:
        airflow_celery.stop(started)
    assert not any(child.poll() is None for child in started)
