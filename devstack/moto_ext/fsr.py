"""EBS Fast Snapshot Restore: Enable/Disable/DescribeFastSnapshotRestores for moto's EC2.

States move with time: enabling -> optimizing -> enabled, disabling -> disabled. Delays come from
the fault settings, else moto's state manager (model `ec2::fast_snapshot_restore`, progression
"time"), else env DEVSTACK_FSR_*_SECONDS, else 1 s. Partial failures are `Unsuccessful` entries in
an HTTP 200 answer, as in AWS.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.responses import EC2Response
from moto.moto_api import state_manager

from devstack import faults
from devstack.moto_ext import _patch

FSR_QUOTA_PER_REGION = 5
STATE_MODEL = "ec2::fast_snapshot_restore"


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


_lock = threading.Lock()
_records: dict[tuple[str, str], dict[tuple[str, str], FsrRecord]] = {}


def reset() -> None:
    with _lock:
        _records.clear()


def forget_snapshot(account: str, region: str, snapshot_id: str) -> None:
    """A deleted snapshot loses its FSR (and frees its quota slot)."""
    with _lock:
        records = _records.get((account, region), {})
        for key in [k for k in records if k[0] == snapshot_id]:
            del records[key]


def delays() -> tuple[float, float]:
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


def enable_fast_snapshot_restores(self: Any) -> ActionResult:
    zones = self._get_param("AvailabilityZones", [])
    snapshot_ids = self._get_param("SourceSnapshotIds", [])
    self.error_on_dryrun()
    backend = self.ec2_backend
    valid_zones = {zone.name for zone in backend.describe_availability_zones()}
    fault_zones = set(faults.current().fsr_unsuccessful_azs)
    enabling_delay, optimizing_delay = delays()
    now = datetime.now(UTC)
    successful, unsuccessful = [], []
    with _lock:
        records = _records.setdefault((self.current_account, self.region), {})
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
                                         f"The availability zone '{zone}' is not valid in {self.region}."))
                elif zone in fault_zones:
                    errors.append(_error(zone, "InternalError",
                                         f"devstack fault: fast snapshot restore failed in {zone}."))
                elif snapshot_id not in active and len(active) >= FSR_QUOTA_PER_REGION:
                    errors.append(_error(
                        zone, "FastSnapshotRestoreLimitExceeded",
                        f"You can enable fast snapshot restore for at most {FSR_QUOTA_PER_REGION} "
                        f"snapshots per Region; {len(active)} already have it in {self.region}.",
                    ))
                else:
                    record = records.get((snapshot_id, zone))
                    if record is None or record.state(now) in ("disabling", "disabled"):
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
    return ActionResult({"Successful": successful, "Unsuccessful": unsuccessful})


def disable_fast_snapshot_restores(self: Any) -> ActionResult:
    zones = self._get_param("AvailabilityZones", [])
    snapshot_ids = self._get_param("SourceSnapshotIds", [])
    self.error_on_dryrun()
    now = datetime.now(UTC)
    disabling_delay = faults.delay("fsr_disabling_seconds")
    successful, unsuccessful = [], []
    with _lock:
        records = _records.setdefault((self.current_account, self.region), {})
        for snapshot_id in snapshot_ids:
            if snapshot_id not in self.ec2_backend.snapshots:
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
    return ActionResult({"Successful": successful, "Unsuccessful": unsuccessful})


def describe_fast_snapshot_restores(self: Any) -> ActionResult:
    filters = {f["Name"]: set(f.get("Values", [])) for f in self._get_param("Filters", []) or []}
    now = datetime.now(UTC)
    with _lock:
        records = list(_records.get((self.current_account, self.region), {}).values())
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
    return ActionResult({"FastSnapshotRestores": items})


def install() -> None:
    state_manager.register_default_transition(STATE_MODEL, {"progression": "time", "seconds": 1})
    for handler in (enable_fast_snapshot_restores, disable_fast_snapshot_restores,
                    describe_fast_snapshot_restores):
        _patch.replace(EC2Response, handler.__name__, lambda _orig, h=handler: h)
