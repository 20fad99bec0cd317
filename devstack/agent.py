"""The local SSM agent: runs Run Command invocations for sandbox instances, for real.

Each invocation runs its document's `aws:runShellScript` steps with `bash` in the instance's
sandbox (its directory as cwd, its environment), in a new session so timeout, cancel and
terminate can kill the whole process group. Output is captured in full to files; the AWS output
limits are applied only when reported, as the real service does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from devstack import faults
from devstack.sandbox import Sandbox

log = logging.getLogger(__name__)

STDOUT_LIMIT = 24_000  # GetCommandInvocation StandardOutputContent
STDERR_LIMIT = 8_000  # GetCommandInvocation StandardErrorContent
PLUGIN_OUTPUT_LIMIT = 2_500  # ListCommandInvocations CommandPlugins[].Output
DEFAULT_EXECUTION_TIMEOUT = 3600
KILL_GRACE_SECONDS = 2.0
TERMINAL = ("Success", "Failed", "TimedOut", "Cancelled")

RUN_SHELL_SCRIPT = {
    "schemaVersion": "2.2",
    "description": "Built-in AWS-RunShellScript",
    "parameters": {
        "commands": {"type": "StringList"},
        "workingDirectory": {"type": "String", "default": ""},
        "executionTimeout": {"type": "String", "default": str(DEFAULT_EXECUTION_TIMEOUT)},
    },
    "mainSteps": [
        {
            "action": "aws:runShellScript",
            "name": "runShellScript",
            "inputs": {
                "runCommand": "{{ commands }}",
                "workingDirectory": "{{ workingDirectory }}",
                "timeoutSeconds": "{{ executionTimeout }}",
            },
        }
    ],
}
BUILTIN_DOCUMENTS = {"AWS-RunShellScript": RUN_SHELL_SCRIPT}

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


class InvalidParameters(ValueError):
    """The parameters do not fit the document (SSM answers InvalidParameters)."""


class InvalidDocument(ValueError):
    """The document cannot run here (not schema 2.x or no runShellScript step)."""


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
    requested: datetime = field(default_factory=lambda: datetime.now(UTC))
    created_monotonic: float = field(default_factory=time.monotonic)
    visible_after: float = 0.0
    status: str = "Pending"
    status_details: str = "Pending"
    stop_reason: str | None = None  # "Cancelled" or "Terminated" once asked to stop
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


def plan(document_name: str, content: dict[str, Any], parameters: dict[str, Any], cmd_dir: Path
         ) -> tuple[list[PluginRun], dict[str, str]]:
    """Turn a 2.x Command document + SendCommand parameters into steps and SSM_* env vars.

    ENV_VAR parameters go to the environment only (data, never script text); other `{{ name }}`
    placeholders are substituted in runCommand, workingDirectory and timeoutSeconds.
    """
    if not str(content.get("schemaVersion", "")).startswith("2."):
        raise InvalidDocument(f"{document_name}: only schema 2.x Command documents can run here")
    declared: dict[str, dict[str, Any]] = content.get("parameters") or {}
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise InvalidParameters(f"document {document_name} does not support parameters: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    env: dict[str, str] = {}
    for name, spec in declared.items():
        if name in parameters:
            value = parameters[name]
        elif "default" in spec:
            value = spec["default"]
        else:
            raise InvalidParameters(f"document {document_name} requires parameter {name}")
        value = _normalise(value, spec.get("type", "String"))
        if spec.get("allowedPattern") and isinstance(value, str) and not re.fullmatch(spec["allowedPattern"], value):
            raise InvalidParameters(f"parameter {name} does not match its allowedPattern")
        if spec.get("interpolationType") == "ENV_VAR":
            env[f"SSM_{name}"] = value if isinstance(value, str) else json.dumps(value)
        else:
            values[name] = value
    plugins = []
    for index, step in enumerate(content.get("mainSteps") or []):
        if step.get("action") != "aws:runShellScript":
            continue
        inputs = step.get("inputs") or {}
        name = step.get("name") or f"step{index}"
        lines = _substitute(inputs.get("runCommand", []), values)
        script = "\n".join(lines if isinstance(lines, list) else [str(lines)]) + "\n"
        timeout = _substitute(inputs.get("timeoutSeconds", DEFAULT_EXECUTION_TIMEOUT), values)
        workdir = _substitute(inputs.get("workingDirectory", ""), values)
        try:
            timeout_seconds = float(timeout)
        except (TypeError, ValueError) as error:
            raise InvalidParameters(f"timeoutSeconds {timeout!r} is not a number") from error
        plugins.append(PluginRun(
            name=name, script=script, timeout_seconds=timeout_seconds, working_directory=str(workdir or ""),
            stdout_path=cmd_dir / f"{index}-stdout", stderr_path=cmd_dir / f"{index}-stderr",
        ))
    if not plugins:
        raise InvalidDocument(f"{document_name} has no aws:runShellScript step")
    return plugins, env


def parse_document(text: str) -> dict[str, Any]:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return yaml.safe_load(text)


def start(command_id: str, sandbox: Sandbox, document_name: str, content: dict[str, Any],
          parameters: dict[str, Any], comment: str = "") -> Invocation:
    """Validate, register and start one invocation in the background."""
    cmd_dir = sandbox.root / "ssm" / command_id
    cmd_dir.mkdir(parents=True, exist_ok=True)
    plugins, ssm_env = plan(document_name, content, parameters, cmd_dir)
    env = {**os.environ, **sandbox.environment(), **ssm_env}
    invocation = Invocation(
        command_id=command_id, instance_id=sandbox.instance_id, document_name=document_name,
        comment=comment, plugins=plugins, env=env, cwd=sandbox.root,
        forced_status=faults.current().ssm_command_status,
    )
    invocation.visible_after = invocation.created_monotonic + faults.delay("invocation_absent_seconds")
    with _lock:
        _invocations[(command_id, sandbox.instance_id)] = invocation
    threading.Thread(target=_run, args=(invocation,), name=f"ssm-{command_id[:8]}", daemon=True).start()
    return invocation


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


def cancel(command_id: str, instance_ids: list[str] | None = None) -> None:
    """CancelCommand: kill the process groups of the command's unfinished invocations."""
    for invocation in for_command(command_id):
        if not instance_ids or invocation.instance_id in instance_ids:
            _stop(invocation, "Cancelled")


