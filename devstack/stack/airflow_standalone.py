"""`airflow standalone` on 127.0.0.1, wired to the local cloud: connections, DAG config, plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from devstack import process
from devstack.stack.layout import REGION, REPO, Layout

BUILD_DAG_ID = "ml_container_cache_build"


def airflow_env(layout: Layout) -> dict[str, str]:
    connection = {"conn_type": "aws", "login": "testing", "password": "testing",
                  "extra": {"region_name": REGION, "endpoint_url": layout.endpoint}}
    return {
        "AIRFLOW_HOME": str(layout.home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(layout.airflow_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{layout.airflow_url}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
        # a failed task writes its cause as the run's note through the REST API (every user is an admin here)
        "AIRFLOW_CONN_AIRFLOW_API": json.dumps({"conn_type": "http", "host": layout.airflow_url}),
        # the local cloud's Kubernetes API stand-in writes this kubeconfig
        "AIRFLOW_CONN_KUBERNETES_LOCAL": json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(layout.home / "kubeconfig")}}),
        "ML_CACHE_CONFIG": str(layout.config_path),
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
        # standalone starts its components as `airflow ...`: the venv's must come first
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **_push_queue_env(layout),
    }


def _push_queue_env(layout: Layout) -> dict[str, str]:
    """ML_CACHE_PUSH_QUEUE_URL when Terraform made the build-on-push queue (its variable set at `make up`)."""
    path = layout.push_queue_url_file
    url = path.read_text().strip() if path.is_file() else ""
    return {"ML_CACHE_PUSH_QUEUE_URL": url} if url else {}


def start_airflow(layout: Layout, base_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start it detached (pid file `airflow`) and wait until the API serves the build DAG. `base_env`
    (default: this process's environment) is what `airflow_env` is laid over: a test passes its own,
    cleaned of its session's Airflow settings."""
    airflow = str(Path(sys.executable).parent / "airflow")
    env = {**(os.environ if base_env is None else base_env), **airflow_env(layout)}
    child = process.start([airflow, "standalone"], layout.log_file("airflow"), pid_file=layout.pid_file("airflow"),
                          env=env, cwd=REPO)
    wait_for_api(layout, child, layout.log_file("airflow"))
    return child


def wait_for_api(layout: Layout, server: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until the API answers and serves the build DAG (parsed), or `server` exits (its log's tail in the error)."""
    api = f"{layout.airflow_url}/api/v2"
    process.wait_ready(server, lambda: process.answers(f"{api}/version"), what=f"Airflow at {api}", timeout=240,
                       interval=0.5, log_path=log_path)
    process.wait_ready(server, lambda: process.answers(f"{api}/dags/{BUILD_DAG_ID}"), what=f"DAG {BUILD_DAG_ID}",
                       timeout=180, interval=0.5, log_path=log_path)
