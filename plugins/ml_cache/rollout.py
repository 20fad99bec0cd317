"""The rollout's steps that are not waits: where the snapshot comes from, prechecks, the new
launch template version, and putting the previous snapshot back."""

from __future__ import annotations

import json
from typing import Any

from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.launch_template import cache_snapshot, version_description, with_cache_snapshot
from ml_cache.settings import SNAPSHOT_ID_RE

NO_CACHE = "none"  # what the parameter holds when no cache exists (Terraform's placeholder)


class RolloutPrecheckFailed(RuntimeError):
    """The node group is not in a state (or shape) the rollout can safely change."""


def _checked_snapshot(snapshot_id: Any, source: str) -> str:
    if not isinstance(snapshot_id, str) or not SNAPSHOT_ID_RE.fullmatch(snapshot_id):
        raise ValueError(f"{source} does not name a snapshot: {snapshot_id!r}")
    return snapshot_id


def snapshot_from_event(extra: dict[str, Any]) -> dict[str, Any]:
    """The `ml_container_cache` event's extra (the build DAG's contract)."""
    return {
        "snapshot_id": _checked_snapshot(extra.get("snapshot_id"), "the ml_container_cache event"),
        "images": list(extra.get("images") or []),
        "image_set": extra.get("image_set"),
        "source": f"asset event of run {extra.get('run_id')}",
    }


def snapshot_from_parameters(parameter: dict[str, Any] | None, metadata: dict[str, Any] | None,
                             requested: str | None = None) -> dict[str, Any]:
    """A manual run: the requested snapshot, else the SSM parameter's; images from the metadata."""
    snapshot_id = requested or (parameter or {}).get("Value")
    _checked_snapshot(snapshot_id, "the snapshot parameter" if not requested else "the snapshot_id param")
    try:
        described = json.loads((metadata or {}).get("Value") or "{}")
    except ValueError:
        described = {}
    images = described.get("images", []) if described.get("snapshot_id") == snapshot_id else []
    if not images:
        raise ValueError(f"No image list known for {snapshot_id}: the metadata parameter describes "
                         f"{described.get('snapshot_id')!r}; run the build DAG or trigger from its event")
    return {
        "snapshot_id": snapshot_id,
        "images": [{"ref": image["ref"], "digest": image["digest"]} for image in images],
        "image_set": described.get("image_set"),
        "source": "requested" if requested else "SSM parameter",
    }


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


def restore_parameter(ssm: CacheSsmHook, settings: dict[str, Any], target: dict[str, Any],
                      current: dict[str, Any]) -> str | None:
    """Point the parameter back at what the nodes ran before, if it names the failed snapshot."""
    parameter = ssm.get_parameter(settings["ssm_parameter"])
    if parameter is None or parameter["Value"] != target["snapshot_id"]:
        return None  # someone published something else meanwhile: leave it
    previous = current.get("previous_snapshot_id") or NO_CACHE
    ssm.put_parameter(settings["ssm_parameter"], previous,
                      description=f"Restored after the rollout of {target['snapshot_id']} failed")
    ssm.put_parameter(settings["ssm_metadata_parameter"],
                      json.dumps({"snapshot_id": previous, "rolled_back_from": target["snapshot_id"]}),
                      description="Metadata of the restored snapshot", tier="Intelligent-Tiering")
    return previous
