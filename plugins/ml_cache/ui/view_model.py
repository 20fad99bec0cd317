"""What the "ML cache" page shows, made from what the pipeline publishes: pure, no Airflow or AWS import.

Inputs are the Asset events (`ml_container_cache` from builds, `ml_container_cache_ready` from rollouts
that passed validation), the build DAG's runs, the janitor's runs with their `report_cleanup` XCom and the
metadata parameter as read (ml_cache.ui.gather).
The events and the parameter are the only sources: the page never keeps a copy. Everything is one pass
over the events, so a year of weekly runs costs milliseconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from ml_cache.validation.report import is_cold

BUILD_DAG_ID = "ml_container_cache_build"
ROLLOUT_DAG_ID = "ml_container_cache_rollout"
JANITOR_DAG_ID = "ml_container_cache_janitor"
UNKNOWN_ARCH = "unknown"


@dataclass(frozen=True)
class Event:
    """One Asset event as Airflow stores it: when, and its `extra`."""

    timestamp: datetime
    extra: Mapping[str, Any]


@dataclass(frozen=True)
class Run:
    """One build or janitor DAG run: a build that published nothing (up to date, failed) shows only here.
    `report` is a janitor run's `report_cleanup` XCom (ml_cache.janitor.report), None when it wrote none."""

    run_id: str
    state: str
    start: datetime | None = None
    end: datetime | None = None
    note: str | None = None
    report: Any = None


@dataclass(frozen=True)
class ImageRow:
    ref: str
    digest: str
    bytes: int | None


@dataclass(frozen=True)
class LiveSnapshot:
    """The snapshot nodes get now. `source` says where it was read: the SSM parameter (the truth), or the
    newest Asset event when the parameter could not be read or describes another architecture."""

    snapshot_id: str
    source: str
    published_at: str | None
    age_seconds: float | None
    volume_size_gib: int | None
    used_bytes: int | None
    full_bytes: int | None
    incremental_bytes: int | None
    fsr: list[tuple[str, str]]
    images: list[ImageRow]
    build_run_id: str | None
    rollout_run_id: str | None
    validated: bool
    mode: str | None


@dataclass(frozen=True)
class BuildRow:
    """One build run: `outcome` is full, incremental, up to date (no event), failed or running."""

    run_id: str
    time: str | None
    arch: str | None
    outcome: str
    snapshot_id: str | None
    bytes_pulled: int | None
    duration_seconds: float | None
    run_usd: float | None
    cause: str | None


@dataclass(frozen=True)
class JanitorAction:
    action: str
    resource: str
    reason: str
    outcome: str
    monthly_savings_usd: float | None


@dataclass(frozen=True)
class JanitorRow:
    """One janitor run: what it did (or, with dry_run, would have done) and saved, or why it failed."""

    run_id: str
    time: str | None
    state: str
    dry_run: bool | None  # None: no report (failed or running before report_cleanup)
    actions: list[JanitorAction]
    kept: int
    monthly_savings_usd: float | None
    cause: str | None


@dataclass(frozen=True)
class StartupPoint:
    time: str
    cached_seconds: float | None
    uncached_seconds: float | None
    rollout_run_id: str | None


@dataclass(frozen=True)
class StageRow:
    """One validation pod of the newest validation: seconds since pod creation at each stage."""

    image: str
    node: str
    cache_hit: bool | None
    stages: dict[str, float | None]
    baseline: bool = False  # an uncached reference pod, never judged


@dataclass(frozen=True)
class CostWeek:
    week: str  # ISO date of the week's Monday
    usd: float
    builder_usd: float
    fsr_usd: float
    snapshot_usd: float


@dataclass
class ArchView:
    arch: str
    live: LiveSnapshot | None = None
    startup: dict[str, list[StartupPoint]] = field(default_factory=dict)
    stages: list[StageRow] = field(default_factory=list)
    stages_run_id: str | None = None


