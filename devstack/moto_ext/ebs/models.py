"""What EBS stores for each snapshot of a sandbox volume: its data blocks and, against its parent
(the snapshot its volume was created from), the changed blocks that make it incremental.

KMS rule (https://docs.aws.amazon.com/ebs/latest/userguide/how_snapshots_work.html, "Incremental
snapshots" / encryption): a snapshot is incremental only if its volume was created from a snapshot
encrypted with the same KMS key; a volume re-encrypted with another key gives a full snapshot.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from devstack import clock, sandbox
from devstack.moto_ext.ebs import blocks


@dataclass
class SnapshotBlocks:
    snapshot_id: str
    account: str
    region: str
    volume_size_gib: int
    kms_key_id: str | None
    parent_snapshot_id: str | None
    incremental: bool
    reason: str  # why incremental or full, in words
    data_blocks: list[int]
    changed_blocks: list[int]  # stored by this snapshot (all data blocks when full)
    removed_blocks: list[int] = field(default_factory=list)  # parent data blocks now holes
    created: datetime = field(default_factory=clock.now)
    deleted: datetime | None = None

    @property
    def full_bytes(self) -> int:
        return len(self.data_blocks) * blocks.BLOCK_SIZE

    @property
    def incremental_bytes(self) -> int:
        return len(self.changed_blocks) * blocks.BLOCK_SIZE


_lock = threading.Lock()
_records: dict[str, SnapshotBlocks] = {}


def reset() -> None:
    with _lock:
        _records.clear()


def get(snapshot_id: str) -> SnapshotBlocks | None:
    with _lock:
        return _records.get(snapshot_id)


def all_records() -> list[SnapshotBlocks]:
    with _lock:
        return list(_records.values())


def volume_kms_key(volume: Any) -> str | None:
    return volume.kms_key_id if volume.encrypted else None


def record(snapshot: Any, copy: Path) -> SnapshotBlocks:
    """Record the blocks of a finished snapshot copy, diffed against its parent when EBS would."""
    volume = snapshot.volume
    key = volume_kms_key(volume)
    data = blocks.data_blocks(copy)
    parent_id = volume.snapshot_id
    parent = get(parent_id) if parent_id else None
    parent_file = sandbox.snapshot_file(parent_id) if parent_id else None
    changed, removed, incremental = data, [], False
    if not parent_id:
        reason = "volume not created from a snapshot"
    elif parent is None or parent.deleted is not None or not parent_file or not parent_file.exists():
        reason = f"parent snapshot {parent_id} is gone or not a local-cloud snapshot"
    elif parent.kms_key_id != key:
        reason = f"KMS key differs from the parent's ({key} vs {parent.kms_key_id}): full snapshot"
        in_copy = set(data)
        removed = [index for index in parent.data_blocks if index not in in_copy]
    else:
        try:
            changed, removed = blocks.diff(parent_file, parent.data_blocks, copy, data)
            incremental, reason = True, f"incremental against {parent_id}"
        except OSError as error:  # the parent was deleted meanwhile: EBS would still store it all
            reason = f"parent snapshot {parent_id} unreadable ({error})"
    entry = SnapshotBlocks(
        snapshot_id=snapshot.id, account=snapshot.ec2_backend.account_id, region=snapshot.ec2_backend.region_name,
        volume_size_gib=volume.size, kms_key_id=key, parent_snapshot_id=parent_id, incremental=incremental,
        reason=reason, data_blocks=data, changed_blocks=changed, removed_blocks=removed,
    )
    with _lock:
        _records[snapshot.id] = entry
    return entry


def mark_deleted(snapshot_id: str) -> None:
    """Keep the record (billing history) but answer for it no more."""
    with _lock:
        entry = _records.get(snapshot_id)
        if entry is not None and entry.deleted is None:
            entry.deleted = clock.now()


def lineage(snapshot_id: str) -> list[str]:
    """The snapshot and its ancestors (parent, grand-parent, ...), newest first."""
    chain = []
    current: str | None = snapshot_id
    while current and current not in chain:
        chain.append(current)
        entry = get(current)
        current = entry.parent_snapshot_id if entry else None
    return chain


def changed_between(first: SnapshotBlocks, second: SnapshotBlocks) -> tuple[list[int], list[int]]:
    """(changed, removed) of `second` against its ancestor `first`: the recorded diff for the parent,
    a file diff for an older ancestor, every data block when a KMS key change broke the chain."""
    if second.parent_snapshot_id == first.snapshot_id:
        return second.changed_blocks, second.removed_blocks
    chain = lineage(second.snapshot_id)
    links = [get(sid) for sid in chain[:chain.index(first.snapshot_id)]]
    if not all(link is not None and link.incremental for link in links):
        in_second = set(second.data_blocks)
        return second.data_blocks, [index for index in first.data_blocks if index not in in_second]
    return blocks.diff(sandbox.snapshot_file(first.snapshot_id), first.data_blocks,
                       sandbox.snapshot_file(second.snapshot_id), second.data_blocks)