def terminate_instance(instance_id: str, wait: float = 10.0) -> None:
    """The instance is going away: its running commands end as Terminated."""
    invocations = [inv for inv in for_instance(instance_id) if not inv.finished]
    for invocation in invocations:
        _stop(invocation, "Terminated")
    for invocation in invocations:
        invocation.done.wait(wait)


def stop_all() -> None:
    for invocation in running():
        _stop(invocation, "Terminated")
    for invocation in running():
        invocation.done.wait(10)


def forget_all() -> None:
    with _lock:
        _invocations.clear()


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


def _run(invocation: Invocation) -> None:
    try:
        if invocation.forced_status:
            _finish_forced(invocation)
            return
        for plugin in invocation.plugins:
            with invocation.lock:
                if invocation.stop_reason:
                    break
                invocation.status = invocation.status_details = "InProgress"
            _run_plugin(invocation, plugin)
            if plugin.status != "Success":
                break
        last = invocation.current_plugin()
        with invocation.lock:
            stopped = invocation.stop_reason and last.status in ("InProgress", "Success")
            if stopped or last.status == "Pending":  # Pending: stopped before the first step
                _mark_stopped(invocation, last)
            invocation.status, invocation.status_details = last.status, last.status_details
    except Exception as error:  # never leave an invocation InProgress forever
        log.exception("invocation %s on %s broke", invocation.command_id, invocation.instance_id)
        with invocation.lock:
            plugin = invocation.current_plugin()
            plugin.status = plugin.status_details = "Failed"
            plugin.finished = plugin.finished or datetime.now(UTC)
            with contextlib.suppress(OSError), plugin.stderr_path.open("a") as err:
                err.write(f"devstack agent error: {error}\n")
            invocation.status = invocation.status_details = "Failed"
    finally:
        invocation.done.set()


