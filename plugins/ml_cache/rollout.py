"""The rollout's steps that are not waits: where the snapshot comes from, prechecks, and the new
launch template version (putting the previous snapshot back is ml_cache.published.restore_snapshot)."""

from __future__ import annotations

from typing import Any, TypedDict

from ml_cache.assets import CachedImage, CacheEvent
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.launch_template import cache_snapshot, version_description, with_cache_snapshot
from ml_cache.published import Published
from ml_cache.settings import SNAPSHOT_ID_RE


class RolloutPrecheckFailed(RuntimeError):
    """The node group is not in a state (or shape) the rollout can safely change."""


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


def check_node_group(nodegroup: dict[str, Any], settings: dict[str, Any], ec2: CacheEc2Hook) -> dict[str, Any]:
    """ACTIVE, on our launch template; returns its version and the snapshot its nodes have now."""
    name = nodegroup.get("nodegroupName")
    # UPDATING: another update runs; ours waits for it and retries with the same token.
    if nodegroup.get("status") not in ("ACTIVE", "UPDATING"):
        raise RolloutPrecheckFailed(f"Node group {name} is {nodegroup.get('status')}, not ACTIVE or UPDATING "
                                    f"(health: {nodegroup.get('health', {}).get('issues')})")
    template = nodegroup.get("launchTemplate") or {}
    if template.get("id") != settings["launch_template_id"]:
        raise RolloutPrecheckFailed(
            f"Node group {name} was not created from launch template {settings['launch_template_id']} "
            f"(it uses {template or 'no launch template'}): the cache cannot be rolled out to it"
        )
    version = str(template["version"])
    data = ec2.describe_launch_template_version(template["id"], version)["LaunchTemplateData"]
    return {
        "launch_template_version": version,
        "previous_snapshot_id": cache_snapshot(data, settings["cache_device_name"]),
        "desired_size": nodegroup.get("scalingConfig", {}).get("desiredSize"),
    }


def create_cache_version(ec2: CacheEc2Hook, settings: dict[str, Any], target: dict[str, Any], run_id: str) -> str:
    """A new version from the template's default version (Terraform's content: see terraform/README.md,
    "who owns the launch template version") with only the cache snapshot changed.

    Idempotent per run: a retry finds the version this run created by its description.
    """
    template_id = settings["launch_template_id"]
    description = version_description(run_id, target["snapshot_id"])
    existing = ec2.find_launch_template_versions(template_id, description)
    if existing:
        return str(existing[0]["VersionNumber"])
    default = ec2.describe_launch_template_version(template_id, "$Default")
    source, data = str(default["VersionNumber"]), default["LaunchTemplateData"]
    snapshot = ec2.describe_snapshot(target["snapshot_id"])
    if snapshot["State"] != "completed":
        raise RolloutPrecheckFailed(f"Snapshot {target['snapshot_id']} is {snapshot['State']}, not completed")
    new_data = with_cache_snapshot(data, settings["cache_device_name"], target["snapshot_id"],
                                   snapshot.get("VolumeSize"))
    created = ec2.create_launch_template_version(template_id, source, new_data, description)
    return str(created["VersionNumber"])
