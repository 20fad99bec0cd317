"""`make up` unpauses the lifecycle through Airflow's REST API, waiting for DAGs not parsed yet."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devstack.stack import dag_runs
from devstack.stack.layout import Layout
from tests.http_fakes import send_json


class FakeAirflowApi(BaseHTTPRequestHandler):
    """Airflow's PATCH /api/v2/dags/{id} at the HTTP level: 404 first (not parsed yet), then 500 (SQLite's
    lock held by a running task), then 200."""

    requests: list[tuple[str, dict]] = []

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        seen = sum(1 for path, _ in self.requests if path == self.path)
        self.requests.append((self.path, body))
        status = {0: 404, 1: 500}.get(seen, 200)
        send_json(self, status, {"is_paused": body["is_paused"]})

    def log_message(self, *args: object) -> None:
        pass


def test_unpause_waits_for_each_lifecycle_dag_and_a_busy_database_then_unpauses_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    FakeAirflowApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAirflowApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        layout = Layout(home=tmp_path, cloud_port=1, registry_port=2, airflow_port=server.server_address[1])
        dag_runs.unpause(layout)
    finally:
        server.shutdown()
        server.server_close()
    unpaused = [path.rsplit("/", 1)[1] for path, body in FakeAirflowApi.requests if body == {"is_paused": False}]
    assert unpaused == [dag_id for dag_id in dag_runs.LIFECYCLE_DAG_IDS for _ in (1, 2, 3)]
    assert set(dag_runs.LIFECYCLE_DAG_IDS) == {"ml_container_cache_build", "ml_container_cache_rollout",
                                               "ml_container_cache_janitor"}
