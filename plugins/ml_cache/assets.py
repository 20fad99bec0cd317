"""The Assets the pipeline publishes and their event contracts, writer and reader side by side.

`ml_container_cache`: one event per published snapshot (build -> rollout).
`ml_container_cache_ready`: one event per rollout that passed validation (rollout -> data teams).
Each writer is the only place that shapes an event's `extra` (JSON, what Airflow stores); each
reader is the only place that checks it, so a broken event fails its consumer with a clear message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from airflow.sdk import Asset

from ml_cache.images import is_sha256_digest, parse_reference
from ml_cache.settings.fields import SNAPSHOT_ID_RE

ML_CONTAINER_CACHE = Asset("ml_container_cache")
ML_CONTAINER_CACHE_READY = Asset("ml_container_cache_ready")


class AssetEventError(ValueError):
    """An Asset event does not follow its contract, or the image a job asks for is not in it."""


class CachedImage(TypedDict):
    """One cached image: its reference as built and the digest the cache holds."""

    ref: str
    digest: str


@dataclass(frozen=True, kw_only=True)
class SnapshotEvent:
    """What both events say about the snapshot."""

    snapshot_id: str
    image_set: str | None
    images: tuple[CachedImage, ...]
    arch: str | None
    run_id: str | None


@dataclass(frozen=True, kw_only=True)
class CacheEvent(SnapshotEvent):
    """An `ml_container_cache` event: a published snapshot."""

    fsr_availability_zones: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ReadyEvent(SnapshotEvent):
    """An `ml_container_cache_ready` event: a snapshot on every GPU node, proven by validation."""

    validation: Mapping[str, Any] | None


# --------------------------------------------------------------------------- ml_container_cache


def cache_event_extra(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The build's event, from the metadata it publishes (ml_cache.published.snapshot_metadata)."""
    return {
        "snapshot_id": metadata["snapshot_id"],
        "image_set": metadata["image_set"],
        "images": _image_entries(metadata["images"]),
        "arch": metadata["arch"],
        "fsr_availability_zones": list(metadata["fsr_availability_zones"]),
        "run_id": metadata["run_id"],
        "fingerprint": metadata.get("fingerprint"),
        "build": metadata.get("build"),
        "cost": metadata.get("cost"),
    }


def read_cache_event(extra: Mapping[str, Any] | None) -> CacheEvent:
    """Check a build's event (the rollout reads it) and return its fields."""
    extra = _non_empty(extra)
    return CacheEvent(
        snapshot_id=_snapshot_id(extra),
        image_set=extra.get("image_set"),
        images=_images(extra),
        arch=extra.get("arch"),
        fsr_availability_zones=tuple(extra.get("fsr_availability_zones") or ()),
        run_id=extra.get("run_id"),
    )


# --------------------------------------------------------------------------- ml_container_cache_ready


def ready_event_extra(target: Mapping[str, Any], report: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """The rollout's event: the snapshot it rolled out (`target`, with `arch`), the validation report
    (ValidationReport.to_dict() plus `markdown`) and the rollout's run id."""
    return {
        "snapshot_id": target["snapshot_id"],
        "image_set": target["image_set"],
        "images": _image_entries(target["images"]),
        "arch": target["arch"],
        "validation": dict(report),
        "run_id": run_id,
    }


def read_ready_event(extra: Mapping[str, Any] | None) -> ReadyEvent:
    """Check a rollout's event and return its fields.

    A data-team DAG calls this first, so a malformed event fails its run with a clear message.
    """
    extra = _non_empty(extra)
    snapshot_id, images = _snapshot_id(extra), _images(extra)
    validation = extra.get("validation")
    if isinstance(validation, Mapping) and validation.get("passed") is False:
        raise AssetEventError("asset event says validation failed: it should never have been published")
    return ReadyEvent(snapshot_id=snapshot_id, image_set=extra.get("image_set"), images=images,
                      arch=extra.get("arch"), validation=validation, run_id=extra.get("run_id"))


# --------------------------------------------------------------------------- both


def latest_event(asset: Asset, *, triggering_asset_events: Mapping[Any, Sequence[Any]] | None = None,
                 inlet_events: Mapping[Any, Sequence[Any]] | None = None) -> Any | None:
    """The event (it has `.extra`) that triggered the run on `asset`, else the asset's newest event
    from `inlet_events` (the task must declare the asset as inlet), else None."""
    triggered = list((triggering_asset_events or {}).get(asset) or [])
    if triggered:
        return triggered[-1]
    history = inlet_events[asset] if inlet_events is not None else []
    return history[-1] if len(history) else None


def pick_image(images: Sequence[Mapping[str, str]], name: str) -> str:
    """The cached image a job needs, pinned by digest (`registry/repo@sha256:...`).

    `name` matches the repository: in full (`nvcr.io/nvidia/pytorch`), or by its last path
    components (`nvidia/pytorch`, `pytorch`). Exactly one image must match, so a job never
    silently runs another image than it asked for.
    """
    wanted = name.strip().strip("/")
    matches = []
    for entry in images:
        repository = _repository(entry["ref"])
        if repository == wanted or repository.endswith("/" + wanted):
            matches.append(entry)
    if len(matches) != 1:
        known = ", ".join(_repository(entry["ref"]) for entry in images) or "none"
        what = "no cached image" if not matches else f"{len(matches)} cached images"
        raise AssetEventError(f"{what} named {name!r} in the cache (cached: {known})")
    entry = matches[0]
    return f"{_repository(entry['ref'])}@{entry['digest']}"


def _repository(ref: str) -> str:
    """registry/repository of a ref, without tag or digest (parsed by images.py)."""
    return parse_reference(ref).name


def _image_entries(images: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [{"ref": image["ref"], "digest": image["digest"]} for image in images]


def _non_empty(extra: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not isinstance(extra, Mapping) or not extra:
        raise AssetEventError("the asset event has no extra: expected snapshot_id, images, ...")
    return extra


def _snapshot_id(extra: Mapping[str, Any]) -> str:
    snapshot_id = extra.get("snapshot_id")
    if not isinstance(snapshot_id, str) or not SNAPSHOT_ID_RE.fullmatch(snapshot_id):
        raise AssetEventError(f"asset event snapshot_id {snapshot_id!r} is not a snap-… id")
    return snapshot_id


def _images(extra: Mapping[str, Any]) -> tuple[CachedImage, ...]:
    images = extra.get("images")
    if not isinstance(images, list) or not images:
        raise AssetEventError("asset event carries no images")
    for entry in images:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("ref"), str) or not entry.get("ref"):
            raise AssetEventError(f"asset event image entry {entry!r} has no ref")
        if not is_sha256_digest(entry.get("digest")):
            raise AssetEventError(f"asset event image {entry['ref']!r} has no sha256 digest: {entry.get('digest')!r}")
    return tuple(CachedImage(ref=entry["ref"], digest=entry["digest"]) for entry in images)
