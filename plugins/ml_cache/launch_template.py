"""A new launch template version that changes only the cache volume's snapshot (pure logic)."""

from __future__ import annotations

import copy
from typing import Any


class LaunchTemplateError(ValueError):
    """The launch template does not have the shape the cache rollout relies on."""


def _cache_mapping(data: dict[str, Any], device_name: str) -> dict[str, Any]:
    for mapping in data.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == device_name and "Ebs" in mapping:
            return mapping
    devices = [m.get("DeviceName") for m in data.get("BlockDeviceMappings", [])]
    raise LaunchTemplateError(f"launch template has no EBS volume at {device_name} (has {devices})")


def cache_snapshot(data: dict[str, Any], device_name: str) -> str | None:
    """The snapshot the cache volume is restored from, or None (the node starts without a cache)."""
    return _cache_mapping(data, device_name)["Ebs"].get("SnapshotId")


def with_cache_snapshot(data: dict[str, Any], device_name: str, snapshot_id: str,
                        snapshot_size_gib: int | None = None) -> dict[str, Any]:
    """The whole of `data`, carried over explicitly, with the cache volume restored from `snapshot_id`.

    The volume grows to the snapshot's size when needed (a volume cannot be smaller than its snapshot).
    """
    new_data = copy.deepcopy(data)
    ebs = _cache_mapping(new_data, device_name)["Ebs"]
    ebs["SnapshotId"] = snapshot_id
    if snapshot_size_gib and ebs.get("VolumeSize", 0) < snapshot_size_gib:
        ebs["VolumeSize"] = snapshot_size_gib
    return new_data


def version_description(run_id: str, snapshot_id: str) -> str:
    """Marks the version a rollout run created, so a retry finds it instead of adding another."""
    return f"ml-container-cache {snapshot_id} {run_id}"[:255]
