"""What AWS would bill for the local cloud's usage so far, measured on the simulated clock.

Quantities, not dollars (prices belong to the pipeline's config): FSR AZ-hours per enable (billed
per minute with a 1-hour minimum), instance running hours from launch to termination (or now),
and per snapshot the bytes EBS stores for it: full (every data block) and incremental (the blocks
changed against its parent), each block 512 KiB.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from devstack import clock
from devstack.moto_ext.ebs import models as ebs_models
from devstack.moto_ext.ec2 import fsr


def _ec2_backends() -> list[tuple[str, str, Any]]:
    """(account, region, backend) for every EC2 backend moto holds, without creating new ones."""
    from moto.ec2.models import ec2_backends

    found = []
    for account in list(dict.keys(ec2_backends)):
        regions = dict.__getitem__(ec2_backends, account)
        for region in list(dict.keys(regions)):
            found.append((account, region, dict.__getitem__(regions, region)))
    return found


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def instances(now: datetime) -> list[dict[str, Any]]:
    entries = []
    for account, region, backend in _ec2_backends():
        for instance in backend.all_instances():
            launched = _aware(instance.launch_time)
            ended = getattr(instance, "devstack_terminated_at", None)
            seconds = max(0.0, ((ended or now) - launched).total_seconds())
            entries.append({
                "account": account, "region": region, "instance_id": instance.id,
                "instance_type": instance.instance_type, "state": instance.state,
                "launch_time": launched.isoformat(), "terminated_time": ended.isoformat() if ended else None,
                "running_hours": round(seconds / 3600, 4),
            })
    return entries


def snapshots() -> list[dict[str, Any]]:
    existing = {snapshot_id for _, _, backend in _ec2_backends() for snapshot_id in backend.snapshots}
    return [{
        "account": entry.account, "region": entry.region, "snapshot_id": entry.snapshot_id,
        "parent_snapshot_id": entry.parent_snapshot_id, "incremental": entry.incremental, "reason": entry.reason,
        "volume_size_gib": entry.volume_size_gib, "full_bytes": entry.full_bytes,
        "incremental_bytes": entry.incremental_bytes, "exists": entry.deleted is None and entry.snapshot_id in existing,
        "created": entry.created.isoformat(), "deleted": entry.deleted.isoformat() if entry.deleted else None,
    } for entry in sorted(ebs_models.all_records(), key=lambda e: e.created)]


def report() -> dict[str, Any]:
    """The whole bill: per FSR enable, per instance, per snapshot, and totals."""
    now = clock.now()
    fsr_entries = fsr.billing()
    instance_entries = instances(now)
    snapshot_entries = snapshots()
    return {
        "now": now.isoformat(),
        "fsr": fsr_entries,
        "instances": instance_entries,
        "snapshots": snapshot_entries,
        "totals": {
            "fsr_az_hours": round(sum(entry["az_hours"] for entry in fsr_entries), 4),
            "instance_hours": round(sum(entry["running_hours"] for entry in instance_entries), 4),
            "instance_hours_by_type": _by_type(instance_entries),
            "snapshot_full_bytes": sum(entry["full_bytes"] for entry in snapshot_entries),
            "snapshot_incremental_bytes": sum(entry["incremental_bytes"] for entry in snapshot_entries),
            "existing_snapshots": sum(1 for entry in snapshot_entries if entry["exists"]),
        },
    }


def _by_type(entries: list[dict[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for entry in entries:
        totals[entry["instance_type"]] = round(totals.get(entry["instance_type"], 0.0) + entry["running_hours"], 4)
    return totals
