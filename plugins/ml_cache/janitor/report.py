"""The janitor's report: each action (or would-be action) with its reason and the money it saves."""

from __future__ import annotations

from typing import Any

from ml_cache.janitor.inventory import Inventory
from ml_cache.janitor.plan import Plan

WOULD_DO = "would do (dry run)"
COLUMNS = ("action", "resource", "reason", "$/month saved", "outcome")


def cleanup_report(inventory: Inventory, plan: Plan, results: list[dict[str, Any]] | None,
                   *, dry_run: bool) -> dict[str, Any]:
    """The XCom: `results` are apply_plan's (None in a dry run: every action then would be done).
    The total counts only what was done (or, in a dry run, would be)."""
    if results is None:
        results = [{**action.model_dump(mode="json"), "outcome": WOULD_DO} for action in plan.actions]
    counted = (WOULD_DO, "done")
    total = sum(r["monthly_savings_usd"] or 0.0 for r in results if r["outcome"] in counted)
    return {
        "dry_run": dry_run,
        "now": inventory.now.isoformat(),
        "clock": inventory.clock,
        "actions": results,
        "kept": [kept.model_dump(mode="json") for kept in plan.kept],
        "total_monthly_savings_usd": round(total, 2),
    }


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.2f}"


def report_table(report: dict[str, Any]) -> str:
    """A plain-text table for the task log: one line per action, then the total."""
    rows = [(r["action"], r["resource"], r["reason"], _money(r["monthly_savings_usd"]), r["outcome"])
            for r in report["actions"]]
    rows.append(("total", "", "", _money(report["total_monthly_savings_usd"]), ""))
    widths = [max(len(str(row[i])) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    lines = [" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [COLUMNS, tuple("-" * w for w in widths), *rows]]
    title = "Janitor dry run: nothing was changed" if report["dry_run"] else "Janitor run"
    return "\n".join([f"{title} (clock: {report['clock']}, {report['now']})", *lines])
