"""`python -m devstack serve|up|down|status`: run the local cloud's control plane.

`up` starts `serve` in the background and records its PID in $home/pids/server.pid; `down`
signals only that PID and then unmounts/detaches whatever is left under $home, so an interrupted
run leaves nothing mounted or attached.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack.sandbox import default_home

DEFAULT_PORT = 4566


def pid_file(home: Path) -> Path:
    return Path(home) / "pids" / "server.pid"


def info_file(home: Path) -> Path:
    return Path(home) / "pids" / "server.json"


def running_pid(home: Path) -> int | None:
    """The PID from server.pid if that process is alive and is our `devstack serve`."""
    try:
        pid = int(pid_file(home).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if b"devstack" in cmdline and b"serve" in cmdline else None


def endpoint_of(home: Path) -> str | None:
    try:
        return json.loads(info_file(home).read_text())["endpoint"]
    except (OSError, ValueError, KeyError):
        return None


def up(home: Path | None = None, port: int = DEFAULT_PORT, plain_http_registries: tuple[str, ...] | list[str] = (),
       timeout: float = 60.0) -> str:
    """Start the server in the background (unless already running); return its endpoint."""
    home = Path(home or default_home()).resolve()
    if running_pid(home) and endpoint_of(home):
        return endpoint_of(home)  # type: ignore[return-value]
    (home / "pids").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "devstack", "serve", "--port", str(port), "--home", str(home)]
    for registry in plain_http_registries:
        argv += ["--plain-http-registry", registry]
    repo_root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))}
    with (home / "logs" / "server.log").open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env, cwd=repo_root)
    pid_file(home).write_text(f"{process.pid}\n")
    endpoint = f"http://127.0.0.1:{port}"
    info_file(home).write_text(json.dumps({"pid": process.pid, "endpoint": endpoint, "port": port}) + "\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"devstack serve exited ({process.returncode}); see {home / 'logs' / 'server.log'}")
        if _answers(endpoint):
            return endpoint
        time.sleep(0.2)
    down(home)
    raise TimeoutError(f"devstack did not answer on {endpoint} within {timeout}s")


def down(home: Path | None = None, timeout: float = 60.0) -> bool:
    """Stop the background server (by its recorded PID only) and clean up under home."""
    from devstack import sandbox, volumes

    home = Path(home or default_home()).resolve()
    pid = running_pid(home)
    stopped = False
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and running_pid(home) == pid:
            time.sleep(0.2)
        if running_pid(home) == pid:
            os.kill(pid, signal.SIGKILL)
        stopped = True
    pid_file(home).unlink(missing_ok=True)
    info_file(home).unlink(missing_ok=True)
    # After an interrupted run, processes a build left (its containerd) would keep mounts busy.
    sandbox.kill_processes_using(home / "instances")
    if volumes.data_plane_missing() is None:
        volumes.cleanup_under(home)
    return stopped


def status(home: Path | None = None) -> dict[str, object]:
    home = Path(home or default_home()).resolve()
    pid = running_pid(home)
    endpoint = endpoint_of(home) if pid else None
    result: dict[str, object] = {"home": str(home), "pid": pid, "endpoint": endpoint, "running": bool(pid)}
    if endpoint:
        try:
            with urllib.request.urlopen(endpoint + "/_devstack/state", timeout=5) as answer:  # noqa: S310
                state = json.load(answer)
            result["sandboxes"] = len(state["sandboxes"])
            result["running_commands"] = len(state["running_commands"])
        except (OSError, ValueError) as error:
            result["error"] = str(error)
    return result


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/_devstack/state", timeout=2):  # noqa: S310
            return True
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "up"):
        sub = commands.add_parser(name, help=f"{name} the local cloud's AWS endpoint")
        sub.add_argument("--port", type=int, default=DEFAULT_PORT)
        sub.add_argument("--home", type=Path, default=None)
        sub.add_argument("--plain-http-registry", action="append", default=[], dest="registries",
                         help="host:port of a loopback registry builders may use over plain HTTP")
    for name in ("down", "status"):
        commands.add_parser(name).add_argument("--home", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "serve":
        from devstack import server

        server.serve(args.port, args.home, tuple(args.registries))
    elif args.command == "up":
        print(up(args.home, args.port, tuple(args.registries)))
    elif args.command == "down":
        print("stopped" if down(args.home) else "not running; cleaned up")
    else:
        print(json.dumps(status(args.home), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
