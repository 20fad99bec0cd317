"""The janitor's actions on the local cloud: deletion after FSR is off, idempotency."""

from __future__ import annotations

import uuid

from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.janitor.actions import apply_plan
from ml_cache.janitor.plan import Action, Plan
from tests.plugins.ml_cache.cloud_snapshots import ZONES, cache_snapshot, fsr_states


def test_a_snapshot_is_deleted_once_its_fsr_is_off_and_a_second_apply_finds_it_gone(cloud_conn):
    cloud_conn.set_faults(fsr_enabling_seconds=0, fsr_optimizing_seconds=0, fsr_disabling_seconds=1)
    snapshot = cache_snapshot(cloud_conn, f"apply-{uuid.uuid4().hex[:8]}")
    plan = Plan(actions=[
        Action(action="disable_fast_snapshot_restore", resource=snapshot, reason="r", monthly_savings_usd=1.0,
               zones=ZONES),
        Action(action="delete_snapshot", resource=snapshot, reason="r", monthly_savings_usd=1.0),
        Action(action="delete_volume", resource="vol-0123456789abcdef0", reason="r", monthly_savings_usd=1.0),
    ], kept=[])
    hooks = {"ec2": CacheEc2Hook(aws_conn_id=cloud_conn.conn_id), "ssm": CacheSsmHook(aws_conn_id=cloud_conn.conn_id)}
    results = apply_plan(plan, **hooks, fsr_timeout_seconds=30, poll_seconds=0.2)
    assert [r["outcome"] for r in results] == ["done", "done", "already gone"]
    assert cloud_conn.client("ec2").describe_snapshots(
        Filters=[{"Name": "snapshot-id", "Values": [snapshot]}])["Snapshots"] == []
    again = apply_plan(Plan(actions=plan.actions[1:], kept=[]), **hooks, fsr_timeout_seconds=1, poll_seconds=0.2)
    assert [r["outcome"] for r in again] == ["already gone", "already gone"]


def test_a_snapshot_whose_fsr_does_not_go_off_in_time_is_left_for_the_next_run(cloud_conn):
    cloud_conn.set_faults(fsr_enabling_seconds=0, fsr_optimizing_seconds=0, fsr_disabling_seconds=60)
    snapshot = cache_snapshot(cloud_conn, f"slow-{uuid.uuid4().hex[:8]}")
    plan = Plan(actions=[
        Action(action="disable_fast_snapshot_restore", resource=snapshot, reason="r", monthly_savings_usd=1.0,
               zones=ZONES),
        Action(action="delete_snapshot", resource=snapshot, reason="r", monthly_savings_usd=1.0)], kept=[])
    results = apply_plan(plan, ec2=CacheEc2Hook(aws_conn_id=cloud_conn.conn_id),
                         ssm=CacheSsmHook(aws_conn_id=cloud_conn.conn_id), fsr_timeout_seconds=0.5, poll_seconds=0.2)
    assert results[1]["outcome"].startswith("skipped: FSR not disabled after 0.5 s")
    assert fsr_states(cloud_conn, snapshot) == dict.fromkeys(ZONES, "disabling")  # still there, FSR going off
