"""Doing what the plan says, idempotently: a resource already gone counts as done, so a retry (which
re-plans from a fresh inventory) or a second janitor run never fails on the first one's work."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from ml_cache.fsr_lifecycle import disable_fsr
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.janitor.plan import Action, Plan

log = logging.getLogger(__name__)

ALREADY_GONE = {"InvalidInstanceID.NotFound", "InvalidVolume.NotFound", "InvalidSnapshot.NotFound",
                "InvalidDocument", "InvalidDocumentVersion"}


class CleanupFailed(RuntimeError):
    """Some actions failed; the others were done. A retry re-plans from a fresh inventory."""


def wait_fsr_disabled(ec2: CacheEc2Hook, snapshot_ids: list[str], *, timeout_seconds: float, poll_seconds: float,
                      sleep: Callable[[float], None] = time.sleep) -> set[str]:
    """Waits until no AZ of `snapshot_ids` has FSR other than `disabled`; returns those still not there."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        pending = {entry["SnapshotId"] for entry in ec2.find_fast_snapshot_restores(snapshot_ids)
                   if entry["State"] != "disabled"}
        if not pending or time.monotonic() >= deadline:
            return pending
        sleep(poll_seconds)


def _do(action: Action, ec2: CacheEc2Hook, ssm: CacheSsmHook) -> None:
    if action.action == "terminate_builder":
        ec2.terminate_instances([action.resource])
    elif action.action == "delete_volume":
        ec2.delete_volume(action.resource)
    elif action.action == "disable_fast_snapshot_restore":
        disable_fsr(ec2, action.resource, action.zones)
    elif action.action == "delete_snapshot":
        ec2.delete_snapshot(action.resource)
    else:
        document, version = action.resource.rsplit(":", 1)
        ssm.delete_document_version(document, version)


def apply_plan(plan: Plan, *, ec2: CacheEc2Hook, ssm: CacheSsmHook, fsr_timeout_seconds: float,
               poll_seconds: float) -> list[dict[str, Any]]:
    """Every action in the plan's order, each with its outcome (done, already gone, skipped, failed).
    Snapshots are deleted only once their FSR is disabled in every AZ. Raises CleanupFailed at the end
    when an action failed."""
    results: list[dict[str, Any]] = []
    still_on: set[str] | None = None
    for action in plan.actions:
        if action.action == "delete_snapshot" and still_on is None:  # every FSR disable was sent before
            to_delete = [a.resource for a in plan.actions if a.action == "delete_snapshot"]
            still_on = wait_fsr_disabled(ec2, to_delete, timeout_seconds=fsr_timeout_seconds,
                                         poll_seconds=poll_seconds)
        if still_on and action.resource in still_on:
            outcome = f"skipped: FSR not disabled after {fsr_timeout_seconds:g} s (the next run deletes it)"
        else:
            try:
                _do(action, ec2, ssm)
                outcome = "done"
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                outcome = "already gone" if code in ALREADY_GONE else f"failed: {code} {error}"
            except RuntimeError as error:
                outcome = f"failed: {error}"
        log.info("%s %s: %s", action.action, action.resource, outcome)
        results.append({**action.model_dump(mode="json"), "outcome": outcome})
    failed = [f"{r['action']} {r['resource']} ({r['outcome']})" for r in results if r["outcome"].startswith("failed")]
    if failed:
        raise CleanupFailed(f"{len(failed)} cleanup action(s) failed: {'; '.join(failed)}")
    return results
