"""A failed run's cause as the run's note, the first thing its page shows: `<task>: <cause>`, or
`run: <cause>` for a run failed without a failed task (its run timeout: the DAG's callback).

In Airflow 3 a worker has no database access and the Task SDK cannot write a note, so the failed
task's callback writes it through Airflow's public REST API (PATCH the run with `update_mask=note`),
reached with the HTTP connection `airflow_api`: host = the API's base URL; login and password when the
auth manager wants a token (exchanged at `/auth/token`, never logged). Without that connection no note
is written; the cause is still in the task log and the notification. The first failure's cause is
kept: a run that already has a note (an earlier cause, or a person's) is left as it is.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import requests

from ml_cache.errors import EXPECTED_ERRORS
from ml_cache.notify import one_line, run_failure_cause

log = logging.getLogger(__name__)

API_CONN_ID = "airflow_api"
NOTE_MAX_CHARS = 1000  # Airflow's dag_run_note.content column
TIMEOUT_SECONDS = 10


def cause(error: BaseException | None) -> str:
    """An expected error's message alone (it names the cause); anything else with its type."""
    if isinstance(error, EXPECTED_ERRORS):
        return one_line(str(error))
    return one_line(error)


def failure_note(task_id: str, error: BaseException | None) -> str:
    return f"{task_id}: {cause(error)}"[:NOTE_MAX_CHARS]


def _api(conn_id: str) -> tuple[str, dict[str, str]] | None:
    """(base URL, auth headers) from the connection, or None when there is none."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:  # AirflowNotFoundException under another name in each Airflow version
        log.info("No run note: no connection %r to Airflow's REST API", conn_id)
        return None
    host = conn.host or ""
    base = (host if "://" in host else f"{conn.schema or 'http'}://{host}").rstrip("/")
    if conn.port:
        base = f"{base}:{conn.port}"
    if not conn.login:
        return base, {}
    answer = requests.post(f"{base}/auth/token", json={"username": conn.login, "password": conn.password or ""},
                           timeout=TIMEOUT_SECONDS)
    answer.raise_for_status()
    return base, {"Authorization": f"Bearer {answer.json()['access_token']}"}


def set_run_note(dag_id: str, run_id: str, note: str, *, conn_id: str = API_CONN_ID) -> bool:
    """Write `note` on the run unless it has one; True when written. Never raises: a note is a courtesy."""
    try:
        api = _api(conn_id)
        if api is None:
            return False
        base, headers = api
        url = f"{base}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
        current = requests.get(url, headers=headers, timeout=TIMEOUT_SECONDS)
        current.raise_for_status()
        if current.json().get("note"):
            log.info("Run %s keeps its note: %s", run_id, current.json()["note"])
            return False
        answer = requests.patch(url, params={"update_mask": "note"}, json={"note": note}, headers=headers,
                                timeout=TIMEOUT_SECONDS)
        answer.raise_for_status()
    except Exception as error:
        log.warning("No run note: %s", one_line(error))
        return False
    log.info("Run note: %s", note)
    return True


def note_failed_task(context: dict[str, Any]) -> None:
    """A task's `on_failure_callback` (its last try): the run's note becomes `<task>: <cause>`."""
    ti = context["ti"]
    task = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
    set_run_note(ti.dag_id, ti.run_id, failure_note(task, context.get("exception")))


def note_failed_run(context: dict[str, Any]) -> None:
    """A DAG's `on_failure_callback`: a run failed without a failed task (timed out) says so in its note;
    after a task failure there is nothing to add (the task's callback wrote its cause)."""
    if context.get("reason") == "task_failure":
        return
    ti = context.get("ti")
    run_id = context.get("run_id") or ti.run_id
    set_run_note(context["dag"].dag_id, run_id, f"run: {one_line(run_failure_cause(context.get('reason')))}")
