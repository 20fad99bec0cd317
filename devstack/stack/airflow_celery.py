"""Airflow's distributed engine on 127.0.0.1: CeleryExecutor, a real Postgres metadata database and a real
Redis broker (Debian's packages), each Airflow component a process of its own, as docker-compose.yaml runs
them in containers: api-server, scheduler, dag-processor, triggerer, celery worker.

`python -m devstack up --airflow celery` (`make up AIRFLOW=celery`) starts it instead of `airflow
standalone`; tests/dags/test_build_on_celery.py runs the build DAG on it end to end. Postgres runs as the
`postgres` user (it refuses root) with trust authentication on 127.0.0.1 only; the secrets the
components must share (JWT, API key) are made per stack and passed in their environment, never on argv.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from devstack import process
from devstack.stack.airflow_standalone import airflow_env, wait_for_api
from devstack.stack.layout import REPO, Layout

COMPONENTS = {  # pid/log name -> `airflow` arguments
    "airflow-api-server": ["api-server"],
    "airflow-scheduler": ["scheduler"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer"],
    "airflow-worker": ["celery", "worker", "--concurrency", "4"],
}
SERVICES = (*COMPONENTS, "redis", "postgres")  # stop order: the engine first, its stores last
DATABASE = "airflow"


def missing() -> str | None:
    """Why this flavour cannot run here, or None."""
    if not postgres_bin():
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if not shutil.which("redis-server"):
        return "Redis is not installed (apt-get install redis-server)"
    if os.geteuid() != 0 or not shutil.which("runuser"):
        return "Postgres must run as its own user: root and runuser needed"
    return None


def postgres_bin() -> Path | None:
    """Debian keeps the server binaries off PATH, per major version."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def celery_env(layout: Layout) -> dict[str, str]:
    """What every component shares on top of the standalone flavour's settings."""
    database = f"postgresql+psycopg2://{DATABASE}@127.0.0.1:{layout.postgres_port}/{DATABASE}"
    return {
        **airflow_env(layout),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{layout.redis_port}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{DATABASE}@127.0.0.1:{layout.postgres_port}/{DATABASE}",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(layout.airflow_port + 4),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),  # signed by one, checked by another
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
    }


def postgres_dir(layout: Layout) -> Path:
    """The database's directory: outside the devstack home, which the `postgres` user may not traverse
    (a pytest tmp_path is root's 0700), one per home."""
    home = hashlib.sha256(str(layout.home).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"ml-cache-postgres-{home}"


def _start_postgres(layout: Layout) -> subprocess.Popen[bytes]:
    """A fresh database per start, like the local cloud's state: nothing of an earlier stack survives."""
    binaries = postgres_bin()
    assert binaries is not None
    root = postgres_dir(layout)
    shutil.rmtree(root, ignore_errors=True)
    data, sockets = root / "data", root / "run"
    for directory in (root, data, sockets):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.chown(directory, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    initdb = subprocess.run([*as_postgres, str(binaries / "initdb"), "-D", str(data), "-U", DATABASE, "--auth=trust",
                             "-E", "UTF8"], capture_output=True, text=True, check=False)
    if initdb.returncode != 0:
        raise process.NotReady(f"initdb: {initdb.stderr.strip()[-1000:]}")
    server = process.start([*as_postgres, str(binaries / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p",
                            str(layout.postgres_port), "-k", str(sockets)], layout.log_file("postgres"),
                           pid_file=layout.pid_file("postgres"))
    ready = [str(binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(layout.postgres_port)]
    process.wait_ready(server, lambda: subprocess.run(ready, check=False).returncode == 0,
                       what=f"Postgres on 127.0.0.1:{layout.postgres_port}", timeout=60,
                       log_path=layout.log_file("postgres"))
    created = subprocess.run([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(layout.postgres_port), "-U",
                              DATABASE, DATABASE], capture_output=True, text=True, check=False)
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise process.NotReady(f"createdb {DATABASE}: {created.stderr.strip()}")
    return server


def _start_redis(layout: Layout) -> subprocess.Popen[bytes]:
    redis = process.start(["redis-server", "--bind", "127.0.0.1", "--port", str(layout.redis_port), "--save", "",
                           "--appendonly", "no", "--protected-mode", "yes"], layout.log_file("redis"),
                          pid_file=layout.pid_file("redis"))
    ping = ["redis-cli", "-h", "127.0.0.1", "-p", str(layout.redis_port), "ping"]
    process.wait_ready(redis, lambda: subprocess.run(ping, capture_output=True, check=False).stdout.strip() == b"PONG",
                       what=f"Redis on 127.0.0.1:{layout.redis_port}", timeout=30, log_path=layout.log_file("redis"))
    return redis


def start_airflow_celery(layout: Layout, base_env: Mapping[str, str] | None = None) -> list[subprocess.Popen[bytes]]:
    """Start the stores, migrate the database, start every component (pid files per component), and wait
    until the API serves the build DAG. Returns the processes, engine first (stop them in that order)."""
    started = [_start_postgres(layout), _start_redis(layout)]
    airflow = str(Path(sys.executable).parent / "airflow")
    env = {**(os.environ if base_env is None else base_env), **celery_env(layout)}
    migrated = subprocess.run([airflow, "db", "migrate"], env=env, cwd=REPO, capture_output=True, text=True,
                              check=False)
    if migrated.returncode != 0:
        stop(started)
        raise process.NotReady(f"airflow db migrate: {migrated.stderr.strip()[-2000:]}")
    try:
        for name, args in COMPONENTS.items():
            started.insert(0, process.start([airflow, *args], layout.log_file(name), pid_file=layout.pid_file(name),
                                            env=env, cwd=REPO))
        wait_for_api(layout, started[len(COMPONENTS) - 1], layout.log_file("airflow-api-server"))
    except BaseException:
        stop(started)
        raise
    return started


def stop(started: list[subprocess.Popen[bytes]]) -> None:
    """Stop what start_airflow_celery started, engine first (Postgres last: the engine writes to it)."""
    for child in started:
        process.stop(child, 30)
