"""State of Run Command invocations: plugins (steps), invocations, and the process-wide registry.

Output is captured in full to files; the AWS output limits are applied only when reported, as the
real service does.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from devstack import clock

STDOUT_LIMIT = 24_000  # GetCommandInvocation StandardOutputContent
STDERR_LIMIT = 8_000  # GetCommandInvocation StandardErrorContent
PLUGIN_OUTPUT_LIMIT = 2_500  # ListCommandInvocations CommandPlugins[].Output
TERMINAL = ("Success", "Failed", "TimedOut", "Cancelled")


@dataclass
class PluginRun:
    """One `aws:runShellScript` step of an invocation."""

    name: str
    script: str
    timeout_seconds: float
    working_directory: str
    stdout_path: Path
    stderr_path: Path
    status: str = "Pending"
    status_details: str = "Pending"
    response_code: int = -1
    started: datetime | None = None
    finished: datetime | None = None

    def output(self, limit: int) -> str:
        return _read_prefix(self.stdout_path, limit)

    def errors(self, limit: int) -> str:
        return _read_prefix(self.stderr_path, limit)


@dataclass
class Invocation:
    command_id: str
    instance_id: str
    document_name: str
    comment: str
    plugins: list[PluginRun]
    env: dict[str, str]
    cwd: Path
    forced_status: str | None = None
    lose_instance: str | None = None  # the instance_lost_mid_command fault when the command started
    cloudwatch: Any = None  # devstack.agent.cloudwatch.CloudWatchOutput when SendCommand asked for it
    requested: datetime = field(default_factory=clock.now)
    created_monotonic: float = field(default_factory=time.monotonic)
    visible_after: float = 0.0
    status: str = "Pending"
    status_details: str = "Pending"
    stop_reason: str | None = None  # "Cancelled", "Terminated" or "Lost" (devstack.agent.loss) once stopped
    process: subprocess.Popen[bytes] | None = None
    pgid: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def visible(self) -> bool:
        return time.monotonic() >= self.visible_after

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def current_plugin(self) -> PluginRun:
        """The plugin reported when no PluginName is asked for: the last one that started."""
        started = [p for p in self.plugins if p.started is not None]
        return started[-1] if started else self.plugins[0]

    def response_code(self) -> int:
        return self.current_plugin().response_code


_lock = threading.Lock()
_invocations: dict[tuple[str, str], Invocation] = {}


def register(invocation: Invocation) -> None:
    with _lock:
        _invocations[(invocation.command_id, invocation.instance_id)] = invocation


def get(command_id: str, instance_id: str) -> Invocation | None:
    with _lock:
        return _invocations.get((command_id, instance_id))


def for_command(command_id: str) -> list[Invocation]:
    with _lock:
        return [inv for (cid, _), inv in _invocations.items() if cid == command_id]


def for_instance(instance_id: str) -> list[Invocation]:
    with _lock:
        return [inv for (_, iid), inv in _invocations.items() if iid == instance_id]


def running() -> list[Invocation]:
    with _lock:
        return [inv for inv in _invocations.values() if not inv.finished]


def command_status(command_id: str) -> str | None:
    """Aggregate status of a command over its invocations (ListCommands), None if unknown."""
    invocations = for_command(command_id)
    if not invocations:
        return None
    statuses = [inv.status for inv in invocations]
    if any(s in ("Pending", "InProgress") for s in statuses):
        return "InProgress" if any(s != "Pending" for s in statuses) else "Pending"
    for status in ("Failed", "TimedOut", "Cancelled"):
        if status in statuses:
            return status
    return "Success"


def describe(invocation: Invocation) -> dict[str, Any]:
    """A summary for GET /_devstack/state."""
    return {
        "command_id": invocation.command_id,
        "instance_id": invocation.instance_id,
        "document_name": invocation.document_name,
        "status": invocation.status,
        "status_details": invocation.status_details,
        "pgid": invocation.pgid,
        "response_code": invocation.response_code(),
    }


def _read_prefix(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit * 4)
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace")[:limit]
