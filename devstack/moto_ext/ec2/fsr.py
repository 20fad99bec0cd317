"""Fast Snapshot Restore for the local cloud: states on the simulated clock, the quota, the AZ-hours.

States move with time: enabling -> optimizing -> enabled, disabling -> disabled. Delays come from
the fault settings, else moto's state manager (model `ec2::fast_snapshot_restore`, progression
"time"), else env DEVSTACK_FSR_*_SECONDS, else 1 s. Every enable ever made is kept (a replaced or
forgotten record moves to the history) so that billing counts each one.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from moto.moto_api import state_manager

from devstack import clock, faults

# https://docs.aws.amazon.com/ebs/latest/userguide/ebs-fast-snapshot-restore.html (quota: 5 per Region)
FSR_QUOTA_PER_REGION = 5
STATE_MODEL = "ec2::fast_snapshot_restore"
# https://aws.amazon.com/ebs/pricing/: FSR is billed per minute, with a 1-hour minimum, per AZ.
BILLING_MINIMUM_MINUTES = 60


@dataclass
class FsrRecord:
    snapshot_id: str
    availability_zone: str
    owner_id: str
    enabling_time: datetime
    optimizing_time: datetime
    enabled_time: datetime
    disabling_time: datetime | None = None
    disabled_time: datetime | None = None

    def state(self, now: datetime) -> str:
        if self.disabling_time is not None:
            return "disabled" if now >= self.disabled_time else "disabling"  # type: ignore[operator]
        if now < self.optimizing_time:
            return "enabling"
        return "optimizing" if now < self.enabled_time else "enabled"

    def describe(self, now: datetime) -> dict[str, Any]:
        state = self.state(now)
        item: dict[str, Any] = {
            "SnapshotId": self.snapshot_id,
            "AvailabilityZone": self.availability_zone,
            "State": state,
            "StateTransitionReason": "Client.UserInitiated"
            if state in ("enabling", "disabling")
            else "Client.UserInitiated - Lifecycle state transition",
            "OwnerId": self.owner_id,
            "EnablingTime": self.enabling_time,
        }
        if now >= self.optimizing_time:
            item["OptimizingTime"] = self.optimizing_time
        if now >= self.enabled_time:
            item["EnabledTime"] = self.enabled_time
        if self.disabling_time is not None:
            item["DisablingTime"] = self.disabling_time
            if state == "disabled":
                item["DisabledTime"] = self.disabled_time
        return item

    def billed_minutes(self, now: datetime) -> int:
        """Whole minutes from enabling to disabled (or now), at least the 1-hour minimum."""
        end = self.disabled_time if self.disabled_time is not None and self.disabled_time <= now else now
        minutes = math.ceil(max(0.0, (end - self.enabling_time).total_seconds()) / 60)
        return max(BILLING_MINIMUM_MINUTES, minutes)


_lock = threading.Lock()
_records: dict[tuple[str, str], dict[tuple[str, str], FsrRecord]] = {}
_history: dict[tuple[str, str], list[FsrRecord]] = {}


def reset() -> None:
    with _lock:
        _records.clear()
        _history.clear()


def forget_snapshot(account: str, region: str, snapshot_id: str) -> None:
    """A deleted snapshot loses its FSR at once (and frees its quota slot); billing stops then."""
    now = clock.now()
    with _lock:
        records = _records.get((account, region), {})
        for key in [k for k in records if k[0] == snapshot_id]:
            record = records.pop(key)
            if record.disabled_time is None or record.disabled_time > now:
                record.disabling_time = record.disabling_time or now
                record.disabled_time = now
            _history.setdefault((account, region), []).append(record)


def fsr_delays() -> tuple[float, float]:
    """(enabling, optimizing) seconds."""
    enabling = faults.current().fsr_enabling_seconds
    optimizing = faults.current().fsr_optimizing_seconds
    transition = state_manager._transitions.get(STATE_MODEL)  # only an explicit set-transition
    if transition and transition.get("progression") == "time" and "seconds" in transition:
        seconds = float(transition["seconds"])
        enabling = seconds if enabling is None else enabling
        optimizing = seconds if optimizing is None else optimizing
    return (
        enabling if enabling is not None else faults.delay("fsr_enabling_seconds"),
        optimizing if optimizing is not None else faults.delay("fsr_optimizing_seconds"),
    )


def _error(az: str, code: str, message: str) -> dict[str, Any]:
    return {"AvailabilityZone": az, "Error": {"Code": code, "Message": message}}


def enable_fsr(backend: Any, account: str, region: str, snapshot_ids: list[str], zones: list[str]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Successful, Unsuccessful) entries: unknown snapshot or zone, the fault's AZs, the quota."""
    valid_zones = {zone.name for zone in backend.describe_availability_zones()}
    fault_zones = set(faults.current().fsr_unsuccessful_azs)
    enabling_delay, optimizing_delay = fsr_delays()
    now = clock.now()
    successful, unsuccessful = [], []
    with _lock:
        records = _records.setdefault((account, region), {})
        for snapshot_id in snapshot_ids:
            errors = []
            snapshot = backend.snapshots.get(snapshot_id)
            active = {sid for (sid, _), rec in records.items() if rec.state(now) != "disabled"}
            for zone in zones:
                if snapshot is None:
                    errors.append(_error(zone, "InvalidSnapshot.NotFound",
                                         f"The snapshot '{snapshot_id}' does not exist."))
                elif zone not in valid_zones:
                    errors.append(_error(zone, "InvalidParameterValue",
                                         f"The availability zone '{zone}' is not valid in {region}."))
                elif zone in fault_zones:
                    errors.append(_error(zone, "InternalError",
                                         f"devstack fault: fast snapshot restore failed in {zone}."))
                elif snapshot_id not in active and len(active) >= FSR_QUOTA_PER_REGION:
                    errors.append(_error(
                        zone, "FastSnapshotRestoreLimitExceeded",
                        f"You can enable fast snapshot restore for at most {FSR_QUOTA_PER_REGION} "
                        f"snapshots per Region; {len(active)} already have it in {region}.",
                    ))
                else:
                    record = records.get((snapshot_id, zone))
                    if record is None or record.state(now) in ("disabling", "disabled"):
                        if record is not None:
                            _history.setdefault((account, region), []).append(record)
                        optimizing_at = now + timedelta(seconds=enabling_delay)
                        record = FsrRecord(
                            snapshot_id=snapshot_id, availability_zone=zone, owner_id=snapshot.owner_id,
                            enabling_time=now, optimizing_time=optimizing_at,
                            enabled_time=optimizing_at + timedelta(seconds=optimizing_delay),
                        )
                        records[(snapshot_id, zone)] = record
                        active.add(snapshot_id)
                    successful.append(record.describe(now))
            if errors:
                unsuccessful.append({"SnapshotId": snapshot_id, "FastSnapshotRestoreStateErrors": errors})
    return successful, unsuccessful


