"""The UI walk against a real `airflow standalone` (as `make up` starts it) on the local cloud: the DAGs'
paused state on deploy, the trigger form the UI gets, and a failed run's note through the REST API."""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest
import yaml

from devstack.process import free_port
from tests.dags.airflow_waits import until

BUILD, ROLLOUT, JANITOR = "ml_container_cache_build", "ml_container_cache_rollout", "ml_container_cache_janitor"




@pytest.mark.slow
def test_paused_state_form_and_run_note_in_a_real_airflow(cloud, tmp_path):
    import requests

    from devstack import process
    from devstack.stack import dag_runs
    from devstack.stack.airflow_standalone import start_airflow
    from devstack.stack.layout import Layout

    layout = Layout(home=tmp_path, cloud_port=int(cloud.endpoint.rsplit(":", 1)[1]), registry_port=free_port(),
                    airflow_port=free_port())
    layout.config_path.parent.mkdir(parents=True, exist_ok=True)
    layout.config_path.write_text(cloud.config_path.read_text())  # the Airflow reads the layout's config
    env = {key: value for key, value in os.environ.items()  # the pytest session's Airflow is not this one
           if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN", "ML_CACHE")) and key != "AIRFLOW_HOME"}
    airflow = start_airflow(layout, base_env=env)
    log_file = layout.log_file("airflow")

    def dag(dag_id: str):
        answer = requests.get(f"{layout.airflow_url}/api/v2/dags/{dag_id}", timeout=30)
        return answer.json() if answer.status_code == 200 else None

    try:
        paused = {dag_id: until(f"{dag_id} parsed", lambda dag_id=dag_id: dag(dag_id), 120, log_file)["is_paused"]
                  for dag_id in (BUILD, ROLLOUT, JANITOR)}
        assert paused == {BUILD: True, ROLLOUT: False, JANITOR: False}  # as deployed: only the spending one waits
        dag_runs.unpause(layout)  # what `make up` does
        assert not any(dag(dag_id)["is_paused"] for dag_id in (BUILD, ROLLOUT, JANITOR))

        form = dag_runs.api(layout, "GET", f"/dags/{BUILD}/details")["params"]
        configured = yaml.safe_load(layout.config_path.read_text())["build"]
        assert form["images"]["value"] == configured["images"]
        assert form["enable_fast_snapshot_restore"]["value"] is True
        assert form["fsr_availability_zones"]["schema"]["section"] == "FSR"

        run_id = dag_runs.api(layout, "POST", f"/dags/{BUILD}/dagRuns", json={
            "logical_date": None, "conf": {"images": ["busybox;rm -rf /"]}})["dag_run_id"]
        url = f"/dags/{BUILD}/dagRuns/{quote(run_id, safe='')}"
        until("the run failed", lambda: dag_runs.api(layout, "GET", url)["state"] == "failed", 180, log_file)
        note = until("the run's note", lambda: dag_runs.api(layout, "GET", url)["note"], 60, log_file)
        assert note == ("validate_inputs: build: invalid image reference 'busybox;rm -rf /': character ';' at "
                        "position 8 is not allowed in an image reference")
    finally:
        process.stop(airflow)
