"""What a cache snapshot is made of, as one digest: a build whose fingerprint equals the published
one would make the same snapshot, so the weekly run can end as "up to date" instead.

The inputs are everything that changes the snapshot's content or shape: each image as named
(ref) and as resolved (digest), the platform, the builder script as shipped (the SSM document's
sha256: its version changes how images are stored) and the data volume's size and KMS key.
Pure logic, no AWS call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict


class FingerprintInputs(TypedDict):
    images: list[dict[str, str]]  # [{ref, digest}], sorted by ref
    platform: str
    builder_sha256: str
    volume: dict[str, Any]  # {size_gib, kms_key_id}


def fingerprint_inputs(*, images: Iterable[Mapping[str, str]], platform: str, builder_sha256: str,
                       volume_size_gib: int, kms_key_id: str | None) -> FingerprintInputs:
    """The inputs in canonical form (images sorted by ref: the configured order does not matter)."""
    entries = sorted(({"ref": image["ref"], "digest": image["digest"]} for image in images),
                     key=lambda entry: (entry["ref"], entry["digest"]))
    return FingerprintInputs(images=entries, platform=platform, builder_sha256=builder_sha256,
                             volume={"size_gib": volume_size_gib, "kms_key_id": kms_key_id})


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of the inputs."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def differences(published: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """What changed since the published inputs, in words (empty when nothing did)."""
    if not published:
        return ["the published snapshot has no fingerprint (built before fingerprints, restored, or none yet)"]
    changes = []
    before = {image["ref"]: image["digest"] for image in published.get("images", [])}
    after = {image["ref"]: image["digest"] for image in current["images"]}
    changes += [f"added {ref}" for ref in sorted(set(after) - set(before))]
    changes += [f"removed {ref}" for ref in sorted(set(before) - set(after))]
    changes += [f"{ref}: {before[ref][:19]}… -> {after[ref][:19]}…" for ref in sorted(set(before) & set(after))
                if before[ref] != after[ref]]
    if published.get("platform") != current["platform"]:
        changes.append(f"platform {published.get('platform')} -> {current['platform']}")
    if published.get("builder_sha256") != current["builder_sha256"]:
        changes.append("the builder script changed")
    before_volume, after_volume = published.get("volume") or {}, current["volume"]
    if before_volume.get("size_gib") != after_volume["size_gib"]:
        changes.append(f"data volume {before_volume.get('size_gib')} GiB -> {after_volume['size_gib']} GiB")
    if before_volume.get("kms_key_id") != after_volume["kms_key_id"]:
        changes.append(f"KMS key {before_volume.get('kms_key_id') or 'default'} -> "
                       f"{after_volume['kms_key_id'] or 'default'}")
    return changes
