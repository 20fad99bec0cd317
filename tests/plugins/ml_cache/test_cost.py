"""Cost arithmetic: FSR minutes with the one-hour minimum, builder hours, the per-run report and its running total."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from ml_cache.cost import (
    GIB,
    HOURS_PER_MONTH,
    fsr_az_hours,
    instance_hours,
    render_cost,
    run_cost_report,
    up_to_date_cost_report,
)
from ml_cache.settings.models import Prices

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
PRICES = Prices()


def _fsr(zone: str, enabling: datetime, *, disabling: datetime | None = None, disabled: datetime | None = None,
         state: str = "enabled") -> dict:
    entry = {"SnapshotId": "snap-1", "AvailabilityZone": zone, "State": state, "EnablingTime": enabling}
    if disabling:
        entry["DisablingTime"] = disabling
    if disabled:
        entry["DisabledTime"] = disabled
    return entry


def test_fsr_is_billed_per_started_minute() -> None:
    entry = _fsr("a", T0)
    assert fsr_az_hours([entry], now=T0 + timedelta(minutes=90)) == 1.5
    assert fsr_az_hours([entry], now=T0 + timedelta(minutes=90, seconds=1)) == pytest.approx(91 / 60)


def test_fsr_bills_at_least_one_hour_per_enable_even_if_disabled_sooner() -> None:
    short = _fsr("a", T0, disabling=T0 + timedelta(minutes=5), disabled=T0 + timedelta(minutes=6), state="disabled")
    assert fsr_az_hours([short], now=T0 + timedelta(days=3)) == 1.0
    assert fsr_az_hours([_fsr("a", T0)], now=T0 + timedelta(seconds=1)) == 1.0
    assert fsr_az_hours([_fsr("a", T0)], now=T0) == 0.0  # not enabled yet at `now`


def test_fsr_ends_at_disabled_else_disabling_else_now_and_adds_over_zones() -> None:
    now = T0 + timedelta(hours=10)
    entries = [
        _fsr("a", T0, disabling=T0 + timedelta(hours=2), disabled=T0 + timedelta(hours=3), state="disabled"),
        _fsr("b", T0, disabling=T0 + timedelta(hours=4), state="disabling"),
        _fsr("c", T0),
    ]
    assert fsr_az_hours(entries, now=now) == 3 + 4 + 10


def test_fsr_windows_add_up_to_the_whole_enable_with_the_minimum_in_the_first() -> None:
    entry = _fsr("a", T0)
    cuts = [T0 + timedelta(minutes=m) for m in (20, 50, 95, 300)]
    whole = fsr_az_hours([entry], now=cuts[-1])
    parts = [fsr_az_hours([entry], now=cuts[0])] + [
        fsr_az_hours([entry], since=a, now=b) for a, b in pairwise(cuts)]
    assert parts[:3] == [1.0, 0.0, pytest.approx(35 / 60)]  # the first hour is billed at once
    assert sum(parts) == pytest.approx(whole) == 5.0
    assert fsr_az_hours([entry], since=T0 - timedelta(days=1), now=cuts[0]) == 1.0  # window before the enable
    assert fsr_az_hours([entry], since=cuts[1], now=cuts[0]) == 0.0  # an inverted window bills nothing


def _instance(state: str, reason: str = "", launched: datetime = T0) -> dict:
    return {"InstanceId": "i-1", "InstanceType": "c6i.2xlarge", "LaunchTime": launched,
            "State": {"Name": state}, "StateTransitionReason": reason}


def test_instance_hours_run_to_the_termination_time_ec2_writes_in_the_reason() -> None:
    later = T0 + timedelta(days=5)
    assert instance_hours(_instance("terminated", "User initiated (2026-12-07 04:30:00 GMT)"), now=later) == 1.5
    assert instance_hours(_instance("stopped", "User initiated (2026-12-07 03:45:00 UTC)"), now=later) == 0.75
    assert instance_hours(_instance("running"), now=T0 + timedelta(hours=2)) == 2.0


def test_instance_hours_without_a_time_in_the_reason_run_to_now_and_bill_a_minute_at_least() -> None:
    assert instance_hours(_instance("terminated", "Service initiated"), now=T0 + timedelta(hours=3)) == 3.0
    assert instance_hours(_instance("running"), now=T0 + timedelta(seconds=10)) == pytest.approx(60 / 3600)


def _report(now: datetime, previous_cost: dict | None = None, *, instance_type: str = "c6i.2xlarge",
            snapshot_id: str = "snap-2", carried: float = 0.0, accruing: list[str] | None = None) -> dict:
    return run_cost_report(
        PRICES, now=now, instance_id="i-1", instance_type=instance_type, builder_hours=0.5,
        snapshot_id=snapshot_id, parent_snapshot_id="snap-1", full_bytes=40 * GIB, incremental_bytes=2 * GIB,
        fsr_zones=["us-west-2b", "us-west-2a", "us-west-2c"], fsr_az_hours_so_far=3.0, previous_cost=previous_cost,
        carried_fsr_az_hours=carried, fsr_accruing_snapshot_ids=accruing or [snapshot_id],
    )


def test_run_report_prices_builder_snapshot_and_fsr() -> None:
    report = _report(T0)
    assert report["currency"] == "USD"
    assert report["as_of"] == T0.isoformat()
    assert report["builder"] == {"instance_id": "i-1", "instance_type": "c6i.2xlarge", "hours": 0.5, "usd": 0.17}
    assert report["snapshot"] == {"snapshot_id": "snap-2", "parent_snapshot_id": "snap-1",
                                  "full_bytes": 40 * GIB, "incremental_bytes": 2 * GIB,
                                  "usd_per_month": 0.1, "full_usd_per_month": 2.0}
    assert report["fsr"] == {"availability_zones": ["us-west-2a", "us-west-2b", "us-west-2c"], "az_hours_so_far": 3.0,
                             "usd_so_far": 2.25, "usd_per_month": 3 * 0.75 * HOURS_PER_MONTH}
    assert report["run_usd"] == pytest.approx(0.17 + 2.25)
    assert report["unpriced"] == []
    assert report["running_total"] == {
        "since": T0.isoformat(), "runs": 1, "builder_hours": 0.5, "builder_usd": 0.17,
        "unpriced_builder_hours": 0.0, "fsr_az_hours": 3.0, "fsr_usd": 2.25, "snapshot_gib_months": 0.0,
        "snapshot_usd": 0.0, "usd": 2.42, "fsr_accruing_snapshot_ids": ["snap-2"]}


def test_an_instance_type_without_a_price_is_reported_and_left_out_of_the_dollars() -> None:
    report = _report(T0, instance_type="p5.48xlarge")
    assert report["builder"]["usd"] is None
    assert report["unpriced"] == ["builder instance type p5.48xlarge has no price in prices.instance_per_hour"]
    assert report["run_usd"] == 2.25  # FSR only
    assert report["running_total"]["unpriced_builder_hours"] == 0.5
    assert report["running_total"]["builder_usd"] == 0.0
    assert "not priced: builder instance type p5.48xlarge" in render_cost(report)


def test_running_total_adds_runs_the_earlier_snapshots_fsr_and_the_live_snapshots_storage() -> None:
    week = timedelta(days=7)
    first = _report(T0, snapshot_id="snap-1")
    second = _report(T0 + week, first, snapshot_id="snap-2", carried=168.0 * 3, accruing=["snap-2", "snap-1"])
    third = _report(T0 + 2 * week, second, snapshot_id="snap-3", carried=168.0 * 3 + 1.0, accruing=["snap-3"])

    total = third["running_total"]
    week_gib_months = 40 * 168 / HOURS_PER_MONTH  # the live snapshot's full 40 GiB for a week
    assert total["since"] == T0.isoformat()
    assert total["runs"] == 3
    assert total["builder_hours"] == 1.5
    assert total["builder_usd"] == pytest.approx(3 * 0.17)
    assert total["fsr_az_hours"] == pytest.approx(3 * 3.0 + 504.0 + 505.0)
    assert total["fsr_usd"] == pytest.approx(total["fsr_az_hours"] * 0.75, abs=1e-3)
    assert total["snapshot_gib_months"] == pytest.approx(2 * week_gib_months, abs=1e-3)
    assert total["snapshot_usd"] == pytest.approx(2 * week_gib_months * 0.05, abs=1e-3)
    assert total["usd"] == pytest.approx(total["builder_usd"] + total["fsr_usd"] + total["snapshot_usd"], abs=1e-3)
    assert second["running_total"]["fsr_accruing_snapshot_ids"] == ["snap-1", "snap-2"]
    assert total["fsr_accruing_snapshot_ids"] == ["snap-3"]


def test_an_up_to_date_run_costs_nothing_and_says_why() -> None:
    published = {"snapshot_id": "snap-2", "fsr_availability_zones": ["a", "b", "c"], "cost": _report(T0)}
    report = up_to_date_cost_report(PRICES, now=T0 + timedelta(days=7), published_metadata=published)

    assert report["outcome"] == "up to date"
    assert report["run_usd"] == 0.0
    assert report["builder"]["hours"] == 0.0
    assert report["builder"]["note"] == "up to date: no builder launched"
    assert report["snapshot"] is None
    assert report["live"] == {"snapshot_id": "snap-2", "fsr_usd_per_month": 3 * 0.75 * HOURS_PER_MONTH,
                              "storage_usd_per_month": 2.0}
    assert report["running_total"] == published["cost"]["running_total"]
    text = render_cost(report)
    assert "0 instance-hours" in text and "no builder launched" in text and "$0.00" in text


def test_render_is_a_few_markdown_lines_with_the_figures() -> None:
    text = render_cost(_report(T0))
    assert text.splitlines() == [
        "**Cost of this run: $2.42**",
        "- builder c6i.2xlarge: 0.50 h, $0.17",
        "- snapshot snap-2: 2.00 GiB new of 40.00 GiB (parent snap-1), $0.10/month",
        "- FSR in 3 AZs: 3.00 AZ-hours so far ($2.25), $1,642.50/month while enabled",
        f"- running total: $2.42 over 1 build(s) since {T0.isoformat()}",
    ]
