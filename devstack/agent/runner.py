"""Carrying out invocations: each step's script runs with `bash` in the instance's sandbox.

The sandbox directory is the working directory and its environment the script's; every step runs
in a new session, so timeout, cancel and terminate stop its whole process group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from devstack import clock, faults, process
from devstack.agent import loss, models
from devstack.agent.cloudwatch import CloudWatchOutput, StepStreamer
from devstack.agent.documents import plan
from devstack.agent.models import Invocation, PluginRun
from devstack.sandbox import Sandbox

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 2.0


def start(command_id: str, sandbox: Sandbox, document_name: str, content: dict[str, Any],
          parameters: dict[str, Any], comment: str = "", cloudwatch: CloudWatchOutput | None = None) -> Invocation:
    """Validate, register and start one invocation in the background."""
    cmd_dir = sandbox.root / "ssm" / command_id
    cmd_dir.mkdir(parents=True, exist_ok=True)
    plugins, ssm_env = plan(document_name, content, parameters, cmd_dir)
    env = {**os.environ, **sandbox.environment(), **ssm_env}
    invocation = Invocation(
        command_id=command_id, instance_id=sandbox.instance_id, document_name=document_name,
        comment=comment, plugins=plugins, env=env, cwd=sandbox.root,
        forced_status=faults.current().ssm_command_status, lose_instance=faults.current().instance_lost_mid_command,
        cloudwatch=cloudwatch,
    )
    invocation.visible_after = invocation.created_monotonic + faults.delay("invocation_absent_seconds")
    models.register(invocation)
    threading.Thread(target=_run, args=(invocation,), name=f"ssm-{command_id[:8]}", daemon=True).start()
    return invocation


def cancel(command_id: str, instance_ids: list[str] | None = None) -> None:
    """CancelCommand: kill the process groups of the command's unfinished invocations."""
    for invocation in models.for_command(command_id):
        if not instance_ids or invocation.instance_id in instance_ids:
            _stop(invocation, "Cancelled")


def terminate_instance(instance_id: str, wait: float = 10.0) -> None:
    """The instance is going away: its running commands end as Terminated (a lost one stays InProgress)."""
    invocations = [inv for inv in models.for_instance(instance_id)
                   if not inv.finished and inv.stop_reason != loss.LOST]
    for invocation in invocations:
        _stop(invocation, "Terminated")
    for invocation in invocations:
        invocation.done.wait(wait)


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
            plugin.finished = plugin.finished or clock.now()
            with contextlib.suppress(OSError), plugin.stderr_path.open("a") as err:
                err.write(f"devstack agent error: {error}\n")
            invocation.status = invocation.status_details = "Failed"
    finally:
        invocation.done.set()


def _run_plugin(invocation: Invocation, plugin: PluginRun) -> None:
    script_path = plugin.stdout_path.with_name(plugin.stdout_path.name.replace("stdout", "script.sh"))
    script_path.write_text(plugin.script)
    cwd = Path(plugin.working_directory) if plugin.working_directory else invocation.cwd
    plugin.started = clock.now()
    plugin.status = plugin.status_details = "InProgress"
    streamer = None
    if invocation.cloudwatch is not None:
        streamer = StepStreamer(invocation.cloudwatch, invocation.command_id, invocation.instance_id, plugin.name,
                                {"stdout": plugin.stdout_path, "stderr": plugin.stderr_path}).start()
    try:
        _carry_out(invocation, plugin, script_path, cwd)
    finally:
        if streamer is not None:  # the step ends once its last output is uploaded, as with the agent
            streamer.close()


def _carry_out(invocation: Invocation, plugin: PluginRun, script_path: Path, cwd: Path) -> None:
    try:
        child = process.start(["bash", str(script_path)], plugin.stdout_path, errors_path=plugin.stderr_path,
                              env=invocation.env, cwd=cwd)
    except OSError as error:
        with plugin.stderr_path.open("a") as err:
            err.write(f"failed to start: {error}\n")
        plugin.finished = clock.now()
        plugin.status = plugin.status_details = "Failed"
        plugin.response_code = 1
        return
    with invocation.lock:
        invocation.process, invocation.pgid = child, child.pid
        stop_now = invocation.stop_reason is not None
    loss_timer = None
    if stop_now:
        process.stop(child, KILL_GRACE_SECONDS)
    elif invocation.lose_instance:
        timer = threading.Timer(loss.LOST_AFTER_SECONDS, loss.lose_instance,
                                args=(invocation, invocation.lose_instance, KILL_GRACE_SECONDS))
        timer.daemon = True
        timer.start()
        loss_timer = timer
    deadline = time.monotonic() + plugin.timeout_seconds
    timed_out = False
    while True:
        try:
            child.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                timed_out = True
                process.stop(child, KILL_GRACE_SECONDS)
    process.stop(child, KILL_GRACE_SECONDS)  # stray children of a finished script belong to the command too
    if loss_timer is not None:  # a command quicker than the loss is not reported before it: the loss always hits
        loss_timer.join()
    lost = invocation.stop_reason == loss.LOST
    if lost:  # nobody reports the end: InProgress until the execution timeout
        time.sleep(max(0.0, deadline - time.monotonic()))
    plugin.finished = clock.now()
    plugin.response_code = child.returncode
    if invocation.stop_reason and not lost:
        _mark_stopped(invocation, plugin)
    elif timed_out or lost:
        plugin.status, plugin.status_details, plugin.response_code = "TimedOut", "ExecutionTimedOut", -1
    elif child.returncode == 0:
        plugin.status = plugin.status_details = "Success"
    else:
        plugin.status = plugin.status_details = "Failed"


def _mark_stopped(invocation: Invocation, plugin: PluginRun) -> None:
    plugin.finished = plugin.finished or clock.now()
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
    plugin.started = clock.now()
    plugin.status = "InProgress"
    time.sleep(0.2)
    fault = invocation.forced_status or "Failed"
    plugin.stdout_path.write_text("")
    plugin.stderr_path.write_text(f"devstack fault: ssm_command_status={fault}\n")
    plugin.finished = clock.now()
    plugin.response_code = 1 if fault == "Failed" else -1
    plugin.status, plugin.status_details = faults.SSM_FAULT_STATUSES[fault]
    with invocation.lock:
        invocation.status, invocation.status_details = plugin.status, plugin.status_details


def _stop(invocation: Invocation, reason: str) -> None:
    with invocation.lock:
        if invocation.finished or invocation.stop_reason:
            return
        invocation.stop_reason = reason
        child = invocation.process
    if child is not None:
        process.stop(child, KILL_GRACE_SECONDS)
