"""What `run` prints about finished runs: phases, the published snapshot, the validation report."""

from __future__ import annotations

import json
from typing import Any

from devstack.stack.layout import Layout
from devstack.stack.provision import aws


def print_phases(run: dict[str, Any], tis: list[dict[str, Any]]) -> None:
    print()
    print(f"{run['dag_id']} run {run['dag_run_id']}: {run['state'].upper()}")
    print("Phases (task: seconds):")
    for ti in sorted(tis, key=lambda t: t.get("start_date") or "9"):
        duration = ti.get("duration")
        shown = f"{duration:8.1f}" if duration is not None else "       -"
        print(f"  {ti['task_id']:<30} {shown}  {ti.get('state')}")
    failed = [ti["task_id"] for ti in tis if ti.get("state") == "failed"]
    if failed:
        print(f"Failed tasks: {failed}")


def print_build_outcome(layout: Layout, run: dict[str, Any], tis: list[dict[str, Any]],
                        resolved: dict[str, Any] | None = None) -> None:
    """Phases, then (on success) the published snapshot, its images with how each was authenticated
    (from `resolved`, the resolve_images XCom), the computed data volume and FSR per AZ."""
    print_phases(run, tis)
    if run["state"] != "success":
        print(f"Logs under {layout.home / 'airflow' / 'logs'}")
        return
    ssm, ec2 = aws(layout, "ssm"), aws(layout, "ec2")
    parameter = ssm.get_parameter(Name="/ml-container-cache/snapshot-id")["Parameter"]
    metadata = json.loads(ssm.get_parameter(Name="/ml-container-cache/snapshot-metadata")["Parameter"]["Value"])
    snapshot_id = parameter["Value"]
    print(f"Snapshot: {snapshot_id}  (SSM {parameter['Name']} version {parameter['Version']})")
    print(f"Image set: {metadata['image_set']}")
    print_images(metadata["images"], resolved)
    restores = ec2.describe_fast_snapshot_restores(Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])
    for entry in sorted(restores["FastSnapshotRestores"], key=lambda e: e["AvailabilityZone"]):
        print(f"  FSR {entry['AvailabilityZone']}: {entry['State']}")


def how_authenticated(value: Any) -> str:
    """`authenticated: <source>` for a credential source (ecr, secretsmanager, ...), else `anonymous`."""
    if value in (None, False, "", "anonymous"):
        return "anonymous"
    return "authenticated" if value is True else f"authenticated: {value}"


def print_images(images: list[dict[str, Any]], resolved: dict[str, Any] | None) -> None:
    """One line per cached image: name, digest, bytes, and how resolve_images authenticated to its registry."""
    entries = (resolved or {}).get("images", [])
    by_digest = {entry.get("digest"): entry for entry in entries}
    by_name = {entry.get("ref", "").split("@")[0]: entry for entry in entries}
    if resolved and resolved.get("volume_size_gib"):
        print(f"Data volume: {resolved['volume_size_gib']} GiB (computed from the resolved image sizes)")
    for image in images:
        name = image["ref"].split("@")[0]
        entry = by_digest.get(image["digest"]) or by_name.get(name)
        auth = how_authenticated(entry.get("authenticated")) if entry else "not resolved"
        print(f"  {name:<72} {image['digest']}  {image.get('bytes') or 0:>12,} bytes  {auth}")


def print_validation(report: dict[str, Any]) -> None:
    """The validate_nodes report (its own Markdown table per node and image), then the cached
    versus uncached start of each image."""
    print()
    print(report["markdown"])
    baselines = {b["image"]: b for b in report.get("baselines", [])}
    for image, ratio in sorted(report.get("speedups", {}).items()):
        cached = max(r["total_seconds"] for r in report["results"] if r["image"] == image)
        uncached = baselines[image]["total_seconds"]
        print(f"  {image.split('@')[0]}: cached start {cached:.3f} s vs uncached {uncached:.3f} s "
              f"on the same instance type: {ratio:.0f}x faster")
