"""The janitor's rules on hand-built inventories: each rule, each "never delete" rule, the clock, savings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ml_cache.hooks.ec2 import clock_from_date
from ml_cache.janitor.inventory import Builder, DocumentVersion, Inventory, Snapshot, Volume
from ml_cache.janitor.plan import build_deadline, plan_cleanup
from ml_cache.settings import JanitorSettings

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def settings(**lifecycle) -> JanitorSettings:
    return JanitorSettings.model_validate({
        "pipeline": "ml-container-cache", "region": "us-west-2",
        "aws": {"instance_profile": "builder"},
        "rollout": {"cluster_name": "c", "node_group_name": "gpu", "launch_template_id": "lt-0123456789abcdef0"},
        "timeouts": {"agent_online_seconds": 900, "build_seconds": 7200, "snapshot_seconds": 3600},
        "lifecycle": lifecycle,
    })


def snapshot(sid: str, *, published_days_ago: float | None = None, age_hours: float = 24 * 30, run: str = "old",
             fsr: dict[str, str] | None = None, size: int = 100) -> Snapshot:
    published = None if published_days_ago is None else NOW - timedelta(days=published_days_ago)
    return Snapshot(snapshot_id=sid, run_id=run, start_time=NOW - timedelta(hours=age_hours), size_gib=size,
                    state="completed", published_at=published, fsr=fsr or {})


def inventory(**fields) -> Inventory:
    return Inventory(now=NOW, clock="aws", **{"run_states": {"old": "success"}, **fields})


def actions(plan, kind: str) -> dict[str, object]:
    return {a.resource: a for a in plan.actions if a.action == kind}


def kept(plan) -> dict[str, str]:
    return {k.resource: k.reason for k in plan.kept}


# -- orphaned builders ------------------------------------------------------------------------------

def builder(iid: str, age: timedelta, run: str | None, instance_type: str = "c6i.2xlarge") -> Builder:
    return Builder(instance_id=iid, instance_type=instance_type, launch_time=NOW - age, run_id=run, volume_gib=40)


def test_deadline_is_the_waits_a_builder_lives_through():
    assert build_deadline(settings()) == timedelta(seconds=900 + 7200 + 3600)


def test_orphaned_builder_is_terminated_with_a_month_of_it_as_savings():
    inv = inventory(builders=[builder("i-orphan", timedelta(hours=4), "crashed")], run_states={"crashed": "failed"})
    plan = plan_cleanup(inv, settings())
    action = actions(plan, "terminate_builder")["i-orphan"]
    assert "run crashed is failed" in action.reason and "past the build deadline of 3.2 h" in action.reason
    assert action.monthly_savings_usd == pytest.approx(0.34 * 730 + 40 * 0.08)


def test_builder_of_a_run_airflow_does_not_know_is_an_orphan():
    inv = inventory(builders=[builder("i-x", timedelta(days=2), "gone"), builder("i-y", timedelta(days=2), None)],
                    run_states={"gone": None})
    plan = plan_cleanup(inv, settings())
    assert "unknown to Airflow" in actions(plan, "terminate_builder")["i-x"].reason
    assert "no run-id tag" in actions(plan, "terminate_builder")["i-y"].reason


def test_builder_of_a_running_run_or_within_the_deadline_is_kept():
    inv = inventory(builders=[builder("i-running", timedelta(days=1), "r"), builder("i-young", timedelta(hours=3),
                                                                                     "f")],
                    run_states={"r": "running", "f": "failed"})
    plan = plan_cleanup(inv, settings())
    assert plan.actions == []
    assert kept(plan)["i-running"] == "run r is running"
    assert "within the build deadline" in kept(plan)["i-young"]


def test_a_safety_cap_limits_the_builders_one_run_terminates_oldest_first():
    """More orphans than builds could leave means wrong tags or a bug: the run ends at most the cap."""
    orphans = [builder(f"i-{hours}", timedelta(hours=hours), "crashed") for hours in (5, 9, 7, 6)]
    plan = plan_cleanup(inventory(builders=orphans, run_states={"crashed": "failed"}),
                        settings(janitor_max_terminations=2))
    assert set(actions(plan, "terminate_builder")) == {"i-9", "i-7"}
    assert "over the safety cap of 2 terminations per run" in kept(plan)["i-6"]
    assert "over the safety cap" in kept(plan)["i-5"]


def test_unlisted_instance_type_is_terminated_with_unknown_savings():
    inv = inventory(builders=[builder("i-x", timedelta(days=1), "old", "p5.48xlarge")])
    plan = plan_cleanup(inv, settings())
    assert actions(plan, "terminate_builder")["i-x"].monthly_savings_usd is None
    assert plan.total_monthly_savings_usd == 0


def test_ages_are_measured_on_the_inventory_clock_not_the_workers():
    """A worker clock a day ahead cannot age a builder: the plan reads only the inventory's `now`,
    which is AWS's Date header when there is one."""
    worker_ahead = NOW + timedelta(days=1)
    now, clock = clock_from_date("Mon, 01 Mar 2027 12:00:00 GMT", worker_ahead)
    assert (now, clock) == (NOW, "aws")
    young = builder("i-young", timedelta(hours=1), "f")
    plan = plan_cleanup(Inventory(now=now, clock=clock, builders=[young], run_states={"f": "failed"}), settings())
    assert plan.actions == []


