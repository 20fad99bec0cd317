"""Ten weeks of the weekly refresh on the local cloud, weeks passing on its simulated clock: builds,
rollouts onto real local GPU nodes and daily janitor runs, with unchanged, changed, added and removed
images, one failed build, one failed rollout and a crash that leaves a builder behind.

After every week: at most `lifecycle.fsr_max_snapshots` snapshots of the pipeline keep FSR (one once
a rollout validated), the published snapshot exists and is the one the node group runs (validated),
no snapshot that something references was deleted, no builder is left after the janitor, and an
unchanged week launched no instance.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import yaml

from ml_cache.fsr_lifecycle import BILLED_FSR_STATES
from tests.dags.conftest import (
    CLUSTER,
    METADATA_PARAMETER,
    NODEGROUP,
    PARAMETER,
    configure_rollout,
    load_dag,
    needs_data_plane,
    run_dag,
)

WEEK = 7 * 86400
PIPELINE = "ml-container-cache"
LIFECYCLE = {"fsr_max_snapshots": 2, "keep_published_snapshots": 2, "parameter_history_versions": 3}


@dataclass
class Season:
    """The test's handles: the cloud, its DAGs, the node group's launch template, what happened."""

    cloud: object
    template: str
    images: dict[str, str] = field(default_factory=dict)  # name -> tag ref (the tag moves when re-pushed)
    ledger: list[str] = field(default_factory=list)
    first_version: int = 0  # the parameter's version this season started from (earlier ones: other tests')

    def __post_init__(self) -> None:
        self.first_version = max(item["Version"] for item in parameter_history(self.cloud))

    def push(self, name: str, seed: int) -> None:
        """Push demo image `name` (busybox base + one 1 MiB data layer from `seed`) under its tag."""
        from devstack.demo_images import DemoImage, build_layout, push_layout

        image = DemoImage(f"weekly-{name}", data_layers=1, data_layer_mib=1, seed=seed)
        push_layout(build_layout(image, self.cloud.home / "weekly-images"), image, self.cloud.registry)
        self.images[name] = f"{self.cloud.registry}/{image.repository}:{image.tag}"

    def configure(self, names: list[str], **rollout) -> None:
        self.cloud.write_config(images=[self.images[name] for name in names], volume_size_gib=None)
        configure_rollout(self.cloud, self.template)
        config = yaml.safe_load(self.cloud.config_path.read_text())
        config["lifecycle"] = LIFECYCLE
        config["rollout"].update(rollout)
        self.cloud.config_path.write_text(yaml.safe_dump(config))


def instances(cloud, role: str = "builder") -> list[dict]:
    pages = cloud.client("ec2").get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:ml-cache:role", "Values": [role]}])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def fsr_snapshots(cloud) -> set[str]:
    """Our pipeline's snapshots that keep FSR (billed: enabling, optimizing or enabled)."""
    ec2 = cloud.client("ec2")
    ours = {s["SnapshotId"] for s in ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:ml-cache:pipeline", "Values": [PIPELINE]}])["Snapshots"]}
    entries = ec2.describe_fast_snapshot_restores()["FastSnapshotRestores"]
    return {e["SnapshotId"] for e in entries if e["State"] in BILLED_FSR_STATES and e["SnapshotId"] in ours}


def node_group_snapshot(cloud, template: str) -> str | None:
    """The cache snapshot of the launch template version the node group runs (what its nodes restore)."""
    version = cloud.client("eks").describe_nodegroup(
        clusterName=CLUSTER, nodegroupName=NODEGROUP)["nodegroup"]["launchTemplate"]["version"]
    data = cloud.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=template, Versions=[str(version)])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    cache = [m for m in data.get("BlockDeviceMappings", []) if m["DeviceName"] == "/dev/xvdb"]
    return cache[0]["Ebs"].get("SnapshotId") if cache else None


def parameter_history(cloud) -> list[dict]:
    """Every version of the parameter, oldest first (all pages: the suite writes it many times)."""
    pages = cloud.client("ssm").get_paginator("get_parameter_history").paginate(Name=PARAMETER)
    return sorted((item for page in pages for item in page["Parameters"]), key=lambda item: item["Version"])


def referenced(season: Season) -> set[str]:
    """What must never be deleted: the parameter's recent versions and the node group's snapshot (of this
    season: earlier tests' snapshots, published before it, were deleted by their own cleanup)."""
    cloud = season.cloud
    history = parameter_history(cloud)
    recent = {item["Value"] for item in history[-LIFECYCLE["parameter_history_versions"]:]
              if item["Version"] >= season.first_version}
    return {sid for sid in recent | {node_group_snapshot(cloud, season.template)}
            if sid and sid != cloud.previous_snapshot}


def existing(cloud, snapshot_ids: set[str]) -> set[str]:
    found = cloud.client("ec2").describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": sorted(snapshot_ids)}])
    return {s["SnapshotId"] for s in found["Snapshots"]}


