"""The page's janitor history from the janitor's real report (ml_cache.janitor.report.cleanup_report, as
JSON like its XCom): applied and dry runs with their actions and savings, a failed run's cause, none yet,
a year of weekly runs."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from ml_cache.janitor.inventory import Inventory
from ml_cache.janitor.plan import Action, Kept, Plan
from ml_cache.janitor.report import WOULD_DO, cleanup_report
from ml_cache.ui.render import HISTORY_SHOWN, render_page
from ml_cache.ui.view_model import Run, build_page

FIRST = datetime(2027, 1, 4, 5, tzinfo=UTC)
PLAN = Plan(actions=[Action(action="disable_fast_snapshot_restore", resource="snap-old", reason="superseded",
                            monthly_savings_usd=1095.0, zones=["us-west-2a"]),
                     Action(action="terminate_builder", resource="i-orphan", reason="orphaned builder",
                            monthly_savings_usd=None)],
            kept=[Kept(resource="snap-live", reason="the published snapshot")])


def _report(when: datetime, *, dry_run: bool) -> dict:
    """The janitor's report as its XCom holds it (JSON)."""
    results = None if dry_run else [{**action.model_dump(mode="json"), "outcome": "done"} for action in PLAN.actions]
    return json.loads(json.dumps(cleanup_report(Inventory(now=when, clock="aws"), PLAN, results, dry_run=dry_run)))


def _run(run_id: str, when: datetime, state: str = "success", **kwargs) -> Run:
    return Run(run_id=run_id, state=state, start=when, end=when + timedelta(minutes=2), **kwargs)


def _page(runs):
    return build_page(now=FIRST + timedelta(weeks=52), cache_events=[], ready_events=[], janitor_runs=runs)


def test_applied_and_dry_runs_show_their_actions_and_savings_and_a_failed_run_its_cause():
    day = timedelta(days=1)
    runs = [_run("scheduled__applied", FIRST, report=_report(FIRST, dry_run=False)),
            _run("manual__dry", FIRST + day, report=_report(FIRST + day, dry_run=True)),
            _run("scheduled__failed", FIRST + 2 * day, state="failed",
                 note="take_inventory: AccessDenied on DescribeSnapshots"),
            _run("scheduled__now", FIRST + 3 * day, state="running")]
    page = _page(runs)
    assert [(r.run_id, r.state, r.dry_run, r.monthly_savings_usd, r.cause) for r in page.janitor] == [
        ("scheduled__now", "running", None, None, None),
        ("scheduled__failed", "failed", None, None, "take_inventory: AccessDenied on DescribeSnapshots"),
        ("manual__dry", "success", True, 1095.0, None),
        ("scheduled__applied", "success", False, 1095.0, None)]
    applied, dry = page.janitor[3], page.janitor[2]
    assert [(a.action, a.resource, a.outcome, a.monthly_savings_usd) for a in applied.actions] == [
        ("disable_fast_snapshot_restore", "snap-old", "done", 1095.0), ("terminate_builder", "i-orphan", "done", None)]
    assert {a.outcome for a in dry.actions} == {WOULD_DO} and applied.kept == 1
    assert page.empty  # janitor runs alone publish nothing: the page still says nothing is cached
    html = render_page(page)
    assert "<h2>Janitor</h2>" in html and "dry run: nothing changed" in html and "$1,095.00 (would be)" in html
    assert "take_inventory: AccessDenied on DescribeSnapshots" in html and "/dags/ml_container_cache_janitor/runs/" \
        "manual__dry" in html
    assert "terminate_builder <code>i-orphan</code>: done (-/month)" in html


def test_nothing_to_do_and_no_run_yet_are_said_plainly():
    assert "No janitor run yet" in render_page(_page([]))
    empty = cleanup_report(Inventory(now=FIRST, clock="aws"), Plan(actions=[], kept=[]), [], dry_run=False)
    [row] = _page([_run("scheduled__idle", FIRST, report=json.loads(json.dumps(empty)))]).janitor
    assert (row.actions, row.monthly_savings_usd) == ([], 0.0)
    assert "nothing to do (0 kept)" in render_page(_page([_run("scheduled__idle", FIRST, report=empty)]))


def test_a_year_of_weekly_janitor_runs_is_fast_and_folds_the_older_ones():
    runs = [_run(f"scheduled__week-{week:02d}", FIRST + timedelta(weeks=week),
                 report=_report(FIRST + timedelta(weeks=week), dry_run=False)) for week in range(52)]
    started = time.perf_counter()
    page = _page(reversed(runs))
    html = render_page(page)
    assert time.perf_counter() - started < 0.5
    assert page.janitor[0].run_id == "scheduled__week-51" and len(page.janitor) == 52
    assert html.count("<table class=janitor>") == 2 and f"{52 - HISTORY_SHOWN} older janitor runs" in html


def test_janitor_values_are_escaped():
    report = _report(FIRST, dry_run=False)
    report["actions"][0]["reason"] = "<img src=x onerror=alert(1)>"
    html = render_page(_page([_run("manual__<script>", FIRST, report=report)]))
    assert "<script>" not in html and "<img src=x" not in html and "&lt;img src=x" in html
