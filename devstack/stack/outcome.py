"""What `run` prints about finished runs: phases, the published snapshot, the validation report."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from devstack.stack.layout import Layout
from devstack.stack.provision import aws
from ml_cache.cost import render_cost
from ml_cache.validation.report import is_cold

SNAPSHOT_PARAMETER = "/ml-container-cache/snapshot-id"
METADATA_PARAMETER = "/ml-container-cache/snapshot-metadata"
RETIRED_FSR_STATES = ("disabling", "disabled")


def published_metadata(layout: Layout) -> dict[str, Any]:
    """The published snapshot's metadata (SSM), as the build wrote it."""
    return json.loads(aws(layout, "ssm").get_parameter(Name=METADATA_PARAMETER)["Parameter"]["Value"])


def run_seconds(run: dict[str, Any]) -> float | None:
    """A finished DAG run's duration, from the API's start and end dates."""
    if not (run.get("start_date") and run.get("end_date")):
        return None
    return (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])).total_seconds()


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
    parameter = aws(layout, "ssm").get_parameter(Name=SNAPSHOT_PARAMETER)["Parameter"]
    metadata = published_metadata(layout)
    snapshot_id = parameter["Value"]
    print(f"Snapshot: {snapshot_id}  (SSM {parameter['Name']} version {parameter['Version']})")
    print(f"Image set: {metadata['image_set']}")
    print_images(metadata["images"], resolved)
    restores = aws(layout, "ec2").describe_fast_snapshot_restores(
        Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])
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
    for image, ratio in sorted(report.get("speedups", {}).items()):
        cached = max(r["total_seconds"] for r in report["results"] if r["image"] == image)
        uncached = max(b["total_seconds"] for b in report.get("baselines", [])
                       if b["image"] == image and b["total_seconds"] is not None and is_cold(b))
        print(f"  {image.split('@')[0]}: cached start {cached:.3f} s vs uncached {uncached:.3f} s "
              f"on the same instance type: {ratio:.0f}x faster")


def print_week_baseline(week: int, report: dict[str, Any], before: dict[str, Any] | None) -> None:
    """The uncached baseline of a later week: which node measured it (a fresh one each rollout, not the
    node of the week before, which still held what it had pulled) and how many images it had to pull."""
    baselines = report.get("baselines") or []
    nodes = sorted({b.get("instance_id") or b["node"] for b in baselines})
    earlier = sorted({b.get("instance_id") or b["node"] for b in (before or {}).get("baselines") or []})
    cold = sum(1 for b in baselines if b.get("cache_hit") is False)
    print(f"Week {week} baseline: node {', '.join(nodes) or 'none'} (week {week - 1}'s: "
          f"{', '.join(earlier) or 'none'}), {cold}/{len(baselines)} images pulled")


def print_changed_week(metadata: dict[str, Any], changed: dict[str, int], old_snapshot: str,
                       restores: list[dict[str, Any]]) -> None:
    """A week with one changed image: how the build started (incremental from the old snapshot or
    fresh, and why), bytes pulled versus the changed blobs, the snapshot's own blocks versus its
    full size, FSR on the superseded snapshot (per AZ), and the run's cost."""
    build, snapshot = metadata.get("build") or {}, (metadata.get("cost") or {}).get("snapshot") or {}
    print()
    if build.get("mode") == "incremental":
        print(f"Week 2 build: incremental from {build['base_snapshot_id']} ({build.get('reason')})")
    else:
        print(f"Week 2 build: {build.get('mode') or 'unknown'}, not incremental ({build.get('reason')})")
    wanted, pulled = sum(changed.values()), build.get("bytes_pulled")
    ratio = f"{pulled / wanted:.2f}x" if pulled is not None and wanted else "n/a"
    shown = "unknown" if pulled is None else f"{pulled:,}"
    print(f"Bytes pulled: {shown} vs the changed layers' {wanted:,} ({len(changed)} new blobs incl. manifest "
          f"and config): {ratio}")
    full, incremental = snapshot.get("full_bytes"), snapshot.get("incremental_bytes")
    if full and incremental is not None:
        print(f"Snapshot {metadata['snapshot_id']}: {incremental:,} bytes incremental of {full:,} full "
              f"({incremental / full:.1%})")
    states = {entry["AvailabilityZone"]: entry["State"] for entry in restores}
    retired = bool(states) and all(state in RETIRED_FSR_STATES for state in states.values())
    per_zone = ", ".join(f"{zone} {state}" for zone, state in sorted(states.items())) or "no FSR entry"
    print(f"FSR on the superseded snapshot {old_snapshot}: {'retired' if retired else 'NOT retired'} ({per_zone})")
    if metadata.get("cost"):
        print(render_cost(metadata["cost"]))


def print_unchanged_week(summary: dict[str, Any], launched: list[str], events: int, seconds: float | None) -> None:
    """A week with no change: `up to date` (the up_to_date task's summary), the instances the run
    launched, the Asset events it emitted (none: no rollout), and the seconds it took to decide."""
    print()
    print(f"Week 3 build: {summary['outcome']}: {'; '.join(summary['reasons'])}")
    print(f"Instances launched: {len(launched)}{' ' + ', '.join(launched) if launched else ''}")
    print(f"Asset events: {events}{' (no rollout)' if not events else ''}")
    whole = "" if seconds is None else f" (the whole run: {seconds:.1f} s)"
    print(f"Decided in {summary['decided_in_seconds']} s{whole}")
    if summary.get("cost"):
        print(render_cost(summary["cost"]))
