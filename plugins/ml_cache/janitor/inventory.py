"""What the pipeline has in AWS and what still references its snapshots (read-only).

The janitor decides from this picture alone (plan.py), so every rule is unit-tested on
hand-built inventories and a retry re-plans from a fresh one. Ages are measured on AWS's clock
(the `Date` header of an EC2 answer): a worker whose clock runs ahead cannot make a builder look old.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ml_cache.hooks.ec2 import CacheEc2Hook, clock_from_date
from ml_cache.hooks.eks import CacheEksHook
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.launch_template import LaunchTemplateError, cache_snapshot
from ml_cache.settings import JanitorSettings
from ml_cache.tags import PIPELINE_TAG, RUN_ID_TAG

ROLE_TAG = "ml-cache:role"
PUBLISHED_TAG = "ml-cache:published"  # set at publish: a snapshot without it was never published
BUILD_DAG_ID = "ml_container_cache_build"


class Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class Builder(Record):
    instance_id: str
    instance_type: str
    launch_time: datetime
    run_id: str | None
    volume_gib: int = 0  # its attached volumes (they go with it: DeleteOnTermination)


class Volume(Record):
    volume_id: str
    size_gib: int
    create_time: datetime
    state: str
    run_id: str | None


class Snapshot(Record):
    snapshot_id: str
    run_id: str | None
    start_time: datetime
    size_gib: int
    state: str
    published_at: datetime | None
    fsr: dict[str, str] = {}  # AZ -> FSR state (enabling, optimizing, enabled, disabling, disabled)


class DocumentVersion(Record):
    version: str
    is_default: bool


class Inventory(Record):
    now: datetime
    clock: Literal["aws", "worker"]
    builders: list[Builder] = []
    volumes: list[Volume] = []
    snapshots: list[Snapshot] = []
    run_states: dict[str, str | None] = {}  # build run id -> its state, None: no such run
    live_snapshot: str | None = None  # the SSM parameter's value now
    rollback_targets: dict[str, str] = {}  # snapshot -> what makes it one (the node group runs it, an update)
    references: dict[str, list[str]] = {}  # snapshot -> every reason it must never be deleted
    document: str = ""
    document_versions: list[DocumentVersion] = []


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


def _published_at(tags: dict[str, str]) -> datetime | None:
    value = tags.get(PUBLISHED_TAG)
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def builders(ec2: CacheEc2Hook, pipeline: str, pipeline_volumes: list[dict[str, Any]]) -> list[Builder]:
    """Our builders that are not terminated (only builders carry role=builder)."""
    sizes = {volume["VolumeId"]: volume["Size"] for volume in pipeline_volumes}
    found = []
    for instance in ec2.find_instances({PIPELINE_TAG: pipeline, ROLE_TAG: "builder"}):
        attached = [m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m]
        found.append(Builder(instance_id=instance["InstanceId"], instance_type=instance["InstanceType"],
                             launch_time=instance["LaunchTime"], run_id=_tags(instance).get(RUN_ID_TAG),
                             volume_gib=sum(sizes.get(volume_id, 0) for volume_id in attached)))
    return found


def volumes(pipeline_volumes: list[dict[str, Any]]) -> list[Volume]:
    return [Volume(volume_id=v["VolumeId"], size_gib=v["Size"], create_time=v["CreateTime"], state=v["State"],
                   run_id=_tags(v).get(RUN_ID_TAG)) for v in pipeline_volumes]


def snapshots(ec2: CacheEc2Hook, pipeline: str) -> list[Snapshot]:
    """The pipeline's cache snapshots with their FSR state in every AZ that has an entry."""
    found = ec2.find_snapshots({PIPELINE_TAG: pipeline, ROLE_TAG: "cache"})
    fsr: dict[str, dict[str, str]] = {}
    for entry in ec2.find_fast_snapshot_restores([s["SnapshotId"] for s in found]):
        fsr.setdefault(entry["SnapshotId"], {})[entry["AvailabilityZone"]] = entry["State"]
    return [Snapshot(snapshot_id=s["SnapshotId"], run_id=_tags(s).get(RUN_ID_TAG), start_time=s["StartTime"],
                     size_gib=s["VolumeSize"], state=s["State"], published_at=_published_at(_tags(s)),
                     fsr=fsr.get(s["SnapshotId"], {})) for s in found]


def _template_snapshot(ec2: CacheEc2Hook, settings: JanitorSettings, version: str) -> str | None:
    data = ec2.describe_launch_template_version(settings.rollout.launch_template_id, version)["LaunchTemplateData"]
    try:
        return cache_snapshot(data, settings.rollout.cache_device_name)
    except LaunchTemplateError:
        return None  # a version without the cache volume references no snapshot


