"""The late-build alert is an Airflow Deadline Alert, proven with the real scheduler and triggerer (`airflow
standalone`, as `make run` starts it; `dag.test()` does not evaluate deadlines): after three short successful
runs, a build that stays mid-way (its builder's agent never comes online) past their average plus
`late_build_minutes` publishes the LATE message to the topic."""

from __future__ import annotations

import os
import time

import pytest
import yaml

from devstack.process import free_port
from tests.dags.airflow_waits import until
from tests.plugins.ml_cache.sns_inbox import subscribe_queue

DAG_ID = "ml_container_cache_build"




@pytest.mark.slow
def test_a_build_far_past_its_usual_time_sends_the_late_alert(cloud, tmp_path):
    from devstack import process
    from devstack.stack import dag_runs
    from devstack.stack.airflow_standalone import start_airflow
    from devstack.stack.layout import Layout

    inbox = subscribe_queue(cloud.client("sns"), cloud.client("sqs"))
    config = yaml.safe_load(cloud.config_path.read_text())
    config["timeouts"]["agent_online_seconds"] = 900  # every run stays at wait_for_builder until marked
    config["notifications"] = {"sns_topic_arn": inbox.topic_arn, "late_build_minutes": 1, "on_failure": False}
    cloud.config_path.write_text(yaml.safe_dump(config))
    cloud.set_faults(agent_offline=True)
    layout = Layout(home=tmp_path, cloud_port=int(cloud.endpoint.rsplit(":", 1)[1]), registry_port=free_port(),
                    airflow_port=free_port())
    env = {key: value for key, value in os.environ.items()  # the pytest session's Airflow is not this one
           if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN", "ML_CACHE")) and key != "AIRFLOW_HOME"}
    airflow = start_airflow(layout, base_env=env)
    log_file = layout.log_file("airflow")
    runs = f"/dags/{DAG_ID}/dagRuns"
    try:
        dag_runs.api(layout, "PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        for _ in range(3):  # the usual time: three runs a few seconds long, marked successful
            run_id = dag_runs.trigger(layout, DAG_ID)
            until("the run running", lambda run_id=run_id: dag_runs.api(
                layout, "GET", f"{runs}/{run_id}")["state"] == "running", 60, log_file)
            time.sleep(2)
            dag_runs.api(layout, "PATCH", f"{runs}/{run_id}", json={"state": "success"})

            def ended(run_id=run_id) -> bool:  # the average counts successful runs with an end date
                run = dag_runs.api(layout, "GET", f"{runs}/{run_id}")
                return run["state"] == "success" and bool(run["end_date"])

            until("the run ended successful", ended, 60, log_file)
        late = dag_runs.trigger(layout, DAG_ID)
        started = time.monotonic()
        (message,) = until("the LATE message", lambda: inbox.messages(wait_seconds=1), 240, log_file)
        assert time.monotonic() - started >= 55  # not before the average plus a minute
        assert message["Message"].startswith(f"{DAG_ID} run {late} is LATE: still running 1 min past the average")
        assert message["Subject"] == f"{DAG_ID} is running late"
        dag_runs.api(layout, "PATCH", f"{runs}/{late}", json={"state": "failed"})
    finally:
        process.stop(airflow)
