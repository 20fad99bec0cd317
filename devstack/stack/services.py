"""The stack's services: each a process started detached with a pid file under the devstack home.

`down` stops exactly those (by PID, process group first), then what an interrupted run left under
the home: processes of builder sandboxes, mounts and loop devices.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

from devstack import process, volumes
from devstack.stack.airflow_celery import SERVICES as CELERY_SERVICES
from devstack.stack.layout import REPO, Layout, say

# stop order: Airflow (standalone, or the Celery flavour's components and stores), then what it uses
SERVICES = ("airflow", *CELERY_SERVICES, "cloud", "registry", "registry-private")
STOP_SECONDS = {"cloud": 60.0}  # the server tears its sandboxes and nodes down on SIGTERM
KEPT_ACROSS_RUNS = {"cache"}  # built demo image layouts; everything else belongs to one run


def preflight() -> None:
    reason = volumes.data_plane_missing()
    if reason:
        raise SystemExit(f"The local cloud cannot run here: {reason}. Run as root after `make system-deps`.")


def start_registry(layout: Layout) -> dict[str, str]:
    """The loopback registry anyone pulls from, seeded with the small demo image; {"small": pinned ref}."""
    from devstack.demo_images import seed_registry
    from devstack.registry import Registry

    Registry(layout.home / "registry" / "storage", layout.registry_port, work_dir=layout.home / "registry",
             pid_file=layout.pid_file("registry")).start()
    timings: dict[str, float] = {}
    refs = seed_registry(layout.registry, layout.home / "cache", include_large=False, timings=timings)
    say(f"registry {layout.registry} seeded: {json.dumps(timings)}")
    return refs


def start_cloud(layout: Layout, plain_http_registries: tuple[str, ...] = (), env: dict[str, str] | None = None,
                timeout: float = 60) -> str:
    """`python -m devstack serve` in the background; its endpoint once it answers."""
    argv = [sys.executable, "-m", "devstack", "serve", "--port", str(layout.cloud_port), "--home", str(layout.home)]
    for registry in plain_http_registries:
        argv += ["--plain-http-registry", registry]
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    child = process.start(argv, layout.log_file("cloud"), pid_file=layout.pid_file("cloud"), cwd=REPO,
                          env={**os.environ, "PYTHONPATH": python_path, **(env or {})})
    info_file(layout).write_text(json.dumps({"pid": child.pid, "endpoint": layout.endpoint}) + "\n")
    process.wait_ready(child, lambda: process.answers(f"{layout.endpoint}/_devstack/state"),
                       what=f"the local cloud on {layout.endpoint}", timeout=timeout,
                       log_path=layout.log_file("cloud"))
    return layout.endpoint


def info_file(layout: Layout) -> Path:
    return layout.home / "pids" / "cloud.json"


def cloud_endpoint(layout: Layout) -> str | None:
    """The endpoint of the running local cloud (it may listen on another port than `layout`'s)."""
    if process.recorded(layout.pid_file("cloud")) is None:
        return None
    try:
        return json.loads(info_file(layout).read_text())["endpoint"]
    except (OSError, ValueError, KeyError):
        return None


def status(layout: Layout) -> dict[str, object]:
    pid = process.recorded(layout.pid_file("cloud"))
    endpoint = cloud_endpoint(layout)
    result: dict[str, object] = {"home": str(layout.home), "pid": pid, "endpoint": endpoint, "running": bool(pid)}
    if endpoint:
        try:
            with urllib.request.urlopen(endpoint + "/_devstack/state", timeout=5) as answer:  # noqa: S310
                state = json.load(answer)
            result["sandboxes"] = len(state["sandboxes"])
            result["running_commands"] = len(state["running_commands"])
        except (OSError, ValueError) as error:
            result["error"] = str(error)
    return result


def down(layout: Layout) -> bool:
    """Stop every service of this home; clean up what they left. True if any was running."""
    stopped = [name for name in SERVICES
               if process.stop_recorded(layout.pid_file(name), STOP_SECONDS.get(name, 30.0))]
    info_file(layout).unlink(missing_ok=True)
    # After an interrupted run, processes a build left (its containerd) would keep mounts busy.
    process.kill_using(layout.home / "instances")
    if layout.home.exists() and volumes.data_plane_missing() is None:
        volumes.cleanup_under(layout.home)
    return bool(stopped)


def forget(layout: Layout) -> None:
    """The local cloud keeps its state in memory: files of an earlier run (Airflow DB, volumes,
    Terraform state) would only describe resources that no longer exist."""
    busy = [m["target"] for m in volumes.mounts() if Path(m["target"]).is_relative_to(layout.home)]
    if busy:
        raise SystemExit(f"still mounted under {layout.home}: {busy}; unmount them, then retry")
    for entry in layout.home.iterdir() if layout.home.exists() else []:
        if entry.name not in KEPT_ACROSS_RUNS:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
