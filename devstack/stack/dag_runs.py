"""Following DAG runs through Airflow's REST API: trigger, print state changes, read results."""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from devstack.stack.airflow_standalone import BUILD_DAG_ID
from devstack.stack.layout import Layout, say

ROLLOUT_DAG_ID = "ml_container_cache_rollout"
JANITOR_DAG_ID = "ml_container_cache_janitor"
# The lifecycle `make up` leaves running: a build's Asset event starts the rollout, the janitor cleans up.
LIFECYCLE_DAG_IDS = (BUILD_DAG_ID, ROLLOUT_DAG_ID, JANITOR_DAG_ID)


def api(layout: Layout, method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(method, f"{layout.airflow_url}/api/v2{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()


def trigger_build(layout: Layout, with_rollout: bool) -> str:
    """Unpause the DAGs (the rollout too when there is a cluster) and trigger one build run."""
    for dag_id in (BUILD_DAG_ID, ROLLOUT_DAG_ID) if with_rollout else (BUILD_DAG_ID,):
        api(layout, "PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    return trigger(layout, BUILD_DAG_ID)


def unpause(layout: Layout, dag_ids: tuple[str, ...] = LIFECYCLE_DAG_IDS, timeout: float = 120) -> None:
    """Unpause each DAG, waiting for the dag processor to have parsed it (404 until then). A 5xx is waited
    out too: on SQLite a task running at the same moment (the janitor's daily tick) can hold the database
    lock past the API's busy timeout."""
    deadline = time.monotonic() + timeout
    for dag_id in dag_ids:
        while True:
            response = requests.patch(f"{layout.airflow_url}/api/v2/dags/{dag_id}", json={"is_paused": False},
                                      timeout=30)
            if response.status_code != 404 and (response.status_code < 500 or time.monotonic() > deadline):
                response.raise_for_status()
                say(f"{dag_id} unpaused")
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{dag_id} not parsed by Airflow within {timeout:.0f} s: see its import errors")
            time.sleep(2)


def trigger(layout: Layout, dag_id: str) -> str:
    """One manual run of `dag_id` with its default Params (as the weekly schedule runs it); its run id."""
    run = api(layout, "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {}})
    say(f"triggered {dag_id} run {run['dag_run_id']}")
    return run["dag_run_id"]


def watch(layout: Layout, dag_id: str, run_id: str, timeout: float = 1800
          ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Print every task's state changes until the run ends; return the run and its task instances."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api(layout, "GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        tis = api(layout, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        for ti in sorted(tis, key=lambda t: t.get("start_date") or "9"):
            state = ti.get("state") or "none"
            if seen.get(ti["task_id"]) != state and state != "none":
                seen[ti["task_id"]] = state
                say(f"  {ti['task_id']:<30} {state}")
        if run["state"] in ("success", "failed"):
            return run, tis
        time.sleep(2)
    raise SystemExit(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")


def rollout_runs(layout: Layout) -> set[str]:
    """Ids of the rollout runs so far."""
    return {run["dag_run_id"] for run in api(layout, "GET", f"/dags/{ROLLOUT_DAG_ID}/dagRuns")["dag_runs"]}


def rollout_run_id(layout: Layout, earlier: set[str] | frozenset[str] = frozenset(), timeout: float = 180) -> str:
    """The rollout run the build's Asset event started: the newest one not in `earlier`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api(layout, "GET", f"/dags/{ROLLOUT_DAG_ID}/dagRuns", params={"order_by": "-run_after"})["dag_runs"]
        new = [run["dag_run_id"] for run in runs if run["dag_run_id"] not in earlier]
        if new:
            say(f"{ROLLOUT_DAG_ID} run {new[0]} started by the ml_container_cache event")
            return new[0]
        time.sleep(2)
    raise SystemExit(f"no {ROLLOUT_DAG_ID} run within {timeout:.0f} s of the build's Asset event")


def xcom(layout: Layout, dag_id: str, run_id: str, task_id: str) -> Any:
    entry = api(layout, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                params={"deserialize": "true"})
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) else value


def asset_events(layout: Layout, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The Asset events one run emitted."""
    return api(layout, "GET", "/assets/events",
               params={"source_dag_id": dag_id, "source_run_id": run_id})["asset_events"]