def _run_plugin(invocation: Invocation, plugin: PluginRun) -> None:
    script_path = plugin.stdout_path.with_name(plugin.stdout_path.name.replace("stdout", "script.sh"))
    script_path.write_text(plugin.script)
    cwd = Path(plugin.working_directory) if plugin.working_directory else invocation.cwd
    plugin.started = datetime.now(UTC)
    plugin.status = plugin.status_details = "InProgress"
    with plugin.stdout_path.open("wb") as out, plugin.stderr_path.open("wb") as err:
        try:
            process = subprocess.Popen(
                ["bash", str(script_path)], cwd=cwd, env=invocation.env, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as error:
            err.write(f"failed to start: {error}\n".encode())
            plugin.finished = datetime.now(UTC)
            plugin.status = plugin.status_details = "Failed"
            plugin.response_code = 1
            return
        with invocation.lock:
            invocation.process, invocation.pgid = process, process.pid
            stop_now = invocation.stop_reason is not None
        if stop_now:
            _kill_group(process)
        deadline = time.monotonic() + plugin.timeout_seconds
        timed_out = False
        while True:
            try:
                process.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    timed_out = True
                    _kill_group(process)
    _kill_group(process)  # stray children of a finished script belong to the command too
    plugin.finished = datetime.now(UTC)
    plugin.response_code = process.returncode
    if invocation.stop_reason:
        _mark_stopped(invocation, plugin)
    elif timed_out:
        plugin.status, plugin.status_details, plugin.response_code = "TimedOut", "ExecutionTimedOut", -1
    elif process.returncode == 0:
        plugin.status = plugin.status_details = "Success"
    else:
        plugin.status = plugin.status_details = "Failed"


def _mark_stopped(invocation: Invocation, plugin: PluginRun) -> None:
    plugin.finished = plugin.finished or datetime.now(UTC)
    plugin.response_code = -1
    if invocation.stop_reason == "Terminated":
        # CommandInvocationStatus has no "Terminated": the instance is gone, so the command Failed.
        plugin.status, plugin.status_details = "Failed", "Terminated"
    else:
        plugin.status = plugin.status_details = "Cancelled"


def _finish_forced(invocation: Invocation) -> None:
    """The ssm_command_status fault: nothing runs; the invocation ends with that status."""
    plugin = invocation.plugins[0]
    with invocation.lock:
        invocation.status = invocation.status_details = "InProgress"
    plugin.started = datetime.now(UTC)
    plugin.status = "InProgress"
    time.sleep(0.2)
    fault = invocation.forced_status or "Failed"
    plugin.stdout_path.write_text("")
    plugin.stderr_path.write_text(f"devstack fault: ssm_command_status={fault}\n")
    plugin.finished = datetime.now(UTC)
    plugin.response_code = 1 if fault == "Failed" else -1
    plugin.status, plugin.status_details = faults.SSM_FAULT_STATUSES[fault]
    with invocation.lock:
        invocation.status, invocation.status_details = plugin.status, plugin.status_details


def _stop(invocation: Invocation, reason: str) -> None:
    with invocation.lock:
        if invocation.finished or invocation.stop_reason:
            return
        invocation.stop_reason = reason
        process = invocation.process
    if process is not None:
        _kill_group(process)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group, SIGKILL what is left after a short grace."""
    pgid = process.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None and not _group_alive(pgid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    """True while a process of the group is alive (zombies waiting for a reaper do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _normalise(value: Any, param_type: str) -> Any:
    """SendCommand sends every value as a list of strings; String parameters take the first."""
    if param_type == "StringList":
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if isinstance(value, list):
        return str(value[0]) if len(value) == 1 else "\n".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _substitute(template: Any, values: dict[str, Any]) -> Any:
    """`{{ name }}` -> value; a list element that is exactly one StringList placeholder expands."""
    if isinstance(template, list):
        out: list[str] = []
        for item in template:
            replaced = _substitute(item, values)
            out.extend(replaced if isinstance(replaced, list) else [replaced])
        return out
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template.strip())
    if whole and whole.group(1) in values:
        return values[whole.group(1)]

    def replace(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            return match.group(0)
        value = values[match.group(1)]
        return "\n".join(value) if isinstance(value, list) else str(value)

    return _PLACEHOLDER.sub(replace, template)


def _read_prefix(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit * 4)
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace")[:limit]
