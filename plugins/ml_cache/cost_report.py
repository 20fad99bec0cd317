"""The build's cost report, gathered from AWS at publish time (the arithmetic is ml_cache.cost's)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ml_cache.cost import fsr_az_hours, instance_hours, run_cost_report
from ml_cache.hooks.ebs import CacheEbsHook
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.settings.models import Prices


def gather_run_cost(ec2: CacheEc2Hook, ebs: CacheEbsHook, *, prices: Prices, builder_instance_id: str,
                    snapshot_id: str, parent_snapshot_id: str | None, fsr_zones: list[str],
                    previous_metadata: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """ml_cache.cost.run_cost_report of this run: the builder's hours (DescribeInstances), the snapshot's
    full and incremental bytes (EBS direct APIs; incremental = full without a parent), its FSR AZ-hours,
    and the FSR hours the earlier snapshots billed since the previous report (`previous_metadata`'s cost)."""
    instance = ec2.describe_instance(builder_instance_id)
    full = ebs.list_snapshot_blocks(snapshot_id).bytes
    incremental = ebs.list_changed_blocks(parent_snapshot_id, snapshot_id).bytes if parent_snapshot_id else full
    previous_cost = previous_metadata.get("cost") or None
    since = datetime.fromisoformat(previous_cost["as_of"]) if previous_cost else None
    carried, accruing = 0.0, [snapshot_id]
    for earlier in _earlier_fsr_snapshots(previous_metadata) - {snapshot_id}:
        entries = ec2.describe_fast_snapshot_restores(earlier)  # a deleted snapshot has none left
        carried += fsr_az_hours(entries, now=now, since=since)
        if any(entry["State"] != "disabled" for entry in entries):
            accruing.append(earlier)
    return run_cost_report(
        prices, now=now, instance_id=builder_instance_id, instance_type=instance["InstanceType"],
        builder_hours=instance_hours(instance, now=now), snapshot_id=snapshot_id,
        parent_snapshot_id=parent_snapshot_id, full_bytes=full, incremental_bytes=incremental, fsr_zones=fsr_zones,
        fsr_az_hours_so_far=fsr_az_hours(ec2.describe_fast_snapshot_restores(snapshot_id), now=now),
        previous_cost=previous_cost, carried_fsr_az_hours=carried, fsr_accruing_snapshot_ids=accruing,
    )


def _earlier_fsr_snapshots(previous_metadata: Mapping[str, Any]) -> set[str]:
    """The snapshots whose FSR the previous report left billing: its own list, else the published one."""
    total = (previous_metadata.get("cost") or {}).get("running_total") or {}
    listed = total.get("fsr_accruing_snapshot_ids")
    if listed is not None:
        return set(listed)
    return {previous_metadata["snapshot_id"]} if previous_metadata.get("snapshot_id") else set()
