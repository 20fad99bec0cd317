"""Snapshots made through the AWS API for tests: EBS-direct ones with chosen blocks, tagged cache
snapshots with FSR (ca-central-1: the `cloud_conn` region), and their FSR states."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

ZONES = ["ca-central-1a", "ca-central-1b"]


def ebs_direct_snapshot(ebs: Any, blocks: dict[int, bytes]) -> str:
    """A completed snapshot holding `blocks` (StartSnapshot, PutSnapshotBlock, CompleteSnapshot)."""
    snapshot_id = ebs.start_snapshot(VolumeSize=1, Description="test")["SnapshotId"]
    for index, data in blocks.items():
        ebs.put_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockData=data, DataLength=len(data),
                               Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                               ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=len(blocks))
    return snapshot_id


def cache_snapshot(cloud_conn: Any, pipeline: str | None, *, fsr: bool = True, zones: list[str] = ZONES) -> str:
    """A snapshot tagged as `pipeline`'s cache (untagged when None), with FSR on in `zones` if `fsr`."""
    ec2 = cloud_conn.client("ec2")
    volume = ec2.create_volume(AvailabilityZone=zones[0], Size=1)["VolumeId"]
    tags = [{"Key": "ml-cache:pipeline", "Value": pipeline}, {"Key": "ml-cache:role", "Value": "cache"}]
    specs = [{"ResourceType": "snapshot", "Tags": tags}] if pipeline else []
    snapshot_id = ec2.create_snapshot(VolumeId=volume, TagSpecifications=specs)["SnapshotId"]
    if fsr:
        ec2.enable_fast_snapshot_restores(AvailabilityZones=zones, SourceSnapshotIds=[snapshot_id])
    return snapshot_id


def fsr_states(cloud_conn: Any, snapshot_id: str) -> dict[str, str]:
    entries = cloud_conn.client("ec2").describe_fast_snapshot_restores(
        Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])["FastSnapshotRestores"]
    return {e["AvailabilityZone"]: e["State"] for e in entries}
