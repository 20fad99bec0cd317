"""Fast Snapshot Restore costs $0.75 per snapshot per AZ-hour and a Region allows it on 5 snapshots:
FSR is checked against both limits before it is enabled, and taken off every snapshot that is no
longer live or a rollback target (a failed build's, the superseded one after a validated rollout,
a rejected one after a rollback).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.settings.models import LifecycleConfig
from ml_cache.tags import PIPELINE_TAG

BILLED_FSR_STATES = ("enabling", "optimizing", "enabled")  # AWS bills from `enabling` until `disabled`
QUOTA_FSR_STATES = (*BILLED_FSR_STATES, "disabling")  # a snapshot holds its quota slot until `disabled`


class FsrQuotaExceeded(RuntimeError):
    """Enabling FSR would pass the Region's quota or this pipeline's limit: nothing was enabled."""


def fsr_snapshots(entries: Iterable[dict[str, Any]], states: tuple[str, ...] = BILLED_FSR_STATES
                  ) -> dict[str, list[str]]:
    """Snapshot id -> AZs where FSR is in one of `states` (default: billed)."""
    zones: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        if entry["State"] in states:
            zones[entry["SnapshotId"]].append(entry["AvailabilityZone"])
    return {snapshot_id: sorted(found) for snapshot_id, found in zones.items()}


def check_fsr_quota(ec2: CacheEc2Hook, *, snapshot_id: str, pipeline: str, lifecycle: LifecycleConfig) -> None:
    """Fail, naming the snapshots that hold FSR, when enabling it on `snapshot_id` would pass the
    Region's quota (every owner's snapshots count: `Unsuccessful` FastSnapshotRestoreLimitExceeded
    otherwise, per AZ) or the pipeline's `fsr_max_snapshots`."""
    entries = ec2.describe_all_fast_snapshot_restores()
    others = {sid: zones for sid, zones in fsr_snapshots(entries, QUOTA_FSR_STATES).items() if sid != snapshot_id}
    if len(others) + 1 > lifecycle.fsr_region_quota:
        raise FsrQuotaExceeded(
            f"Fast Snapshot Restore quota: {len(others)} snapshot(s) in {ec2.conn_region_name} already have it "
            f"({_listing(others)}), the quota is {lifecycle.fsr_region_quota} (lifecycle.fsr_region_quota; AWS "
            f"Service Quotas raises it). Disable FSR on one, or let ml_container_cache_janitor retire ours.")
    ours = {snapshot["SnapshotId"] for snapshot in ec2.find_snapshots({PIPELINE_TAG: pipeline})}
    pipeline_fsr = {sid: zones for sid, zones in others.items() if sid in ours}
    if len(pipeline_fsr) + 1 > lifecycle.fsr_max_snapshots:
        raise FsrQuotaExceeded(
            f"pipeline {pipeline} already has Fast Snapshot Restore on {len(pipeline_fsr)} snapshot(s) "
            f"({_listing(pipeline_fsr)}); lifecycle.fsr_max_snapshots is {lifecycle.fsr_max_snapshots}. "
            f"ml_container_cache_janitor retires FSR on snapshots that are neither live nor a rollback target.")


def disable_fsr(ec2: CacheEc2Hook, snapshot_id: str, zones: list[str]) -> None:
    """FSR off in `zones`; a partial failure (HTTP 200 with `Unsuccessful`) is an error naming the AZs."""
    response = ec2.disable_fast_snapshot_restores(snapshot_id, zones)
    errors = [f"{e['AvailabilityZone']}: {e['Error']['Code']} {e['Error']['Message']}"
              for item in response.get("Unsuccessful", []) for e in item["FastSnapshotRestoreStateErrors"]]
    if errors:
        raise RuntimeError(f"disabling FSR on {snapshot_id} failed in {'; '.join(errors)}")


def retire_fsr(ec2: CacheEc2Hook, snapshot_id: str) -> list[str]:
    """Disable FSR wherever it is billed on `snapshot_id`; the AZs it was disabled in."""
    zones = fsr_snapshots(ec2.describe_fast_snapshot_restores(snapshot_id)).get(snapshot_id, [])
    if zones:
        disable_fsr(ec2, snapshot_id, zones)
    return zones


def _listing(snapshots: dict[str, list[str]]) -> str:
    return ", ".join(f"{sid} in {'/'.join(zones)}" for sid, zones in sorted(snapshots.items())) or "none"