def week(season: Season, title: str, *, build: dict | None = None, expect_build: str = "success",
         expect_rollout: str | None = "success", before_janitor: Callable[[], None] | None = None) -> dict:
    """One week: the build's weekly tick, the rollout its event starts, the janitor, then the invariants."""
    cloud = season.cloud
    cloud.advance_clock(WEEK)
    launched_before = len(instances(cloud))
    run, states = run_dag(load_dag("ml_container_cache_build"), **(build or {}))
    assert str(run.state) == expect_build, (title, states)
    up_to_date = states.get("up_to_date") == "success"
    if up_to_date:
        assert len(instances(cloud)) == launched_before, f"{title}: an unchanged week launched an instance"
    elif expect_rollout is not None and expect_build == "success":
        rollout, rollout_states = run_dag(load_dag("ml_container_cache_rollout"))
        assert str(rollout.state) == expect_rollout, (title, rollout_states)
    if before_janitor:
        before_janitor()
    janitor, janitor_states = run_dag(load_dag("ml_container_cache_janitor"))
    assert str(janitor.state) == "success", (title, janitor_states)
    published = cloud.parameter()
    on = fsr_snapshots(cloud)
    assert len(on) <= LIFECYCLE["fsr_max_snapshots"], (title, on)
    assert on <= {published}, f"{title}: FSR left on {on - {published}} besides the live {published}"
    assert existing(cloud, {published}) == {published}, f"{title}: the published snapshot is gone"
    assert node_group_snapshot(cloud, season.template) == published, f"{title}: published is not what nodes run"
    refs = referenced(season)
    assert existing(cloud, refs) == refs, f"{title}: referenced snapshot(s) {refs - existing(cloud, refs)} deleted"
    assert [i["InstanceId"] for i in instances(cloud) if i["State"]["Name"] != "terminated"] == [], title
    outcome = "up to date" if up_to_date else json.loads(cloud.parameter(METADATA_PARAMETER)).get("build", {})
    season.ledger.append(f"{title}: build {run.state}, {outcome}, published {published}, FSR on {sorted(on)}")
    return states


@needs_data_plane
@pytest.mark.slow
def test_ten_weeks_stay_correct_and_cheap(cloud, gpu_node_group):
    season = Season(cloud, gpu_node_group)
    season.push("a", seed=1)
    season.push("b", seed=10)
    season.configure(["a"])

    week(season, "week 1: first build")
    assert json.loads(cloud.parameter(METADATA_PARAMETER))["build"]["mode"] == "fresh"
    states = week(season, "week 2: nothing changed")
    assert states["up_to_date"] == "success" and states["launch_builder"] == "skipped"

    season.configure(["a", "b"])
    week(season, "week 3: image b added")
    built = json.loads(cloud.parameter(METADATA_PARAMETER))
    assert built["build"]["mode"] == "incremental"
    assert built["cost"]["snapshot"]["incremental_bytes"] < built["cost"]["snapshot"]["full_bytes"]

    season.push("a", seed=2)  # the tag moves: one layer changed
    week(season, "week 4: image a changed")
    changed = json.loads(cloud.parameter(METADATA_PARAMETER))
    assert changed["build"]["mode"] == "incremental"
    assert 0 < changed["build"]["bytes_pulled"] < 2 * 1024**2  # a's new layer (+ manifest/config), not b

    def crash() -> None:  # a build that died with its worker: its builder is still running
        from ml_cache.tags import run_tags

        ec2 = cloud.client("ec2")
        subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        ec2.run_instances(
            ImageId=ec2.describe_images()["Images"][0]["ImageId"], InstanceType="c6i.2xlarge", MinCount=1,
            MaxCount=1, SubnetId=subnet, TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": k, "Value": v} for k, v in run_tags(PIPELINE, "scheduled__crashed", role="builder").items()]}])
        cloud.advance_clock(86400)  # the next day's janitor finds it past the build deadline
    week(season, "week 5: nothing changed, a crashed build left a builder", before_janitor=crash)

    season.configure(["a"])
    cloud.set_faults(fsr_unsuccessful_azs=["us-west-2b"])
    week(season, "week 6: image b removed, the build fails at FSR", expect_build="failed")
    cloud.set_faults(fsr_unsuccessful_azs=[])

    season.configure(["a"], max_startup_seconds=0.001)  # every validation pod is "too slow"
    week(season, "week 7: b removed again, the rollout fails validation", expect_rollout="failed")
    restored = json.loads(cloud.parameter(METADATA_PARAMETER))
    assert restored["snapshot_id"] == changed["snapshot_id"] and restored["rolled_back_from"]

    season.configure(["a"])
    week(season, "week 8: b removed, rolled out")
    week(season, "week 9: nothing changed")
    states = week(season, "week 10: nothing changed")
    assert states["up_to_date"] == "success"

    billing = cloud.billing()
    print("\n".join(season.ledger))
    print(json.dumps(billing, indent=1, default=str))