@pytest.mark.parametrize("header", [None, "", "not a date"])
def test_without_a_date_header_the_worker_clock_is_used(header):
    assert clock_from_date(header, NOW) == (NOW, "worker")


def test_leftover_volume_is_deleted_attached_or_young_or_running_are_kept():
    vol = dict(size_gib=50, state="available", run_id="old")
    inv = inventory(volumes=[Volume(volume_id="vol-left", create_time=NOW - timedelta(days=1), **vol),
                             Volume(volume_id="vol-young", create_time=NOW - timedelta(hours=1), **vol),
                             Volume(volume_id="vol-att", create_time=NOW - timedelta(days=1),
                                    **{**vol, "state": "in-use"}),
                             Volume(volume_id="vol-run", create_time=NOW - timedelta(days=1),
                                    **{**vol, "run_id": "r"})],
                    run_states={"old": "success", "r": "queued"})
    plan = plan_cleanup(inv, settings())
    assert list(actions(plan, "delete_volume")) == ["vol-left"]
    assert actions(plan, "delete_volume")["vol-left"].monthly_savings_usd == pytest.approx(50 * 0.08)
    assert "vol-att" not in kept(plan) and kept(plan)["vol-run"] == "run r is queued"


# -- FSR ----------------------------------------------------------------------------------------------

ON = {"us-west-2a": "enabled", "us-west-2b": "optimizing", "us-west-2c": "disabled"}


def test_fsr_is_disabled_on_snapshots_neither_live_nor_a_rollback_target():
    inv = inventory(snapshots=[snapshot("snap-live", published_days_ago=1, fsr=ON),
                               snapshot("snap-rollback", published_days_ago=8, fsr=ON),
                               snapshot("snap-old", published_days_ago=15, fsr=ON)],
                    live_snapshot="snap-live", rollback_targets={"snap-rollback": "node group gpu runs version 3"})
    plan = plan_cleanup(inv, settings())
    disabled = actions(plan, "disable_fast_snapshot_restore")
    assert list(disabled) == ["snap-old"]
    assert disabled["snap-old"].zones == ["us-west-2a", "us-west-2b"]  # not where it is already off
    assert disabled["snap-old"].monthly_savings_usd == pytest.approx(2 * 0.75 * 730)
    assert any("FSR stays on" in k.reason and "live" in k.reason for k in plan.kept if k.resource == "snap-live")
    assert any("node group gpu runs version 3" in k.reason for k in plan.kept if k.resource == "snap-rollback")


def test_fsr_stays_on_the_snapshot_of_a_build_still_running():
    inv = inventory(snapshots=[snapshot("snap-new", age_hours=1, run="r", fsr={"us-west-2a": "enabling"})],
                    run_states={"r": "running"})
    plan = plan_cleanup(inv, settings())
    assert plan.actions == []


# -- retention -----------------------------------------------------------------------------------------

def test_keeps_the_newest_published_and_deletes_older_ones():
    snaps = [snapshot(f"snap-{week}", published_days_ago=7 * week) for week in range(5)]
    plan = plan_cleanup(inventory(snapshots=snaps), settings(keep_published_snapshots=3))
    deleted = actions(plan, "delete_snapshot")
    assert sorted(deleted) == ["snap-3", "snap-4"]
    assert "beyond the 3 newest published snapshots" in deleted["snap-3"].reason
    assert deleted["snap-3"].monthly_savings_usd == pytest.approx(100 * 0.05)
    assert kept(plan)["snap-0"] == "within the retention"


