"""What the cache costs, in USD, from the config's price table (`prices:`): the one place that turns
hours and bytes into money, for the build's cost report and the janitor's savings. It also reads the
usage out of AWS descriptions (FSR entries, instances) and assembles the per-run report with the
pipeline's running total; ml_cache.cost_report gathers those descriptions from AWS.

AWS bills EBS snapshot and volume storage per GB-month where a GB is 2^30 bytes, FSR per snapshot
per AZ-hour (per minute, one hour minimum per enable), instances per second of running.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ml_cache.settings.models import Prices

HOURS_PER_MONTH = 730  # AWS's pricing month
GIB = 1024**3


def fsr_monthly(az_count: int, prices: Prices) -> float:
    """A month of Fast Snapshot Restore on one snapshot in `az_count` AZs."""
    return az_count * prices.fsr_per_az_hour * HOURS_PER_MONTH


def fsr_cost(az_hours: float, prices: Prices) -> float:
    return az_hours * prices.fsr_per_az_hour


def snapshot_monthly(stored_bytes: int, prices: Prices) -> float:
    """A month of snapshot storage for `stored_bytes` (a snapshot's own blocks: full or incremental)."""
    return stored_bytes / GIB * prices.snapshot_per_gb_month


def volume_monthly(size_gib: int, prices: Prices) -> float:
    """A month of a gp3 volume of `size_gib` (IOPS/throughput above the free baseline not included)."""
    return size_gib * prices.volume_per_gb_month


def instance_cost(instance_type: str, hours: float, prices: Prices) -> float | None:
    """`hours` of `instance_type`, or None when the price table does not list the type."""
    price = prices.instance_per_hour.get(instance_type)
    return None if price is None else hours * price


# -- usage from AWS descriptions ---------------------------------------------------------------------
FSR_MINIMUM_MINUTES = 60  # "billed per minute, with a 1-hour minimum" (https://aws.amazon.com/ebs/pricing/)
INSTANCE_MINIMUM_SECONDS = 60  # per-second billing, 60 s minimum (https://aws.amazon.com/ec2/pricing/on-demand/)
_STOPPED_STATES = ("shutting-down", "terminated", "stopping", "stopped")
# EC2 writes when the instance was stopped/terminated in StateTransitionReason, "User initiated
# (2026-12-03 10:00:00 GMT)" (moto writes UTC).
_REASON_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")


def fsr_az_hours(entries: Iterable[Mapping[str, Any]], *, now: datetime, since: datetime | None = None) -> float:
    """AZ-hours billed in (`since`, `now`] for DescribeFastSnapshotRestores `entries` (one per snapshot and AZ).

    An enable runs from EnablingTime to DisabledTime (else DisablingTime, else `now`) and bills whole
    minutes, at least 60. Windows add up: the hours of (a, b] plus those of (b, c] are those of (a, c].
    """
    if since is not None and since >= now:
        return 0.0  # an empty window (or clocks that disagree)
    minutes = 0
    for entry in entries:
        start = entry["EnablingTime"]
        end = entry.get("DisabledTime") or entry.get("DisablingTime") or now
        minutes += _fsr_minutes(start, min(end, now))
        if since is not None:
            minutes -= _fsr_minutes(start, min(end, since))
    return minutes / 60


def _fsr_minutes(start: datetime, end: datetime) -> int:
    if end <= start:
        return 0
    return max(FSR_MINIMUM_MINUTES, math.ceil((end - start).total_seconds() / 60))


def instance_hours(instance: Mapping[str, Any], *, now: datetime) -> float:
    """Hours a DescribeInstances entry bills: LaunchTime to its stop/termination time, or to `now`
    while it runs (or when EC2 gives no time: an upper bound). Pending time counts (a small overstatement)."""
    end = now
    if instance["State"]["Name"] in _STOPPED_STATES:
        match = _REASON_TIME.search(instance.get("StateTransitionReason") or "")
        if match:
            end = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    seconds = (end - instance["LaunchTime"]).total_seconds()
    return max(INSTANCE_MINIMUM_SECONDS, seconds) / 3600


# -- the per-run report ------------------------------------------------------------------------------
CURRENCY = "USD"


def run_cost_report(prices: Prices, *, now: datetime, instance_id: str, instance_type: str, builder_hours: float,
                    snapshot_id: str, parent_snapshot_id: str | None, full_bytes: int, incremental_bytes: int,
                    fsr_zones: list[str], fsr_az_hours_so_far: float, previous_cost: Mapping[str, Any] | None,
                    carried_fsr_az_hours: float, fsr_accruing_snapshot_ids: list[str]) -> dict[str, Any]:
    """What this run cost and what the pipeline has cost so far (JSON-able; it goes into the metadata).

    `carried_fsr_az_hours` are the FSR hours the earlier snapshots (`previous_cost`'s accruing ones)
    billed since `previous_cost` was made; `fsr_accruing_snapshot_ids` those still billing FSR now,
    which the next run's report counts from `now` on.
    """
    builder_usd = instance_cost(instance_type, builder_hours, prices)
    fsr_usd = fsr_cost(fsr_az_hours_so_far, prices)
    run_usd = (builder_usd or 0.0) + fsr_usd
    report = {
        "currency": CURRENCY,
        "as_of": now.isoformat(),
        "builder": {"instance_id": instance_id, "instance_type": instance_type, "hours": _r(builder_hours),
                    "usd": None if builder_usd is None else _r(builder_usd)},
        "snapshot": {"snapshot_id": snapshot_id, "parent_snapshot_id": parent_snapshot_id, "full_bytes": full_bytes,
                     "incremental_bytes": incremental_bytes,
                     "usd_per_month": _r(snapshot_monthly(incremental_bytes, prices)),
                     "full_usd_per_month": _r(snapshot_monthly(full_bytes, prices))},
        "fsr": {"availability_zones": sorted(fsr_zones), "az_hours_so_far": _r(fsr_az_hours_so_far),
                "usd_so_far": _r(fsr_usd), "usd_per_month": _r(fsr_monthly(len(fsr_zones), prices))},
        "run_usd": _r(run_usd),
        "unpriced": [] if builder_usd is not None else [
            f"builder instance type {instance_type} has no price in prices.instance_per_hour"],
    }
    report["running_total"] = _running_total(prices, report, previous_cost, now=now,
                                              carried_fsr_az_hours=carried_fsr_az_hours,
                                              fsr_accruing_snapshot_ids=fsr_accruing_snapshot_ids)
    return report


def _running_total(prices: Prices, run: Mapping[str, Any], previous_cost: Mapping[str, Any] | None, *,
                   now: datetime, carried_fsr_az_hours: float, fsr_accruing_snapshot_ids: list[str]) -> dict[str, Any]:
    """The previous total + this run + what the earlier snapshots billed since: their FSR hours and the
    storage of the live snapshot's blocks (its full size: a lower bound, retained older snapshots add theirs)."""
    previous = dict((previous_cost or {}).get("running_total") or {})
    stored_months = 0.0
    if previous_cost and previous_cost.get("as_of"):
        elapsed = now - datetime.fromisoformat(previous_cost["as_of"])
        stored_months = max(0.0, elapsed.total_seconds() / 3600 / HOURS_PER_MONTH)
    gib_months = (previous_cost or {}).get("snapshot", {}).get("full_bytes", 0) / GIB * stored_months
    builder = run["builder"]
    fsr_hours = run["fsr"]["az_hours_so_far"] + carried_fsr_az_hours
    total = {
        "since": previous.get("since") or run["as_of"],
        "runs": previous.get("runs", 0) + 1,
        "builder_hours": previous.get("builder_hours", 0.0) + builder["hours"],
        "builder_usd": previous.get("builder_usd", 0.0) + (builder["usd"] or 0.0),
        "unpriced_builder_hours": previous.get("unpriced_builder_hours", 0.0)
        + (builder["hours"] if builder["usd"] is None else 0),
        "fsr_az_hours": previous.get("fsr_az_hours", 0.0) + fsr_hours,
        "fsr_usd": previous.get("fsr_usd", 0.0) + fsr_cost(fsr_hours, prices),
        "snapshot_gib_months": previous.get("snapshot_gib_months", 0.0) + gib_months,
        "snapshot_usd": previous.get("snapshot_usd", 0.0) + gib_months * prices.snapshot_per_gb_month,
    }
    total = {key: _r(value) if isinstance(value, float) else value for key, value in total.items()}
    total["usd"] = _r(total["builder_usd"] + total["fsr_usd"] + total["snapshot_usd"])
    total["fsr_accruing_snapshot_ids"] = sorted(set(fsr_accruing_snapshot_ids))
    return total


def up_to_date_cost_report(prices: Prices, *, now: datetime, published_metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The cost of a run that found the cache up to date: no builder (0 hours), no snapshot, $0; the live
    snapshot keeps billing its storage and FSR (its monthly rates), counted by the next build's total."""
    live = published_metadata.get("cost") or {}
    zones = published_metadata.get("fsr_availability_zones") or []
    return {
        "currency": CURRENCY,
        "as_of": now.isoformat(),
        "outcome": "up to date",
        "builder": {"instance_id": None, "instance_type": None, "hours": 0.0, "usd": 0.0,
                    "note": "up to date: no builder launched"},
        "snapshot": None,
        "run_usd": 0.0,
        "live": {"snapshot_id": published_metadata.get("snapshot_id"),
                 "fsr_usd_per_month": _r(fsr_monthly(len(zones), prices)),
                 "storage_usd_per_month": (live.get("snapshot") or {}).get("full_usd_per_month")},
        "running_total": live.get("running_total"),
    }


def render_cost(report: Mapping[str, Any]) -> str:
    """A few markdown lines for the task log and the run summary."""
    builder, total = report["builder"], report.get("running_total") or {}
    builder_usd = "no price" if builder["usd"] is None else f"${builder['usd']:.2f}"
    lines = [f"**Cost of this run: ${report['run_usd']:.2f}**"]
    if report.get("outcome") == "up to date":
        live = report["live"]
        lines.append(f"- builder: {builder['note']} (0 instance-hours)")
        lines.append(f"- live snapshot {live['snapshot_id']}: FSR ${live['fsr_usd_per_month']:,.2f}/month")
    else:
        snapshot, fsr = report["snapshot"], report["fsr"]
        lines.append(f"- builder {builder['instance_type']}: {builder['hours']:.2f} h, {builder_usd}")
        lines.append(f"- snapshot {snapshot['snapshot_id']}: {_gib(snapshot['incremental_bytes'])} new of "
                     f"{_gib(snapshot['full_bytes'])} (parent {snapshot['parent_snapshot_id'] or 'none'}), "
                     f"${snapshot['usd_per_month']:.2f}/month")
        lines.append(f"- FSR in {len(fsr['availability_zones'])} AZs: {fsr['az_hours_so_far']:.2f} AZ-hours so far "
                     f"(${fsr['usd_so_far']:.2f}), ${fsr['usd_per_month']:,.2f}/month while enabled")
    if total:
        lines.append(f"- running total: ${total['usd']:,.2f} over {total['runs']} build(s) since {total['since']}")
    lines.extend(f"- not priced: {item}" for item in report.get("unpriced", []))
    return "\n".join(lines)


def _gib(size: int) -> str:
    return f"{size / GIB:.2f} GiB"


def _r(value: float) -> float:
    return round(value, 4)
