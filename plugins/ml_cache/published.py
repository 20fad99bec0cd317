"""The published state in SSM, one writer and one reader.

`/<name>/snapshot-id` holds the bare `snap-…` id because Terraform reads it (or Terraform's
placeholder `none` before the first build); `/<name>/snapshot-metadata` holds the JSON metadata
(refs, digests, sizes, run id, arch, FSR AZs) that does not fit a bare id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from ml_cache.errors import PermanentFailure
from ml_cache.fingerprint import fingerprint
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.images import image_set_digest

NO_CACHE = "none"  # what the id parameter holds when no cache exists (Terraform's placeholder)


class StalePublish(PermanentFailure):
    """A newer snapshot is already published: an older run must not overwrite it (no retry changes that)."""


class ImageMetadata(TypedDict):
    ref: str
    digest: str
    bytes: int | None


class BuildProvenance(TypedDict):
    """How the snapshot's volume started: from the previously published snapshot (`incremental`: only
    new layers pulled, the snapshot stores changed blocks) or blank (`fresh`, `reason` says why)."""

    mode: str  # "incremental" | "fresh"
    base_snapshot_id: str | None
    reason: str
    bytes_pulled: int | None  # content the builder fetched (the report's volume.bytes_pulled)


class SnapshotMetadata(TypedDict):
    """What the metadata parameter holds after a build (the cache event is cut from it).

    `fingerprint`/`fingerprint_inputs` (ml_cache.fingerprint) decide whether a later run is up to date;
    `cost` is ml_cache.cost's report of the run, with the pipeline's running total.
    """

    snapshot_id: str
    image_set: str
    images: list[ImageMetadata]
    arch: str
    platform: str
    fsr_availability_zones: list[str]
    volume_size_gib: int
    snapshot_start_time: str
    run_id: str
    totals: dict[str, Any]
    fingerprint: str | None
    fingerprint_inputs: dict[str, Any] | None
    build: BuildProvenance | None
    cost: dict[str, Any] | None


@dataclass(frozen=True)
class Published:
    """What is published now: the id (None when absent or `none`) and the metadata ({} when absent,
    not JSON or not an object, e.g. Terraform's placeholder)."""

    snapshot_id: str | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def metadata_of(self, snapshot_id: str) -> dict[str, Any]:
        """The metadata if it describes `snapshot_id`, else {} (it may describe another snapshot)."""
        return self.metadata if self.metadata.get("snapshot_id") == snapshot_id else {}


def snapshot_metadata(*, report: Mapping[str, Any], snapshot: Mapping[str, Any], fsr_states: Mapping[str, str],
                      run_id: str, arch: str, platform: str, volume_size_gib: int,
                      fingerprint_inputs: dict[str, Any] | None = None, build: BuildProvenance | None = None,
                      cost: dict[str, Any] | None = None) -> SnapshotMetadata:
    """What consumers need to know about the snapshot, with digests (tags move, digests do not).

    `report` is the builder's verified report, `snapshot` EC2's DescribeSnapshots entry.
    """
    images = [ImageMetadata(ref=image["ref"], digest=image["digest"], bytes=image.get("bytes"))
              for image in report["images"]]
    start = snapshot["StartTime"]
    return SnapshotMetadata(
        snapshot_id=snapshot["SnapshotId"],
        image_set=image_set_digest([image["digest"] for image in images]),
        images=images,
        arch=arch,
        platform=platform,
        fsr_availability_zones=sorted(fsr_states) if fsr_states else [],
        volume_size_gib=volume_size_gib,
        snapshot_start_time=start.isoformat() if isinstance(start, datetime) else str(start),
        run_id=run_id,
        totals=report.get("totals", {}),
        fingerprint=fingerprint(fingerprint_inputs) if fingerprint_inputs else None,
        fingerprint_inputs=fingerprint_inputs,
        build=build,
        cost=cost,
    )


def read_published(ssm: CacheSsmHook, *, parameter: str, metadata_parameter: str) -> Published:
    """The id and metadata parameters as they are now."""
    current = ssm.get_parameter(parameter)
    value = current["Value"] if current else None
    described = ssm.get_parameter(metadata_parameter)
    return Published(snapshot_id=None if value in (None, NO_CACHE) else value,
                     metadata=_json_object(described["Value"]) if described else {})


def refuse_stale(published: Published, metadata: SnapshotMetadata, *, parameter: str) -> None:
    """StalePublish when the published snapshot was taken after this one: two builds raced (another DAG
    run, a manual publish) and the newer one already won; an older run never overwrites it."""
    published_start = published.metadata_of(published.snapshot_id or "").get("snapshot_start_time") or ""
    if published_start > metadata["snapshot_start_time"]:
        raise StalePublish(
            f"{parameter} already holds {published.snapshot_id} (taken {published_start}), "
            f"newer than {metadata['snapshot_id']} ({metadata['snapshot_start_time']}): not published"
        )


def publish_snapshot(ssm: CacheSsmHook, *, parameter: str, metadata_parameter: str,
                     metadata: SnapshotMetadata) -> dict[str, Any]:
    """Point the parameters at the new snapshot unless a newer one is already there."""
    previous = read_published(ssm, parameter=parameter, metadata_parameter=metadata_parameter)
    refuse_stale(previous, metadata, parameter=parameter)
    version = ssm.put_parameter(
        parameter, metadata["snapshot_id"],
        description="ML container image cache snapshot (bare id; written by ml_container_cache_build)",
    )
    metadata_version = ssm.put_parameter(
        metadata_parameter, json.dumps(metadata, sort_keys=True),
        description=f"Metadata of the snapshot in {parameter}", tier="Intelligent-Tiering",
    )
    return {
        "parameter": parameter,
        "parameter_version": version,
        "metadata_parameter_version": metadata_version,
        "previous_snapshot_id": previous.snapshot_id,
    }


def restore_snapshot(ssm: CacheSsmHook, *, parameter: str, metadata_parameter: str, failed_snapshot_id: str,
                     previous_snapshot_id: str | None) -> str | None:
    """After a failed rollout, point the parameters back at what the nodes ran before (`none` when
    they ran no cache), but only while they still name the failed snapshot."""
    current = read_published(ssm, parameter=parameter, metadata_parameter=metadata_parameter)
    if current.snapshot_id != failed_snapshot_id:
        return None  # someone published something else meanwhile: leave it
    previous = previous_snapshot_id or NO_CACHE
    ssm.put_parameter(parameter, previous, description=f"Restored after the rollout of {failed_snapshot_id} failed")
    restored = {**_metadata_in_history(ssm, metadata_parameter, previous), "snapshot_id": previous,
                "rolled_back_from": failed_snapshot_id}
    ssm.put_parameter(metadata_parameter, json.dumps(restored, sort_keys=True),
                      description="Metadata of the restored snapshot", tier="Intelligent-Tiering")
    return previous


def _metadata_in_history(ssm: CacheSsmHook, metadata_parameter: str, snapshot_id: str) -> dict[str, Any]:
    """The newest metadata once published for `snapshot_id` (its images, fingerprint, cost), so a restored
    cache is described as fully as when it was built and the next build compares against it; {} if none."""
    for version in reversed(ssm.get_parameter_history(metadata_parameter)):
        metadata = _json_object(version["Value"])
        if metadata.get("snapshot_id") == snapshot_id:
            return {key: value for key, value in metadata.items() if key != "rolled_back_from"}
    return {}


def _json_object(value: str) -> dict[str, Any]:
    try:
        loaded = json.loads(value)
    except ValueError:
        return {}  # a placeholder written by Terraform
    return loaded if isinstance(loaded, dict) else {}
