"""Publish last: the bare snapshot id for Terraform, a metadata sibling, the Asset event's extra."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.images import image_set_digest


class StalePublish(RuntimeError):
    """A newer snapshot is already published: an older run must not overwrite it."""


def snapshot_metadata(settings: dict[str, Any], report: dict[str, Any], snapshot: dict[str, Any],
                      fsr_states: dict[str, str], run_id: str) -> dict[str, Any]:
    """What consumers need to know about the snapshot, with digests (tags move, digests do not)."""
    images = [{"ref": image["ref"], "digest": image["digest"], "bytes": image.get("bytes")}
              for image in report["images"]]
    start = snapshot["StartTime"]
    return {
        "snapshot_id": snapshot["SnapshotId"],
        "image_set": image_set_digest([image["digest"] for image in images]),
        "images": images,
        "arch": settings["architecture"],
        "platform": settings["platform"],
        "fsr_availability_zones": sorted(fsr_states) if fsr_states else [],
        "volume_size_gib": settings["volume_size_gib"],
        "snapshot_start_time": start.isoformat() if isinstance(start, datetime) else str(start),
        "run_id": run_id,
        "totals": report.get("totals", {}),
    }


def asset_extra(metadata: dict[str, Any]) -> dict[str, Any]:
    """The Asset `ml_container_cache` event contract."""
    keys = ("snapshot_id", "image_set", "arch", "fsr_availability_zones", "run_id")
    extra = {key: metadata[key] for key in keys}
    extra["images"] = [{"ref": image["ref"], "digest": image["digest"]} for image in metadata["images"]]
    return extra


def publish_snapshot(hook: CacheSsmHook, settings: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """Point the SSM parameter at the new snapshot unless a newer one is already there."""
    previous = hook.get_parameter(settings["ssm_metadata_parameter"])
    previous_metadata = _load_json(previous["Value"]) if previous else {}
    previous_start = previous_metadata.get("snapshot_start_time") or ""
    if previous_start > metadata["snapshot_start_time"]:
        raise StalePublish(
            f"{settings['ssm_parameter']} already holds {previous_metadata.get('snapshot_id')} "
            f"(taken {previous_start}), newer than {metadata['snapshot_id']} ({metadata['snapshot_start_time']})"
        )
    previous_id = hook.get_parameter(settings["ssm_parameter"])
    version = hook.put_parameter(
        settings["ssm_parameter"], metadata["snapshot_id"],
        description="ML container image cache snapshot (bare id; written by ml_container_cache_build)",
    )
    metadata_version = hook.put_parameter(
        settings["ssm_metadata_parameter"], json.dumps(metadata, sort_keys=True),
        description=f"Metadata of the snapshot in {settings['ssm_parameter']}", tier="Intelligent-Tiering",
    )
    return {
        "parameter": settings["ssm_parameter"],
        "parameter_version": version,
        "metadata_parameter_version": metadata_version,
        "previous_snapshot_id": previous_id["Value"] if previous_id else None,
    }


def _load_json(value: str) -> dict[str, Any]:
    try:
        loaded = json.loads(value)
    except ValueError:
        return {}  # a placeholder written by Terraform
    return loaded if isinstance(loaded, dict) else {}