def _in_progress_versions(eks: CacheEksHook, cluster: str, nodegroup: str) -> list[str]:
    """Launch template versions of the node group's updates still InProgress (a rollout or a rollback)."""
    versions = []
    paginator = eks.conn.get_paginator("list_updates")
    for page in paginator.paginate(name=cluster, nodegroupName=nodegroup):
        for update_id in page["updateIds"]:
            update = eks.describe_update(cluster, nodegroup, update_id)
            if update["status"] == "InProgress":
                params = {p["type"]: p["value"] for p in update.get("params", [])}
                if params.get("LaunchTemplateVersion"):
                    versions.append(params["LaunchTemplateVersion"])
    return versions


def node_group_versions(eks: CacheEksHook, settings: JanitorSettings) -> dict[str, str]:
    """Launch template version -> why it is in use: what each node group of the cluster on our template
    runs now, and the target of any update in progress. Fails when the configured node group is not on
    our template: then nobody can tell which snapshots its nodes use."""
    rollout = settings.rollout
    in_use: dict[str, str] = {}
    on_template = set()
    for name in eks.list_nodegroups(clusterName=rollout.cluster_name):
        nodegroup = eks.describe_nodegroup(clusterName=rollout.cluster_name, nodegroupName=name)["nodegroup"]
        template = nodegroup.get("launchTemplate") or {}
        if template.get("id") != rollout.launch_template_id:
            continue
        on_template.add(name)
        version = str(template["version"])
        in_use.setdefault(version, f"node group {name} runs launch template version {version}")
        for target in _in_progress_versions(eks, rollout.cluster_name, name):
            in_use.setdefault(target, f"node group {name} is being updated to launch template version {target}")
    if rollout.node_group_name not in on_template:
        raise RuntimeError(f"node group {rollout.node_group_name} of cluster {rollout.cluster_name} does not run "
                           f"launch template {rollout.launch_template_id}: the janitor cannot tell which snapshots "
                           f"its nodes use, so it deletes nothing")
    return in_use


def take_inventory(settings: JanitorSettings, run_state: Callable[[str], str | None], *, ec2: CacheEc2Hook,
                   ssm: CacheSsmHook, eks: CacheEksHook, worker_now: datetime) -> Inventory:
    """The whole picture, read-only. `run_state(run_id)` is the build run's state (None: no such run)."""
    now, clock = clock_from_date(ec2.server_date(), worker_now)
    pipeline = settings.pipeline
    pipeline_volumes = ec2.find_volumes({PIPELINE_TAG: pipeline})
    found_builders, found_volumes = builders(ec2, pipeline, pipeline_volumes), volumes(pipeline_volumes)
    found_snapshots = snapshots(ec2, pipeline)
    references: dict[str, list[str]] = {}

    def refer(snapshot: str | None, reason: str) -> None:
        if snapshot and reason not in references.setdefault(snapshot, []):
            references[snapshot].append(reason)

    parameter = settings.aws.ssm_parameter
    current = ssm.get_parameter(parameter)
    live = current["Value"] if current else None
    refer(live, f"the SSM parameter {parameter} holds it")
    history = sorted(ssm.get_parameter_history(parameter), key=lambda item: item["Version"])
    for item in history[-settings.lifecycle.parameter_history_versions:]:
        refer(item["Value"], f"version {item['Version']} of {parameter} (recent history)")
    rollback: dict[str, str] = {}
    template = settings.rollout.launch_template_id
    for version, why in node_group_versions(eks, settings).items():
        snapshot = _template_snapshot(ec2, settings, version)
        refer(snapshot, why)
        if snapshot:
            rollback.setdefault(snapshot, why)
    for alias in ("$Default", "$Latest"):
        refer(_template_snapshot(ec2, settings, alias), f"{alias} version of launch template {template}")
    run_ids = {r.run_id for r in [*found_builders, *found_volumes, *found_snapshots] if r.run_id}
    document = settings.aws.ssm_document
    versions = [DocumentVersion(version=v["DocumentVersion"], is_default=v["IsDefaultVersion"])
                for v in ssm.list_document_versions(document)]
    return Inventory(now=now, clock=clock, builders=found_builders, volumes=found_volumes,
                     snapshots=found_snapshots, run_states={run_id: run_state(run_id) for run_id in sorted(run_ids)},
                     live_snapshot=live, rollback_targets=rollback, references=references, document=document,
                     document_versions=versions)
