"""Start, watch and stop the local cloud's processes: always by PID, never by name.

Every process is started in its own session, so its PID is also its process-group id and a stop
reaches the children it forked (a build script's containerd, airflow standalone's components)
without touching anything else on the machine. A pid file is trusted only for a live process
that started before the file was written: a reused PID is not ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

GONE_STATES = ("Z", "X")  # a zombie waits for its reaper: it no longer runs


class NotReady(RuntimeError):
    """A started process exited, or did not get ready in time (it was stopped then)."""


def start(argv: list[str], log_path: Path, *, pid_file: Path | None = None, env: dict[str, str] | None = None,
          cwd: Path | None = None, errors_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session, output appended to `log_path` (stderr to `errors_path` when
    given), its PID written to `pid_file`."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with Path(log_path).open("ab") as log, Path(errors_path or os.devnull).open("ab") as errors:
        process = subprocess.Popen(argv, stdout=log, stderr=errors if errors_path else subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
    if pid_file is not None:
        Path(pid_file).parent.mkdir(parents=True, exist_ok=True)
        Path(pid_file).write_text(f"{process.pid}\n")
    return process


def wait_ready(process: subprocess.Popen[bytes], ready: Callable[[], bool], *, what: str, timeout: float,
               interval: float = 0.2, log_path: Path | None = None) -> None:
    """Poll `ready()` until it holds, else NotReady: the process exited, or the deadline passed
    (the process is stopped then, so nothing half-started stays behind)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NotReady(f"{what} exited ({process.returncode}); see {log_path or 'its log'}")
        if ready():
            return
        time.sleep(interval)
    stop(process)
    raise NotReady(f"{what} did not answer within {timeout:.0f} s")


def free_port() -> int:
    """A port the kernel just considered free on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_port_block(offsets: Iterable[int]) -> int:
    """A free port P whose neighbours P+offset are free too (a stack that numbers its ports from one base)."""
    offsets = tuple(offsets)
    for _ in range(50):
        base = free_port()
        if base + max(offsets, default=0) > 65535:
            continue
        try:
            for offset in offsets:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as neighbour:
                    neighbour.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports on 127.0.0.1")


def answers(url: str, statuses: Iterable[int] = (200,)) -> bool:
    """True when an HTTP GET of `url` gets one of `statuses` (a readiness probe)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URLs only)
            return response.status in tuple(statuses)
    except urllib.error.HTTPError as error:
        return error.code in tuple(statuses)
    except OSError:
        return False


def stop(target: subprocess.Popen[bytes] | int, timeout: float = 10, *, group: bool = True) -> bool:
    """SIGTERM the process (its whole group with `group`), SIGKILL what is left after `timeout`.

    `target` is our child (its exit status is collected) or a PID from a pid file. Returns False
    when there was nothing left to stop.
    """
    pid = target.pid if isinstance(target, subprocess.Popen) else int(target)

    def running() -> bool:
        if isinstance(target, subprocess.Popen):
            leader = target.poll() is None
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(-pid, os.WNOHANG)  # a child of ours would otherwise linger as a zombie
            leader = alive(pid)
        return leader or (group and group_alive(pid))

    if not running():
        return False
    _signal(pid, signal.SIGTERM, group)
    deadline = time.monotonic() + timeout
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    if running():
        _signal(pid, signal.SIGKILL, group)
        deadline = time.monotonic() + 10
        while running() and time.monotonic() < deadline:
            time.sleep(0.05)
    return True


def recorded(pid_file: Path) -> int | None:
    """The PID in `pid_file` if that process (or its group) is alive and older than the file, else None."""
    try:
        pid = int(Path(pid_file).read_text().strip())
        written = Path(pid_file).stat().st_mtime
    except (OSError, ValueError):
        return None
    started = started_at(pid)
    if started is None:  # the leader is gone; a PID still naming a live group is not reused
        return pid if group_alive(pid) else None
    return pid if started <= written + 1.0 else None


def stop_recorded(pid_file: Path, timeout: float = 30) -> bool:
    """Stop the process group a pid file names (if it is still ours); remove the file."""
    pid = recorded(pid_file)
    stopped = stop(pid, timeout) if pid is not None else False
    Path(pid_file).unlink(missing_ok=True)
    return stopped


def kill_using(root: Path) -> None:
    """SIGKILL processes whose command line names a path below `root`, or that run in it.

    Scoped to that path, so only what was started for it (e.g. a sandbox's containerd) is hit.
    """
    base = str(root)
    me = os.getpid()
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            cwd = ""
        if base + "/" in cmdline or cmdline.rstrip().endswith(base) or cwd == base or cwd.startswith(base + "/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    deadline = time.monotonic() + 5  # let them go before their mounts are unmounted
    while killed and time.monotonic() < deadline:
        killed = [pid for pid in killed if alive(pid)]
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    fields = _stat(Path(f"/proc/{pid}/stat"))
    return fields is not None and fields[0] not in GONE_STATES


def group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process is left in the process group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(stat)
        if fields is not None and int(fields[2]) == pgid and fields[0] not in GONE_STATES:
            return True
    return False


def started_at(pid: int) -> float | None:
    """Wall-clock start time of a live process (from /proc), None when it is gone."""
    fields = _stat(Path(f"/proc/{pid}/stat"))
    if fields is None or fields[0] in GONE_STATES:
        return None
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _stat(path: Path) -> list[str] | None:
    """The fields of a /proc/<pid>/stat after the command name (state first), None if unreadable."""
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _signal(pid: int, signum: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