def test_unpublished_snapshots_are_deleted_once_old_enough():
    snaps = [snapshot("snap-failed", age_hours=30), snapshot("snap-fresh", age_hours=2)]
    plan = plan_cleanup(inventory(snapshots=snaps), settings(unpublished_snapshot_hours=24))
    assert list(actions(plan, "delete_snapshot")) == ["snap-failed"]
    assert "never published, 30.0 h old" in actions(plan, "delete_snapshot")["snap-failed"].reason


@pytest.mark.parametrize("reason", ["the SSM parameter /x holds it", "version 7 of /x (recent history)",
                                    "node group gpu runs launch template version 2",
                                    "node group gpu is being updated to launch template version 5",
                                    "$Default version of launch template lt-1",
                                    "$Latest version of launch template lt-1"])
def test_a_referenced_snapshot_is_never_deleted(reason):
    snaps = [snapshot("snap-new", published_days_ago=0), snapshot("snap-ref", published_days_ago=30),
             snapshot("snap-unpub", age_hours=100)]
    inv = inventory(snapshots=snaps, references={"snap-ref": [reason], "snap-unpub": [reason]})
    plan = plan_cleanup(inv, settings(keep_published_snapshots=1))
    assert actions(plan, "delete_snapshot") == {}
    assert kept(plan)["snap-ref"].endswith(f"but referenced: {reason}")
    assert reason in kept(plan)["snap-unpub"]


def test_an_old_snapshot_of_a_build_still_running_is_not_deleted():
    inv = inventory(snapshots=[snapshot("snap-slow", age_hours=48, run="r")], run_states={"r": "running"})
    plan = plan_cleanup(inv, settings())
    assert plan.actions == [] and "its build is not finished (run r is running)" in kept(plan)["snap-slow"]


def test_fsr_is_disabled_first_then_the_snapshot_deleted_in_the_same_run():
    inv = inventory(snapshots=[snapshot("snap-new", published_days_ago=0),
                               snapshot("snap-old", published_days_ago=30, fsr=ON)])
    plan = plan_cleanup(inv, settings(keep_published_snapshots=1))
    order = [(a.action, a.resource) for a in plan.actions]
    assert order == [("disable_fast_snapshot_restore", "snap-old"), ("delete_snapshot", "snap-old")]
    assert plan.actions[1].reason.endswith("(once its FSR is disabled)")


def test_a_snapshot_whose_fsr_stays_on_is_never_deleted():
    """Defence in depth: the live snapshot keeps FSR; were it ever outside the references, it still stays."""
    inv = inventory(snapshots=[snapshot("snap-new", published_days_ago=0),
                               snapshot("snap-live", published_days_ago=30, fsr=ON)], live_snapshot="snap-live")
    plan = plan_cleanup(inv, settings(keep_published_snapshots=1))
    assert plan.actions == []
    assert "FSR is still on and not disabled by this run" in kept(plan)["snap-live"]


def test_fsr_already_disabling_does_not_block_deletion():
    inv = inventory(snapshots=[snapshot("snap-new", published_days_ago=0),
                               snapshot("snap-old", published_days_ago=30, fsr={"us-west-2a": "disabling"})])
    plan = plan_cleanup(inv, settings(keep_published_snapshots=1))
    assert [(a.action, a.resource) for a in plan.actions] == [("delete_snapshot", "snap-old")]


# -- SSM document versions -----------------------------------------------------------------------------

def test_document_keeps_the_default_and_the_newest_versions():
    versions = [DocumentVersion(version=str(v), is_default=v == 2) for v in range(1, 9)]
    plan = plan_cleanup(inventory(document="doc", document_versions=versions), settings(keep_document_versions=3))
    assert sorted(actions(plan, "delete_document_version")) == ["doc:1", "doc:3", "doc:4", "doc:5"]
    assert kept(plan)["doc:2"] == "the default version"
    assert kept(plan)["doc:8"] == "one of the 3 newest versions"
    assert all(a.monthly_savings_usd == 0 for a in plan.actions)


def test_total_savings_add_up_every_action():
    inv = inventory(builders=[builder("i-x", timedelta(days=1), "old")],
                    snapshots=[snapshot("snap-new", published_days_ago=0),
                               snapshot("snap-old", published_days_ago=30, fsr={"us-west-2a": "enabled"})])
    plan = plan_cleanup(inv, settings(keep_published_snapshots=1))
    expected = 0.34 * 730 + 40 * 0.08 + 0.75 * 730 + 100 * 0.05
    assert plan.total_monthly_savings_usd == pytest.approx(expected, abs=0.01)
