"""EC2 state the extension adds to moto's models: FSR records, snapshot copies, instance sandboxes.

FSR states move with time: enabling -> optimizing -> enabled, disabling -> disabled. Delays come
from the fault settings, else moto's state manager (model `ec2::fast_snapshot_restore`, progression
"time"), else env DEVSTACK_FSR_*_SECONDS, else 1 s. A snapshot of a sandbox volume is a real copy of
its file, `pending` until done; every instance gets a sandbox that its termination tears down.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from moto.ec2.models.elastic_block_store import Snapshot
from moto.ec2.models.instances import Instance
from moto.moto_api import state_manager

from devstack import faults, sandbox, volumes
from devstack.agent import runner

log = logging.getLogger(__name__)

FSR_QUOTA_PER_REGION = 5
STATE_MODEL = "ec2::fast_snapshot_restore"
AMAZON_LINUX_ROOT_DEVICE = "/dev/xvda"


# --- Fast Snapshot Restore ------------------------------------------------------------------------

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
    now = datetime.now(UTC)
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
    now = datetime.now(UTC)
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
    now = datetime.now(UTC)
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


# --- snapshots of sandbox volumes -----------------------------------------------------------------

def snapshot_progress(self: Snapshot) -> str:
    return getattr(self, "devstack_progress", "100%")


def start_snapshot_copy(snapshot: Snapshot) -> Snapshot | None:
    """Copy the volume's file in the background, `pending` meanwhile; the snapshot as it is now (a
    response is serialized later and must not see the copy finish). None: no file, moto's way."""
    source = sandbox.volume_file(snapshot.volume.id)
    if not source.exists():
        return None
    snapshot.status = "pending"
    snapshot.devstack_progress = "0%"
    as_created = copy.copy(snapshot)
    fail = faults.current().snapshot_error
    target = sandbox.new_snapshot_file(snapshot.id)
    threading.Thread(target=_copy, args=(snapshot, source, target, fail), daemon=True,
                     name=f"snapshot-{snapshot.id}").start()
    return as_created


def _copy(snapshot: Snapshot, source: Path, target: Path, fail: bool) -> None:
    """Copy the volume file; stay `pending` at least DEVSTACK_SNAPSHOT_SECONDS (AWS is never instant)."""
    done_at = time.monotonic() + faults.delay("snapshot_seconds")
    try:
        if fail:
            time.sleep(max(0.0, done_at - time.monotonic()))
            raise RuntimeError("devstack fault: snapshot_error")
        volumes.copy_volume_file(source, target)
        time.sleep(max(0.0, done_at - time.monotonic()))
    except (RuntimeError, OSError) as error:
        log.warning("snapshot %s failed: %s", snapshot.id, error)
        target.unlink(missing_ok=True)
        snapshot.status = "error"
        snapshot.state_message = str(error)
        return
    if snapshot.ec2_backend.snapshots.get(snapshot.id) is not snapshot:  # deleted meanwhile
        target.unlink(missing_ok=True)
        return
    snapshot.devstack_progress = "100%"
    snapshot.status = "completed"


def delete_snapshot_file(account: str, region: str, snapshot_id: str) -> None:
    sandbox.snapshot_file(snapshot_id).unlink(missing_ok=True)
    forget_snapshot(account, region, snapshot_id)


def delete_volume(original: Any) -> Any:
    def delete(self: Any, volume_id: str) -> Any:
        result = original(self, volume_id)
        path = sandbox.volume_file(volume_id)
        if path.exists() and volumes.data_plane_missing() is None:
            volumes.cleanup_under(path)  # detaches a loop still backed by it
        path.unlink(missing_ok=True)
        return result

    return delete


# --- instances and their volumes --------------------------------------------------------------------

def run_instances(original: Any) -> Any:
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        reservation = original(self, *args, **kwargs)
        for instance in reservation.instances:
            try:
                sandbox.create(instance.id, data_volumes(self, instance), region=self.region_name)
            except Exception:
                log.exception("sandbox for %s failed", instance.id)
                raise
        return reservation

    return run


def data_volumes(backend: Any, instance: Instance) -> list[dict[str, object]]:
    """Non-root EBS volumes of the instance, as sandbox.create wants them.

    /dev/xvda is the root device of the Amazon Linux AMIs our templates use, also when moto
    launched the instance from one of its own images (root /dev/sda1): on AWS it holds `/`,
    so a node's mount script must never see it as a candidate cache volume.
    """
    found = []
    for device_name, mapping in instance.get_block_device_mapping:
        if device_name in (instance.root_device_name, AMAZON_LINUX_ROOT_DEVICE) or not mapping.volume_id:
            continue
        volume = backend.get_volume(mapping.volume_id)
        found.append({
            "volume_id": volume.id,
            "device_name": device_name,
            "size_gib": volume.size,
            "delete_on_termination": bool(mapping.delete_on_termination),
            "snapshot_id": volume.snapshot_id,
        })
    return found


def terminate(original: Any) -> Any:
    def terminate_instance(self: Instance) -> Any:
        if self.state != "terminated":
            runner.terminate_instance(self.id)
            sandbox.teardown(self.id)
        return original(self)

    return terminate_instance


def attach_volume(original: Any) -> Any:
    def attach(self: Any, volume_id: str, instance_id: str, device_path: str,
               delete_on_termination: bool = False) -> Any:
        attachment = original(self, volume_id, instance_id, device_path, delete_on_termination)
        instance = self.get_instance(instance_id)
        if attachment is not None and device_path != instance.root_device_name:
            volume = self.get_volume(volume_id)
            sandbox.attach_volume(instance_id, {
                "volume_id": volume_id, "device_name": device_path, "size_gib": volume.size,
                "delete_on_termination": bool(delete_on_termination), "snapshot_id": volume.snapshot_id,
            })
        return attachment

    return attach


def detach_volume(original: Any) -> Any:
    def detach(self: Any, volume_id: str, instance_id: str, device_path: str) -> Any:
        sandbox.detach_volume(instance_id, volume_id)
        return original(self, volume_id, instance_id, device_path)

    return detach
