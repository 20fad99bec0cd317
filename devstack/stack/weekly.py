"""`run`'s next two weekly ticks after the first build and rollout: a week later one image's tag moved
(the ECR tools image re-pushed with one layer changed; the DAG config is unchanged), then a week
with no change. The local cloud's clock moves 7 days before each, so FSR and storage bill a week.
"""

from __future__ import annotations

from typing import Any

import requests

from devstack.demo_images import ECR_DEMO_IMAGE_NEXT_WEEK, OCI_INDEX, OCI_MANIFEST, build_layout, push_layout
from devstack.stack.airflow_standalone import BUILD_DAG_ID
from devstack.stack.dag_runs import ROLLOUT_DAG_ID, asset_events, rollout_run_id, rollout_runs, trigger, watch, xcom
from devstack.stack.layout import Layout, say
from devstack.stack.outcome import (
    print_changed_week,
    print_phases,
    print_unchanged_week,
    print_week_baseline,
    published_metadata,
    run_seconds,
)
from devstack.stack.private_registries import ECR_REPOSITORY
from devstack.stack.provision import aws
from ml_cache.tags import RUN_ID_TAG

WEEK_SECONDS = 7 * 24 * 3600
# an index too, so that one is refused with the reason rather than a registry's 404
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, "application/vnd.docker.distribution.manifest.v2+json",
                             "application/vnd.docker.distribution.manifest.list.v2+json"])


def advance_clock(layout: Layout, seconds: int) -> str:
    """Move the local cloud's simulated clock forward; its new `now`."""
    answer = requests.post(f"{layout.endpoint}/_devstack/clock", json={"advance_seconds": seconds}, timeout=30)
    answer.raise_for_status()
    return answer.json()["now"]


def manifest(registry: str, repository: str, reference: str) -> tuple[dict[str, Any], int]:
    """An image manifest and its size in bytes, read through the registry API (plain HTTP on loopback)."""
    answer = requests.get(f"http://{registry}/v2/{repository}/manifests/{reference}",
                          headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
    answer.raise_for_status()
    document = answer.json()
    if document.get("mediaType") == OCI_INDEX or "manifests" in document:
        raise ValueError(f"{repository}@{reference} is an image index, not an image manifest")
    return document, len(answer.content)


def new_blobs(registry: str, repository: str, old: str, new: str) -> dict[str, int]:
    """Digest -> size of what a puller holding manifest `old` fetches for manifest `new`: the new
    manifest itself, and its config and layers that `old` did not reference."""
    old_document, _ = manifest(registry, repository, old)
    new_document, new_size = manifest(registry, repository, new)
    held = {descriptor["digest"] for descriptor in [old_document["config"], *old_document["layers"]]}
    blobs = {new: new_size}
    blobs.update({descriptor["digest"]: descriptor["size"] for descriptor in
                  [new_document["config"], *new_document["layers"]] if descriptor["digest"] not in held})
    return blobs


def instance_ids(layout: Layout, filters: list[dict[str, Any]] | None = None) -> set[str]:
    """Every instance the local cloud's EC2 describes (any state), or those matching `filters`."""
    pages = aws(layout, "ec2").get_paginator("describe_instances").paginate(Filters=filters or [])
    return {instance["InstanceId"] for page in pages for reservation in page["Reservations"]
            for instance in reservation["Instances"]}


def changed_image_week(layout: Layout, refs: dict[str, str]) -> bool:
    """Week 2: the tools image's tag moves to a version with one changed layer; the build is
    incremental and its rollout retires FSR on the superseded snapshot. True when both succeeded."""
    print()
    say(f"week 2: the local cloud's clock +7 days (now {advance_clock(layout, WEEK_SECONDS)}); "
        f"{ECR_REPOSITORY}:{ECR_DEMO_IMAGE_NEXT_WEEK.tag} re-pushed with one layer changed")
    old_snapshot = published_metadata(layout)["snapshot_id"]
    old_digest = refs["ecr"].rpartition("@")[2]
    image = ECR_DEMO_IMAGE_NEXT_WEEK
    new_digest = push_layout(build_layout(image, layout.home / "cache"), image, layout.private_backend, ECR_REPOSITORY)
    changed = new_blobs(layout.private_backend, ECR_REPOSITORY, old_digest, new_digest)
    earlier_rollouts = rollout_runs(layout)
    build_id = trigger(layout, BUILD_DAG_ID)
    build, tis = watch(layout, BUILD_DAG_ID, build_id)
    print_phases(build, tis)
    if build["state"] != "success":
        return False
    metadata = published_metadata(layout)
    rollout_id = rollout_run_id(layout, earlier=earlier_rollouts)
    rollout, tis = watch(layout, ROLLOUT_DAG_ID, rollout_id)
    print_phases(rollout, tis)
    restores = aws(layout, "ec2").describe_fast_snapshot_restores(
        Filters=[{"Name": "snapshot-id", "Values": [old_snapshot]}])["FastSnapshotRestores"]
    print_changed_week(metadata, changed, old_snapshot, restores)
    if rollout["state"] != "success":
        return False
    before = max(earlier_rollouts, default=None)  # week 1's: run ids of one kind sort by their time
    print_week_baseline(2, xcom(layout, ROLLOUT_DAG_ID, rollout_id, "validate_nodes"),
                        xcom(layout, ROLLOUT_DAG_ID, before, "validate_nodes") if before else None)
    return True


def unchanged_week(layout: Layout) -> bool:
    """Week 3: nothing changed; the build decides `up to date` and launches nothing. True when it did."""
    print()
    say(f"week 3: the local cloud's clock +7 days (now {advance_clock(layout, WEEK_SECONDS)}); no image changed")
    before = instance_ids(layout)
    build_id = trigger(layout, BUILD_DAG_ID)
    build, tis = watch(layout, BUILD_DAG_ID, build_id)
    launched = (instance_ids(layout) - before) | instance_ids(layout, [{"Name": f"tag:{RUN_ID_TAG}",
                                                                          "Values": [build_id]}])
    print_phases(build, tis)
    up_to_date = next((ti for ti in tis if ti["task_id"] == "up_to_date"), {})
    if build["state"] != "success" or up_to_date.get("state") != "success":
        print(f"week 3 did not end at up_to_date (instances launched: {len(launched)})")
        return False
    summary = xcom(layout, BUILD_DAG_ID, build_id, "up_to_date")
    print_unchanged_week(summary, sorted(launched), len(asset_events(layout, BUILD_DAG_ID, build_id)),
                         run_seconds(build))
    return not launched
