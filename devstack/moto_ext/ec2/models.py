"""EC2 state the extension adds to moto's models: snapshot copies, volumes from snapshots, sandboxes.

A snapshot of a sandbox volume is a real copy of its file, `pending` until the copy and its block
records (devstack.moto_ext.ebs: what EBS would store, full or incremental) are done; every instance
gets a sandbox that its termination tears down, and its termination time is kept for billing.
Fast Snapshot Restore lives in devstack.moto_ext.ec2.fsr.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from pathlib import Path
from typing import Any

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_block_store import Snapshot
from moto.ec2.models.instances import Instance

from devstack import clock, faults, sandbox, volumes
from devstack.agent import runner
from devstack.moto_ext.ebs import models as ebs_models
from devstack.moto_ext.ec2 import fsr

log = logging.getLogger(__name__)

AMAZON_LINUX_ROOT_DEVICE = "/dev/xvda"


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
        ebs_models.record(snapshot, target)
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
    fsr.forget_snapshot(account, region, snapshot_id)
    ebs_models.mark_deleted(snapshot_id)


def delete_volume(original: Any) -> Any:
    def delete(self: Any, volume_id: str) -> Any:
        result = original(self, volume_id)
        path = sandbox.volume_file(volume_id)
        if path.exists() and volumes.data_plane_missing() is None:
            volumes.cleanup_under(path)  # detaches a loop still backed by it
        path.unlink(missing_ok=True)
        return result

    return delete


def create_volume(original: Any) -> Any:
    """A volume from a snapshot: at least the snapshot's size, and its KMS key unless another is given.

    https://docs.aws.amazon.com/ebs/latest/userguide/ebs-creating-volume.html: the size must be at
    least the snapshot's; a volume from an encrypted snapshot is encrypted, with the snapshot's key
    unless you specify another one (https://docs.aws.amazon.com/ebs/latest/userguide/encryption-examples.html).
    """

    def create(self: Any, size: int, zone_name: str, snapshot_id: str | None = None, encrypted: bool = False,
               kms_key_id: str | None = None, *args: Any, **kwargs: Any) -> Any:
        snapshot = self.get_snapshot(snapshot_id) if snapshot_id else None
        if snapshot is not None:
            minimum = snapshot.volume.size
            if size is not None and int(size) < minimum:
                raise EC2ClientError("InvalidParameterValue", f"Volume of size {size} is smaller than snapshot "
                                     f"{snapshot_id}, expect size >= {minimum}")
            if snapshot.encrypted:
                encrypted = True
                kms_key_id = kms_key_id or snapshot.kms_key_id or snapshot.volume.kms_key_id
        return original(self, size, zone_name, snapshot_id, encrypted, kms_key_id, *args, **kwargs)

    return create


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
            self.devstack_terminated_at = clock.now()
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
