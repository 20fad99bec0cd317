"""Timeouts and teardowns of the build run: a config that needs a longer run is refused, a failing
teardown fails the run, and the DAG's failure callback leaves no builder behind, also after the
scheduler timed the run out and skipped its teardowns (fault catalog 32, 33)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from devstack.process import free_port
from tests.dags.airflow_waits import until
from tests.dags.conftest import assert_failed_with, needs_data_plane, run_dag
from tests.http_fakes import send_bytes
from tests.plugins.ml_cache.sns_inbox import subscribe_queue

# EC2's error document for a refused permission (EC2 API reference, "Error codes": UnauthorizedOperation, 403)
UNAUTHORIZED = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>UnauthorizedOperation'
                b'</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors>'
                b'<RequestID>refused</RequestID></Response>')


class _Refuse(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        send_bytes(self, 403, UNAUTHORIZED, "text/xml")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_connection(monkeypatch) -> Iterator[str]:
    """An AWS connection whose endpoint refuses every EC2 call as IAM would (a role without the permission)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    connection = {"conn_type": "aws", "login": "testing", "password": "testing",
                  "extra": {"region_name": "us-west-2", "endpoint_url": f"http://127.0.0.1:{server.server_port}"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_REFUSED", json.dumps(connection))
    yield "aws_refused"
    server.shutdown()


def run_builders(cloud, run_id: str) -> list[dict]:
    """Live instances carrying this run's builder tags."""
    return [i for i in cloud.live_instances()
            if {"Key": "ml-cache:run-id", "Value": run_id} in i.get("Tags", [])
            and {"Key": "ml-cache:role", "Value": "builder"} in i.get("Tags", [])]


def test_deadlines_raised_after_the_dag_was_parsed_are_refused_before_any_aws_call(cloud, build_dag, capfd):
    """The run timeout was derived at parse time: a run whose deadlines outgrew it would time out
    with its teardowns skipped, so validate_inputs refuses it."""
    before = cloud.instance_count()
    config = yaml.safe_load(cloud.config_path.read_text())
    config["timeouts"]["build_seconds"] = 100_000
    cloud.config_path.write_text(yaml.safe_dump(config))
    run, states = run_dag(build_dag)
    assert_failed_with(run, states, "validate_inputs", r"need a run timeout of .* but this DAG was parsed with",
                       capfd, retried=False)
    assert states["launch_builder"] == "upstream_failed"
    assert cloud.instance_count() == before
    assert cloud.parameter() == cloud.previous_snapshot


@needs_data_plane
def test_a_failing_teardown_fails_the_run_and_the_callback_still_terminates_the_builder(
        cloud, build_dag, refusing_connection, capfd):
    """terminate_builder is refused (its role lacks ec2:TerminateInstances): without
    on_failure_fail_dagrun the run would be green with a builder running. It is FAILED, and the
    DAG's on_failure_callback terminates the builder by its run tags."""
    build_dag.get_task("terminate_builder").aws_conn_id = refusing_connection
    run, states = run_dag(build_dag)
    assert states["publish_snapshot"] == "success", states  # everything but the teardown succeeded
    assert_failed_with(run, states, "terminate_builder", r"UnauthorizedOperation", capfd,
                       retried=False)  # a refused permission fails at the first try
    assert str(run.state) == "failed"
    assert run_builders(cloud, run.run_id) == []
    terminated = cloud.client("ec2").describe_instances(Filters=[
        {"Name": "tag:ml-cache:run-id", "Values": [run.run_id]}])["Reservations"]
    assert [i["State"]["Name"] for r in terminated for i in r["Instances"]] == ["terminated"]




def _move_run_start_back(database: Path, run_id: str, by: timedelta) -> None:
    """What the scheduler sees when a run has lasted `by`: its start_date earlier in the metadata DB
    (stored as text by SQLAlchemy on SQLite; written back in the format read)."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db, db:
        (stored,) = db.execute("SELECT start_date FROM dag_run WHERE run_id = ?", (run_id,)).fetchone()
        earlier = datetime.fromisoformat(stored) - by
        db.execute("UPDATE dag_run SET start_date = ? WHERE run_id = ?",
                   (earlier.isoformat(sep=" ") if " " in stored else earlier.isoformat(), run_id))


@pytest.mark.slow
def test_a_run_past_its_timeout_mid_build_leaves_no_builder_and_the_parameter_unchanged(cloud, tmp_path):
    """The real scheduler, dag processor and triggerer (`airflow standalone`, as `make run` starts it):
    the builder is running (its agent never comes online, so wait_for_builder is deferred), then the
    run has lasted longer than its dagrun_timeout. The scheduler fails it and skips every unfinished
    task, terminate_builder included; the DAG's on_failure_callback terminates the builder."""
    from devstack import process
    from devstack.stack import dag_runs
    from devstack.stack.airflow_standalone import BUILD_DAG_ID, start_airflow
    from devstack.stack.layout import Layout
    from ml_cache.run_deadline import configured_timeouts, run_timeout

    inbox = subscribe_queue(cloud.client("sns"), cloud.client("sqs"))
    config = yaml.safe_load(cloud.config_path.read_text())
    config["timeouts"]["agent_online_seconds"] = 900  # the build stays mid-way for the whole test
    config["notifications"] = {"sns_topic_arn": inbox.topic_arn}
    cloud.config_path.write_text(yaml.safe_dump(config))
    cloud.set_faults(agent_offline=True)
    layout = Layout(home=tmp_path, cloud_port=int(cloud.endpoint.rsplit(":", 1)[1]), registry_port=free_port(),
                    airflow_port=free_port())
    assert layout.config_path == cloud.config_path
    env = {key: value for key, value in os.environ.items()  # the pytest session's Airflow is not this one
           if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN", "ML_CACHE")) and key != "AIRFLOW_HOME"}
    airflow = start_airflow(layout, base_env=env)
    try:
        run_id = dag_runs.trigger_build(layout, with_rollout=False)

        def builder_deferred() -> bool:
            state = dag_runs.api(layout, "GET", f"/dags/{BUILD_DAG_ID}/dagRuns/{run_id}/taskInstances/"
                                 f"wait_for_builder")["state"]
            return state == "deferred" and bool(run_builders(cloud, run_id))

        until("the builder running, wait_for_builder deferred", builder_deferred, 240, layout.log_file("airflow"))
        timeout = run_timeout("build", configured_timeouts())
        _move_run_start_back(layout.home / "airflow" / "airflow.db", run_id, timeout + timedelta(minutes=5))

        def run_failed() -> dict | None:
            run = dag_runs.api(layout, "GET", f"/dags/{BUILD_DAG_ID}/dagRuns/{run_id}")
            return run if run["state"] == "failed" else None

        until("the run timed out", run_failed, 120, layout.log_file("airflow"))
        tis = dag_runs.api(layout, "GET", f"/dags/{BUILD_DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        states = {ti["task_id"]: ti["state"] for ti in tis}
        assert states["wait_for_builder"] == "skipped" and states["terminate_builder"] == "skipped", states
        until("the callback terminating the builder", lambda: not run_builders(cloud, run_id), 180,
                  layout.log_file("airflow"))
        (message,) = until("the run's notification", lambda: inbox.messages(wait_seconds=1), 60,
                               layout.log_file("airflow"))
        assert message["Message"].startswith(f"{BUILD_DAG_ID} run {run_id} FAILED: the run passed its dagrun_timeout")
        note = until("the run's note", lambda: dag_runs.api(  # the run's page says why (ml_cache.run_note)
            layout, "GET", f"/dags/{BUILD_DAG_ID}/dagRuns/{run_id}")["note"], 60, layout.log_file("airflow"))
        assert note.startswith("run: the run passed its dagrun_timeout")
    finally:
        process.stop(airflow)
    tagged = cloud.client("ec2").describe_instances(Filters=[
        {"Name": "tag:ml-cache:run-id", "Values": [run_id]}])["Reservations"]
    assert [i["State"]["Name"] for r in tagged for i in r["Instances"]] == ["terminated"]
    assert cloud.parameter() == cloud.previous_snapshot
