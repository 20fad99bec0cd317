"""EBS snapshots of sandbox volumes: a real copy of the volume file, `pending` until it is done.

Snapshots of volumes without a backing file keep moto's behaviour (instantly `completed`).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from pathlib import Path
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot
from moto.ec2.responses import EC2Response

from devstack import faults, sandbox, volumes
from devstack.moto_ext import _patch, fsr

log = logging.getLogger(__name__)


def _progress(self: Snapshot) -> str:
    return getattr(self, "devstack_progress", "100%")


def create_snapshot(original: Any) -> Any:
    def handler(self: Any) -> Any:
        result = original(self)
        snapshot = result.result
        source = sandbox.volume_file(snapshot.volume.id)
        if not source.exists():
            return result
        snapshot.status = "pending"
        snapshot.devstack_progress = "0%"
        answer = copy.copy(snapshot)  # serialized after we return: must not see the copy finish
        fail = faults.current().snapshot_error
        target = sandbox.new_snapshot_file(snapshot.id)
        threading.Thread(target=_copy, args=(snapshot, source, target, fail), daemon=True,
                         name=f"snapshot-{snapshot.id}").start()
        return ActionResult(answer)

    return handler


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


def delete_snapshot(original: Any) -> Any:
    def handler(self: Any) -> Any:
        snapshot_id = self._get_param("SnapshotId")
        result = original(self)
        sandbox.snapshot_file(snapshot_id).unlink(missing_ok=True)
        fsr.forget_snapshot(self.current_account, self.region, snapshot_id)
        return result

    return handler


def delete_volume(original: Any) -> Any:
    def delete(self: Any, volume_id: str) -> Any:
        result = original(self, volume_id)
        path = sandbox.volume_file(volume_id)
        if path.exists() and volumes.data_plane_missing() is None:
            volumes.cleanup_under(path)  # detaches a loop still backed by it
        path.unlink(missing_ok=True)
        return result

    return delete


def install() -> None:
    Snapshot.progress = property(_progress)  # type: ignore[assignment,method-assign]
    _patch.replace(EC2Response, "create_snapshot", create_snapshot)
    _patch.replace(EC2Response, "delete_snapshot", delete_snapshot)
    _patch.replace(EBSBackend, "delete_volume", delete_volume)
