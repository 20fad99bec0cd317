"""The weekly run's first decision: is the published cache already what this run would build, and
if not, can the builder start from it (incremental) or must it start blank (fresh)?

Pure logic over what `decide_build` read from AWS, so every rule is unit-tested on plain values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict

from ml_cache.fingerprint import differences, fingerprint, fingerprint_inputs
from ml_cache.fsr_lifecycle import BILLED_FSR_STATES  # on its way to enabled counts: a rebuild is no sooner
from ml_cache.published import Published
from ml_cache.registry import GIB, volume_size_gib
from ml_cache.resolution import ImageResolution
from ml_cache.settings import BuildSettings


class VolumeBase(TypedDict):
    """Where the builder's data volume starts: `snapshot_id` (incremental) or blank (fresh)."""

    mode: str  # "incremental" | "fresh"
    snapshot_id: str | None
    reason: str
    volume_size_gib: int


class BuildDecision(TypedDict):
    """`decide_build`'s result (its XCom)."""

    up_to_date: bool
    reasons: list[str]
    fingerprint: str
    fingerprint_inputs: dict[str, Any]
    published_snapshot_id: str | None
    base: VolumeBase


def decide(settings: BuildSettings, resolution: ImageResolution, *, builder_sha256: str, published: Published,
           snapshot: Mapping[str, Any] | None, fsr_states: Mapping[str, str]) -> BuildDecision:
    """Up to date when the published fingerprint equals this run's and the published snapshot exists,
    is `completed` and has FSR as configured (and `force_rebuild` is off); else build, from the
    published snapshot when `incremental_base` allows it.

    `snapshot` is DescribeSnapshots' entry for the published id (None: gone), `fsr_states` its FSR
    state per AZ.
    """
    inputs = fingerprint_inputs(
        images=[{"ref": image.ref, "digest": image.digest} for image in resolution.images],
        platform=settings.platform, builder_sha256=builder_sha256,
        volume_size_gib=resolution.volume_size_gib, kms_key_id=settings.aws.kms_key_id)
    metadata = published.metadata_of(published.snapshot_id) if published.snapshot_id else {}
    reasons = differences(metadata.get("fingerprint_inputs"), inputs)
    if not reasons and metadata.get("fingerprint") != fingerprint(inputs):
        reasons = ["the published fingerprint does not match its inputs"]
    reasons += _unusable(settings, published.snapshot_id, snapshot, fsr_states)
    if settings.build.force_rebuild:
        reasons.append("force_rebuild is on")
    up_to_date = not reasons
    if up_to_date:
        reasons = [f"{published.snapshot_id} (run {metadata.get('run_id')}) already holds these "
                   f"{len(inputs['images'])} image(s) at the resolved digests, built by this builder script"]
    return BuildDecision(up_to_date=up_to_date, reasons=reasons, fingerprint=fingerprint(inputs),
                         fingerprint_inputs=dict(inputs), published_snapshot_id=published.snapshot_id,
                         base=incremental_base(settings, resolution, published, snapshot))


def _unusable(settings: BuildSettings, snapshot_id: str | None, snapshot: Mapping[str, Any] | None,
              fsr_states: Mapping[str, str]) -> list[str]:
    """Why the published snapshot cannot serve as is (empty: it can)."""
    if snapshot_id is None:
        return []  # differences() already says there is nothing published
    if snapshot is None:
        return [f"the published snapshot {snapshot_id} no longer exists"]
    if snapshot.get("State") != "completed":
        return [f"the published snapshot {snapshot_id} is {snapshot.get('State')}, not completed"]
    if not settings.build.enable_fast_snapshot_restore:
        return []
    missing = [zone for zone in settings.build.fsr_availability_zones if fsr_states.get(zone) not in BILLED_FSR_STATES]
    if missing:
        return [f"Fast Snapshot Restore of {snapshot_id} is not on in {', '.join(missing)} "
                f"(states: {dict(fsr_states) or 'none'})"]
    return []


def incremental_base(settings: BuildSettings, resolution: ImageResolution, published: Published,
                     snapshot: Mapping[str, Any] | None) -> VolumeBase:
    """The published snapshot as the builder's starting volume, or why the volume starts blank.

    A volume restored from a snapshot and snapshotted again is stored incrementally only with the same
    KMS key (https://docs.aws.amazon.com/ebs/latest/userguide/how_snapshots_work.html); it can grow
    but never be smaller than the snapshot.
    """
    needed = resolution.volume_size_gib

    def fresh(reason: str) -> VolumeBase:
        return VolumeBase(mode="fresh", snapshot_id=None, reason=reason, volume_size_gib=needed)

    snapshot_id = published.snapshot_id
    if not settings.build.incremental:
        return fresh("incremental is off")
    if snapshot_id is None:
        return fresh("nothing is published yet")
    if snapshot is None or snapshot.get("State") != "completed":
        state = "gone" if snapshot is None else snapshot.get("State")
        return fresh(f"the published snapshot {snapshot_id} is {state}")
    platform = published.metadata_of(snapshot_id).get("platform")
    if platform is None:
        return fresh(f"no metadata describes {snapshot_id}: its platform is unknown")
    if platform != settings.platform:
        return fresh(f"the published snapshot {snapshot_id} is for {platform}, this build for {settings.platform}")
    if not snapshot.get("Encrypted"):
        return fresh(f"the published snapshot {snapshot_id} is not encrypted")
    if not same_kms_key(settings.aws.kms_key_id, snapshot.get("KmsKeyId")):
        return fresh(f"the published snapshot {snapshot_id} is encrypted with {snapshot.get('KmsKeyId')}, not "
                     f"{settings.aws.kms_key_id}: a volume re-encrypted from it would snapshot in full")
    size = max(needed, int(snapshot.get("VolumeSize") or 0), peak_gib(resolution, published.metadata_of(snapshot_id)))
    grown = f", grown from {snapshot.get('VolumeSize')} to {size} GiB" if size > int(snapshot["VolumeSize"]) else ""
    return VolumeBase(mode="incremental", snapshot_id=snapshot_id, volume_size_gib=size,
                      reason=f"the data volume starts from the published snapshot {snapshot_id}{grown}")


def peak_gib(resolution: ImageResolution, metadata: Mapping[str, Any]) -> int:
    """The space an incremental build needs at its peak: what the restored volume holds (the previous
    build's `filesystem_used_bytes`) plus the images it does not hold yet, sized like a fresh volume.
    The builder removes an older version of a requested image only after the new one is pulled (their
    shared layers are not fetched again), so both are on the volume for a while."""
    held = {image["digest"] for image in metadata.get("images") or []}
    new = [image for image in resolution.images if image.digest not in held]
    used = int((metadata.get("totals") or {}).get("filesystem_used_bytes") or 0)
    return math.ceil(used / GIB) + (volume_size_gib(new) if new else 0)


def same_kms_key(configured: str | None, snapshot_key: str | None) -> bool:
    """True when a volume from the snapshot keeps its key: none configured (EBS then keeps the
    snapshot's key), the same id or ARN, or the key id of the snapshot's key ARN. An alias cannot be
    compared without KMS: it counts as another key (configure the key's ARN to build incrementally)."""
    if configured is None:
        return True
    if snapshot_key is None:
        return False
    return configured == snapshot_key or snapshot_key.endswith(f":key/{configured}")
