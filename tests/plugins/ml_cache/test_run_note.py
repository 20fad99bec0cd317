"""ml_cache.run_note against Airflow's REST API faked at the HTTP level: token, no overwrite, no raise."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ml_cache.errors import PermanentFailure
from ml_cache.images import InvalidInputs
from ml_cache.run_note import failure_note, set_run_note
from tests.http_fakes import send_json


class Api(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: dict[str, Any]) -> None:
        send_json(self, status, body)

    def _body(self) -> dict[str, Any]:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_POST(self) -> None:
        if self._body() == {"username": "admin", "password": "s3cret"}:
            self._answer(201, {"access_token": "jwt"})
        else:
            self._answer(401, {"detail": "Invalid credentials"})

    def _authorized(self) -> bool:
        if self.server.token and self.headers.get("Authorization") != "Bearer jwt":
            self._answer(401, {"detail": "Not authenticated"})
            return False
        return True

    def do_GET(self) -> None:
        if self._authorized():
            self._answer(200, {"note": self.server.note})

    def do_PATCH(self) -> None:
        if self._authorized():
            self.server.note = self._body()["note"]
            self._answer(200, {"note": self.server.note})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api(monkeypatch) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    server.note, server.token = None, False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.connect = lambda **extra: monkeypatch.setenv("AIRFLOW_CONN_AIRFLOW_API", json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": server.server_address[1], **extra}))
    yield server
    server.shutdown()
    server.server_close()


def test_expected_errors_are_their_message_others_keep_their_type():
    assert failure_note("validate_inputs", InvalidInputs("images is empty")) == "validate_inputs: images is empty"
    assert failure_note("launch_builder", PermanentFailure("RunInstances failed:\n  denied")) == \
        "launch_builder: RunInstances failed: denied"
    assert failure_note("publish_snapshot", KeyError("snapshot_id")) == "publish_snapshot: KeyError: 'snapshot_id'"


def test_the_note_is_written_with_a_token_when_the_connection_has_a_login(api):
    api.token = True
    api.connect(login="admin", password="s3cret")
    assert set_run_note("dag", "manual__1", "task: cause") is True
    assert api.note == "task: cause"


def test_the_first_cause_is_kept(api):
    api.connect()
    api.note = "create_snapshot: the first failure"
    assert set_run_note("dag", "manual__1", "terminate_builder: a later one") is False
    assert api.note == "create_snapshot: the first failure"


def test_refused_or_missing_api_is_logged_never_raised(api, monkeypatch):
    api.token = True
    api.connect(login="admin", password="wrong")
    assert set_run_note("dag", "manual__1", "task: cause") is False
    monkeypatch.delenv("AIRFLOW_CONN_AIRFLOW_API")
    assert set_run_note("dag", "manual__1", "task: cause") is False
    assert api.note is None


def test_a_run_failed_without_a_failed_task_says_so_and_a_task_failure_adds_nothing(api):
    from types import SimpleNamespace

    from ml_cache.run_note import note_failed_run

    api.connect()
    dag = SimpleNamespace(dag_id="ml_container_cache_build")
    note_failed_run({"dag": dag, "run_id": "scheduled__1", "reason": "task_failure"})
    assert api.note is None  # the failed task's callback wrote (or writes) the cause
    note_failed_run({"dag": dag, "run_id": "scheduled__1", "reason": "timed_out"})
    assert api.note.startswith("run: the run passed its dagrun_timeout")
