"""Timeouts and teardowns of the build run: a config that needs a longer run is refused, a failing
teardown fails the run, and the DAG's failure callback leaves no builder behind (fault catalog 32)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.dags.conftest import PREVIOUS_SNAPSHOT, assert_failed_with, needs_data_plane, run_dag

# EC2's error document for a refused permission (EC2 API reference, "Error codes": UnauthorizedOperation, 403)
UNAUTHORIZED = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>UnauthorizedOperation'
                b'</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors>'
                b'<RequestID>refused</RequestID></Response>')


class _Refuse(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(403)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(UNAUTHORIZED)))
        self.end_headers()
        self.wfile.write(UNAUTHORIZED)

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
    assert cloud.parameter() == PREVIOUS_SNAPSHOT


@needs_data_plane
def test_a_failing_teardown_fails_the_run_and_the_callback_still_terminates_the_builder(
        cloud, build_dag, refusing_connection, capfd):
    """terminate_builder is refused (its role lacks ec2:TerminateInstances): without
    on_failure_fail_dagrun the run would be green with a builder running. It is FAILED, and the
    DAG's on_failure_callback terminates the builder by its run tags."""
    build_dag.get_task("terminate_builder").aws_conn_id = refusing_connection
    run, states = run_dag(build_dag)
    assert states["publish_snapshot"] == "success", states  # everything but the teardown succeeded
    assert_failed_with(run, states, "terminate_builder", r"UnauthorizedOperation", capfd)
    assert str(run.state) == "failed"
    assert run_builders(cloud, run.run_id) == []
    terminated = cloud.client("ec2").describe_instances(Filters=[
        {"Name": "tag:ml-cache:run-id", "Values": [run.run_id]}])["Reservations"]
    assert [i["State"]["Name"] for r in terminated for i in r["Instances"]] == ["terminated"]