@dataclass
class CachePage:
    """The whole page; `to_dict()` is the JSON endpoint's body."""

    generated_at: str
    archs: list[ArchView]
    history: list[BuildRow]
    cost_weeks: list[CostWeek]
    cost_total: dict[str, Any] | None
    messages: list[str]
    janitor: list[JanitorRow] = field(default_factory=list)
    pipeline: str | None = None  # the config's `pipeline`: one deployment of the DAGs runs one

    @property
    def empty(self) -> bool:
        return not self.archs and not self.history

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "empty": self.empty}


def build_page(*, now: datetime, cache_events: Iterable[Event], ready_events: Iterable[Event],
               build_runs: Iterable[Run] = (), published: Mapping[str, Any] | None = None,
               messages: Sequence[str] = (), janitor_runs: Iterable[Run] = (), pipeline: str | None = None
               ) -> CachePage:
    """The page from the events (any order), the build and janitor runs and the metadata parameter's content
    (`published`: {"snapshot_id": ..., "metadata": {...}, "fsr_states": {az: state} as EC2 describes the
    published snapshot now, absent when not read}, None when the parameter could not be read)."""
    cache = sorted(cache_events, key=lambda event: event.timestamp)
    ready = sorted(ready_events, key=lambda event: event.timestamp)
    notes = list(messages)
    archs: dict[str, ArchView] = {}
    for event in cache:
        arch = event.extra.get("arch") or UNKNOWN_ARCH
        archs.setdefault(arch, ArchView(arch=arch))
    for event in ready:
        arch = event.extra.get("arch") or UNKNOWN_ARCH
        archs.setdefault(arch, ArchView(arch=arch))
    published_meta = dict((published or {}).get("metadata") or {})
    published_id = (published or {}).get("snapshot_id")
    if published_id and published_meta.get("snapshot_id") == published_id:
        archs.setdefault(published_meta.get("arch") or UNKNOWN_ARCH,
                         ArchView(arch=published_meta.get("arch") or UNKNOWN_ARCH))
    for view in archs.values():
        arch_cache = [e for e in cache if (e.extra.get("arch") or UNKNOWN_ARCH) == view.arch]
        arch_ready = [e for e in ready if (e.extra.get("arch") or UNKNOWN_ARCH) == view.arch]
        view.live = _live(view.arch, now, arch_cache, arch_ready, published_id, published_meta,
                          (published or {}).get("fsr_states"))
        view.startup = _startup(arch_ready)
        if arch_ready:
            newest = arch_ready[-1]
            view.stages = _stages(newest.extra.get("validation") or {})
            view.stages_run_id = newest.extra.get("run_id")
    if published is not None and published_id and published_meta.get("snapshot_id") not in (None, published_id):
        notes.append(f"the metadata parameter describes {published_meta.get('snapshot_id')}, "
                     f"not the published {published_id}: sizes and FSR are from the Asset events")
    weeks, total = _cost(cache)
    return CachePage(generated_at=now.isoformat(), archs=sorted(archs.values(), key=lambda view: view.arch),
                     history=_history(cache, build_runs), cost_weeks=weeks, cost_total=total, messages=notes,
                     janitor=_janitor(janitor_runs), pipeline=pipeline)