def disable_fsr(backend: Any, account: str, region: str, snapshot_ids: list[str], zones: list[str]
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    now = clock.now()
    disabling_delay = faults.delay("fsr_disabling_seconds")
    successful, unsuccessful = [], []
    with _lock:
        records = _records.setdefault((account, region), {})
        for snapshot_id in snapshot_ids:
            if snapshot_id not in backend.snapshots:
                unsuccessful.append({"SnapshotId": snapshot_id, "FastSnapshotRestoreStateErrors": [
                    _error(zone, "InvalidSnapshot.NotFound", f"The snapshot '{snapshot_id}' does not exist.")
                    for zone in zones
                ]})
                continue
            for zone in zones:
                record = records.get((snapshot_id, zone))
                if record is None:
                    successful.append({"SnapshotId": snapshot_id, "AvailabilityZone": zone, "State": "disabled",
                                       "StateTransitionReason": "Client.UserInitiated"})
                    continue
                if record.disabling_time is None:
                    record.disabling_time = now
                    record.disabled_time = now + timedelta(seconds=disabling_delay)
                successful.append(record.describe(now))
    return successful, unsuccessful


def describe_fsr(account: str, region: str, filters: dict[str, set[str]]) -> list[dict[str, Any]]:
    now = clock.now()
    with _lock:
        records = list(_records.get((account, region), {}).values())
    items = []
    for record in records:
        item = record.describe(now)
        checks = {
            "snapshot-id": item["SnapshotId"],
            "availability-zone": item["AvailabilityZone"],
            "state": item["State"],
            "owner-id": item["OwnerId"],
        }
        if all(checks.get(name) in values for name, values in filters.items() if name in checks):
            items.append(item)
    return items


def billing() -> list[dict[str, Any]]:
    """One entry per enable of FSR (snapshot, AZ), current and past, with its billed AZ-hours."""
    now = clock.now()
    with _lock:
        everything = [((account, region), record) for (account, region), records in _records.items()
                      for record in records.values()]
        everything += [(key, record) for key, records in _history.items() for record in records]
    entries = []
    for (account, region), record in sorted(everything, key=lambda item: item[1].enabling_time):
        minutes = record.billed_minutes(now)
        entries.append({
            "account": account, "region": region, "snapshot_id": record.snapshot_id,
            "availability_zone": record.availability_zone, "state": record.state(now),
            "enabling_time": record.enabling_time.isoformat(),
            "disabled_time": record.disabled_time.isoformat() if record.state(now) == "disabled" else None,
            "billed_minutes": minutes, "az_hours": round(minutes / 60, 4),
        })
    return entries
