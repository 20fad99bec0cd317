"""A year of weekly builds and rollouts as the producers make them: each week's snapshot metadata
(published.snapshot_metadata via producers) with the build's real cost report (cost.run_cost_report, chained
to the previous week's), the build's event (cache_event_extra), the rollout's event (ready_event_extra with
validation's evaluate over the recorded cached pod and the recorded uncached pod as baseline)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ml_cache.assets import cache_event_extra, read_cache_event, ready_event_extra
from ml_cache.cost import run_cost_report
from ml_cache.rollout_target import snapshot_from_event
from ml_cache.settings.models import Prices
from ml_cache.ui.view_model import Event
from ml_cache.validation.report import evaluate, node_result, report_markdown
from tests.plugins.ml_cache import producers

FIRST_BUILD = datetime(2025, 12, 1, 3, 40, tzinfo=UTC)  # a Monday
ZONES = ["us-west-2a", "us-west-2b"]
GIB = 1024**3


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def snapshot_id(week: int) -> str:
    return f"snap-{week:017x}"


def build_run_id(week: int) -> str:
    return f"scheduled__week-{week:02d}"


def rollout_run_id(week: int) -> str:
    return f"asset_triggered__week-{week:02d}"


def validation_report() -> dict[str, Any]:
    """validate_nodes' output: the recorded cached pod judged, the recorded uncached pod as baseline."""
    cached = json.loads((producers.FIXTURES / "cached_pod.json").read_text())
    uncached = json.loads((producers.FIXTURES / "uncached_pod.json").read_text())
    report = evaluate([node_result(cached["pod"], cached["events"])], max_startup_seconds=60,
                      baselines=[node_result(uncached["pod"], uncached["events"], image=_image(cached))])
    return _json({**report.to_dict(), "markdown": report_markdown(report)})


def _image(recorded: dict[str, Any]) -> str:
    return node_result(recorded["pod"], recorded["events"]).image


def weeks(count: int = 52) -> tuple[list[Event], list[Event], list[dict[str, Any]]]:
    """(cache events, ready events, each week's published metadata), oldest first."""
    cache, ready, metadata_by_week = [], [], []
    previous_cost: dict[str, Any] | None = None
    validation = validation_report()
    for week in range(count):
        taken = FIRST_BUILD + timedelta(weeks=week)
        metadata = producers.published_metadata(snapshot_id(week), start=taken)
        metadata["run_id"] = build_run_id(week)
        metadata["cost"] = _json(run_cost_report(
            Prices(), now=taken + timedelta(hours=1), instance_id=f"i-{week:017x}", instance_type="c6i.2xlarge",
            builder_hours=0.5, snapshot_id=snapshot_id(week),
            parent_snapshot_id=snapshot_id(week - 1) if week else None, full_bytes=20 * GIB,
            incremental_bytes=2 * GIB, fsr_zones=ZONES, fsr_az_hours_so_far=2.0, previous_cost=previous_cost,
            carried_fsr_az_hours=4.0 if week else 0.0,
            fsr_accruing_snapshot_ids=[snapshot_id(week)]))
        previous_cost = metadata["cost"]
        extra = _json(cache_event_extra(metadata))
        cache.append(Event(timestamp=taken + timedelta(hours=1), extra=extra))
        target = _json(snapshot_from_event(read_cache_event(extra)))
        ready.append(Event(timestamp=taken + timedelta(hours=2),
                           extra=_json(ready_event_extra(target, validation, rollout_run_id(week)))))
        metadata_by_week.append(metadata)
    return cache, ready, metadata_by_week
