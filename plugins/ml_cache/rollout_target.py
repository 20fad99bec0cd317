"""The snapshot a rollout run rolls out: from the build's Asset event, or (manual run) the published state."""

from __future__ import annotations

from typing import TypedDict

from ml_cache.assets import CachedImage, CacheEvent
from ml_cache.published import Published
from ml_cache.settings.fields import SNAPSHOT_ID_RE


class RolloutTarget(TypedDict):
    """The snapshot a run rolls out (XCom `resolve_snapshot`); the ready event is cut from it."""

    snapshot_id: str
    images: list[CachedImage]
    image_set: str | None
    arch: str | None
    source: str


def snapshot_from_event(event: CacheEvent) -> RolloutTarget:
    """The snapshot the build's `ml_container_cache` event names."""
    return RolloutTarget(snapshot_id=event.snapshot_id, images=list(event.images), image_set=event.image_set,
                         arch=event.arch, source=f"asset event of run {event.run_id}")


def snapshot_from_published(published: Published, requested: str | None = None) -> RolloutTarget:
    """A manual run: the requested snapshot, else the published one; images from the metadata."""
    snapshot_id = requested or published.snapshot_id
    if not isinstance(snapshot_id, str) or not SNAPSHOT_ID_RE.fullmatch(snapshot_id):
        source = "the snapshot_id param" if requested else "the snapshot parameter"
        raise ValueError(f"{source} does not name a snapshot: {snapshot_id!r}")
    described = published.metadata_of(snapshot_id)
    images = described.get("images") or []
    if not images:
        raise ValueError(f"No image list known for {snapshot_id}: the metadata parameter describes "
                         f"{published.metadata.get('snapshot_id')!r}; run the build DAG or trigger from its event")
    return RolloutTarget(snapshot_id=snapshot_id,
                         images=[CachedImage(ref=image["ref"], digest=image["digest"]) for image in images],
                         image_set=described.get("image_set"), arch=described.get("arch"),
                         source="requested" if requested else "SSM parameter")