def _live(arch: str, now: datetime, cache: Sequence[Event], ready: Sequence[Event], published_id: str | None,
          metadata: Mapping[str, Any], fsr_states: Mapping[str, str] | None) -> LiveSnapshot | None:
    from_parameter = bool(published_id) and metadata.get("snapshot_id") == published_id \
        and (metadata.get("arch") or UNKNOWN_ARCH) == arch
    events = {event.extra.get("snapshot_id"): event for event in cache}
    if from_parameter:
        snapshot_id, source = published_id, "SSM metadata parameter"
    elif cache:
        snapshot_id, source = cache[-1].extra.get("snapshot_id"), "newest Asset event"
    else:
        return None
    event = events.get(snapshot_id)
    info: Mapping[str, Any] = metadata if from_parameter else (event.extra if event else {})
    published_at = event.timestamp if event else _parse_time(info.get("snapshot_start_time"))
    cost_snapshot = (info.get("cost") or {}).get("snapshot") or {}
    sizes = {image.get("ref"): image.get("bytes") for image in metadata.get("images") or []} if from_parameter else {}
    images = [ImageRow(ref=image["ref"], digest=image["digest"], bytes=sizes.get(image["ref"]))
              for image in info.get("images") or []]
    validations = [e for e in ready if e.extra.get("snapshot_id") == snapshot_id]
    return LiveSnapshot(
        snapshot_id=snapshot_id,
        source=source,
        published_at=published_at.isoformat() if published_at else None,
        age_seconds=(now - published_at).total_seconds() if published_at else None,
        volume_size_gib=info.get("volume_size_gib"),
        used_bytes=(info.get("totals") or {}).get("filesystem_used_bytes"),
        full_bytes=cost_snapshot.get("full_bytes"),
        incremental_bytes=cost_snapshot.get("incremental_bytes"),
        fsr=_fsr(info.get("fsr_availability_zones") or [], fsr_states if from_parameter else None),
        images=images,
        build_run_id=info.get("run_id"),
        rollout_run_id=validations[-1].extra.get("run_id") if validations else None,
        validated=bool(validations),
        mode=_mode(info.get("build")),
    )


