"""A failed run names its cause in its note, `<task>: <cause>`, through Airflow's REST API.

The API is faked at the HTTP level (the connection `airflow_api` points at it): it answers the run's
GET with no note and records the PATCH the failed task's callback sends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.dags.conftest import assert_clean_failure, run_dag
from tests.http_fakes import send_json


class AirflowRunsApi(BaseHTTPRequestHandler):
    """GET/PATCH /api/v2/dags/{dag}/dagRuns/{run}: a run without a note, and every PATCH recorded."""

    patches: list[dict[str, Any]]

    def _answer(self, body: dict[str, Any]) -> None:
        send_json(self, 200, body)

    def do_GET(self) -> None:
        self._answer({"dag_run_id": urlsplit(self.path).path.rsplit("/", 1)[1], "note": None})

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        url = urlsplit(self.path)
        self.server.patches.append({"path": url.path, "query": parse_qs(url.query), "body": body})
        self._answer({"note": body.get("note")})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def airflow_api(monkeypatch) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), AirflowRunsApi)
    server.patches = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AIRFLOW_CONN_AIRFLOW_API", json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{server.server_address[1]}"}))
    yield server
    server.shutdown()
    server.server_close()


def test_invalid_image_blames_the_semicolon_in_the_run_note(cloud, build_dag, airflow_api, capfd, caplog):
    run, states = run_dag(build_dag, images=["busybox;rm -rf /"])
    assert_clean_failure(cloud, run, states, "validate_inputs", r"busybox;rm -rf /", capfd)
    cause = ("build: invalid image reference 'busybox;rm -rf /': character ';' at position 8 is not allowed in an "
             "image reference")
    (patch,) = airflow_api.patches
    assert patch["path"] == f"/api/v2/dags/ml_container_cache_build/dagRuns/{quote(run.run_id, safe='')}"
    assert patch["query"] == {"update_mask": ["note"]}
    assert patch["body"] == {"note": f"validate_inputs: {cause}"}
    assert f"Failed, not retried: {cause}" in caplog.text  # one line in the task log, above the traceback
