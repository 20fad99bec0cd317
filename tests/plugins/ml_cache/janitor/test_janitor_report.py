"""The janitor's report: a dry run counts every would-be action, a real run only what was done."""

from __future__ import annotations

from datetime import UTC, datetime

from ml_cache.janitor.inventory import Inventory
from ml_cache.janitor.plan import Action, Kept, Plan
from ml_cache.janitor.report import WOULD_DO, cleanup_report, report_table

INVENTORY = Inventory(now=datetime(2027, 3, 1, tzinfo=UTC), clock="aws")
PLAN = Plan(actions=[Action(action="delete_snapshot", resource="snap-1", reason="old", monthly_savings_usd=5.0),
                     Action(action="terminate_builder", resource="i-1", reason="orphan", monthly_savings_usd=None)],
            kept=[Kept(resource="snap-2", reason="within the retention")])


def test_dry_run_report_lists_would_be_actions_and_their_total():
    report = cleanup_report(INVENTORY, PLAN, None, dry_run=True)
    assert [a["outcome"] for a in report["actions"]] == [WOULD_DO, WOULD_DO]
    assert report["total_monthly_savings_usd"] == 5.0 and report["dry_run"] is True
    assert report["kept"] == [{"resource": "snap-2", "reason": "within the retention"}]
    table = report_table(report)
    assert table.startswith("Janitor dry run: nothing was changed (clock: aws, 2027-03-01T00:00:00+00:00)")
    assert "delete_snapshot   | snap-1   | old" in table and "unknown" in table
    assert table.splitlines()[-1].startswith("total") and "5.00" in table.splitlines()[-1]


def test_real_run_counts_only_what_was_done():
    results = [{**PLAN.actions[0].model_dump(mode="json"), "outcome": "already gone"},
               {**PLAN.actions[1].model_dump(mode="json"), "outcome": "done"}]
    report = cleanup_report(INVENTORY, PLAN, results, dry_run=False)
    assert report["total_monthly_savings_usd"] == 0.0
    assert report_table(report).startswith("Janitor run (clock: aws")