def _fsr(published_zones: Sequence[str], states: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """FSR per AZ: EC2's state now when it was read (an AZ without an entry has FSR off), else the AZs
    the build enabled before it published."""
    if states is None:
        return [(zone, "enabled at publish") for zone in published_zones]
    return [(zone, states.get(zone, "disabled")) for zone in sorted(set(published_zones) | set(states))]


def _mode(build: Mapping[str, Any] | None) -> str | None:
    if not build:
        return None
    return {"fresh": "full", "incremental": "incremental"}.get(build.get("mode"), build.get("mode"))


def _history(cache: Sequence[Event], runs: Iterable[Run]) -> list[BuildRow]:
    """Newest first: each build run, with what its event says when it published one."""
    by_run = {event.extra.get("run_id"): event for event in cache}
    rows: list[BuildRow] = []
    seen: set[str] = set()
    for run in runs:
        seen.add(run.run_id)
        rows.append(_build_row(run.run_id, by_run.get(run.run_id), run))
    rows.extend(_build_row(event.extra.get("run_id") or "?", event, None)
                for event in cache if event.extra.get("run_id") not in seen)
    return sorted(rows, key=lambda row: row.time or "", reverse=True)


def _build_row(run_id: str, event: Event | None, run: Run | None) -> BuildRow:
    extra = event.extra if event else {}
    duration = (run.end - run.start).total_seconds() if run and run.start and run.end else None
    when = run.start if run and run.start else (event.timestamp if event else None)
    if event:
        outcome = _mode(extra.get("build")) or "published"
    elif run and run.state == "success":
        outcome = "up to date"
    elif run and run.state == "failed":
        outcome = "failed"
    else:
        outcome = run.state if run else "?"
    return BuildRow(
        run_id=run_id, time=when.isoformat() if when else None, arch=extra.get("arch"), outcome=outcome,
        snapshot_id=extra.get("snapshot_id"), bytes_pulled=(extra.get("build") or {}).get("bytes_pulled"),
        duration_seconds=duration, run_usd=(extra.get("cost") or {}).get("run_usd"),
        cause=run.note if run and outcome == "failed" else None,
    )


def _janitor(runs: Iterable[Run]) -> list[JanitorRow]:
    """Newest first: each janitor run with its report's actions; a run without a report shows its state and note."""
    rows = [_janitor_row(run) for run in runs]
    return sorted(rows, key=lambda row: row.time or "", reverse=True)


def _janitor_row(run: Run) -> JanitorRow:
    report = run.report if isinstance(run.report, Mapping) else {}
    actions = [JanitorAction(action=str(a.get("action") or "?"), resource=str(a.get("resource") or "?"),
                             reason=str(a.get("reason") or ""), outcome=str(a.get("outcome") or "?"),
                             monthly_savings_usd=a.get("monthly_savings_usd"))
               for a in report.get("actions") or [] if isinstance(a, Mapping)]
    return JanitorRow(
        run_id=run.run_id, time=run.start.isoformat() if run.start else None, state=run.state,
        dry_run=report.get("dry_run") if report else None, actions=actions, kept=len(report.get("kept") or []),
        monthly_savings_usd=report.get("total_monthly_savings_usd"),
        cause=run.note if run.state == "failed" else None,
    )


def _startup(ready: Sequence[Event]) -> dict[str, list[StartupPoint]]:
    """Per image, the median cached start (validation pods) and uncached start (baselines) of each rollout."""
    series: dict[str, list[StartupPoint]] = defaultdict(list)
    for event in ready:
        validation = event.extra.get("validation") or {}
        cached = _medians(validation.get("results") or [])
        uncached = _medians(b for b in validation.get("baselines") or [] if is_cold(b))
        for image in sorted(set(cached) | set(uncached)):
            series[image].append(StartupPoint(time=event.timestamp.isoformat(), cached_seconds=cached.get(image),
                                              uncached_seconds=uncached.get(image),
                                              rollout_run_id=event.extra.get("run_id")))
    return dict(series)


def _medians(results: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    seconds: dict[str, list[float]] = defaultdict(list)
    for result in results:
        if result.get("total_seconds") is not None and result.get("image"):
            seconds[result["image"]].append(float(result["total_seconds"]))
    return {image: round(median(values), 3) for image, values in seconds.items()}


def _stages(validation: Mapping[str, Any]) -> list[StageRow]:
    rows = [(row, False) for row in validation.get("results") or []]
    rows += [(row, True) for row in validation.get("baselines") or []]
    return [StageRow(image=row.get("image") or "", node=row.get("node") or "", cache_hit=row.get("cache_hit"),
                     stages=dict(row.get("stages") or {}), baseline=baseline) for row, baseline in rows]


_TOTAL_KEYS = ("usd", "builder_usd", "fsr_usd", "snapshot_usd")


def _cost(cache: Sequence[Event]) -> tuple[list[CostWeek], dict[str, Any] | None]:
    """Cost per week as the increase of the build's running total (which counts the builder, FSR hours and
    snapshot storage up to that build), so the weeks add up to the newest total. A build's week is the one
    its cost report is `as_of` (AWS's clock, which bills it), else its event's."""
    weeks: dict[str, dict[str, float]] = {}
    previous = dict.fromkeys(_TOTAL_KEYS, 0.0)
    total: dict[str, Any] | None = None
    for event in cache:
        cost = event.extra.get("cost") or {}
        running = cost.get("running_total")
        if not running:
            continue
        billed = _parse_time(cost.get("as_of")) or event.timestamp
        monday = (billed - timedelta(days=billed.weekday())).date().isoformat()
        week = weeks.setdefault(monday, dict.fromkeys(_TOTAL_KEYS, 0.0))
        for key in _TOTAL_KEYS:
            now = float(running.get(key) or 0.0)
            week[key] += now - previous[key] if now >= previous[key] else now  # a restarted total counts from 0
            previous[key] = now
        total = dict(running)
    rows = [CostWeek(week=monday, usd=round(v["usd"], 2), builder_usd=round(v["builder_usd"], 2),
                     fsr_usd=round(v["fsr_usd"], 2), snapshot_usd=round(v["snapshot_usd"], 2))
            for monday, v in sorted(weeks.items())]
    return rows, total


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
