"""What the janitor does, decided from an inventory alone (pure: no AWS call, no clock but the inventory's).

Every decision carries its reason, and every action the money it saves per month. The rules that
protect the cache come first: a snapshot that the SSM parameter (now or in its recent history), a
launch template version a node group uses, or $Default/$Latest references is never deleted, nor
one of a build that is still running, nor one whose FSR stays on.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ml_cache.cost import GIB, HOURS_PER_MONTH, fsr_monthly, instance_cost, snapshot_monthly, volume_monthly
from ml_cache.fsr_lifecycle import BILLED_FSR_STATES
from ml_cache.janitor.inventory import Inventory, Snapshot
from ml_cache.settings import JanitorSettings

ACTIVE_RUN_STATES = ("queued", "running")
FSR_GOING = ("disabling", "disabled")

ActionKind = Literal["terminate_builder", "delete_volume", "disable_fast_snapshot_restore", "delete_snapshot",
                     "delete_document_version"]


class Action(BaseModel):
    """One change the janitor makes (or, in a dry run, would make)."""

    model_config = ConfigDict(frozen=True)

    action: ActionKind
    resource: str
    reason: str
    monthly_savings_usd: float | None  # None: the price table does not know (an unlisted instance type)
    zones: list[str] = []  # disable_fast_snapshot_restore: the AZs where it is on


class Kept(BaseModel):
    """A resource the janitor looked at and leaves alone, and why."""

    model_config = ConfigDict(frozen=True)

    resource: str
    reason: str


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    actions: list[Action]
    kept: list[Kept]

    @property
    def total_monthly_savings_usd(self) -> float:
        return round(sum(a.monthly_savings_usd or 0.0 for a in self.actions), 2)


def build_deadline(settings: JanitorSettings) -> timedelta:
    """How long a builder can legitimately live: its agent coming online, the build script, and the
    snapshot, after which the run's teardown terminates it. Older than that and not running: orphaned."""
    t = settings.timeouts
    return timedelta(seconds=t.agent_online_seconds + t.build_seconds + t.snapshot_seconds)


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def _run(inventory: Inventory, run_id: str | None) -> tuple[bool, str]:
    """(is the build run active, how to name it)."""
    if run_id is None:
        return False, "no run-id tag"
    state = inventory.run_states.get(run_id)
    return state in ACTIVE_RUN_STATES, f"run {run_id} is {state or 'unknown to Airflow'}"


def _builders(inventory: Inventory, settings: JanitorSettings) -> tuple[list[Action], list[Kept]]:
    deadline, prices = build_deadline(settings), settings.prices
    cap = settings.lifecycle.janitor_max_terminations
    actions, kept = [], []
    for builder in sorted(inventory.builders, key=lambda b: b.launch_time):
        age = inventory.now - builder.launch_time
        active, run = _run(inventory, builder.run_id)
        if active or age <= deadline:
            why = run if active else f"launched {_hours(age)} ago, within the build deadline of {_hours(deadline)}"
            kept.append(Kept(resource=builder.instance_id, reason=why))
            continue
        if sum(a.action == "terminate_builder" for a in actions) >= cap:
            kept.append(Kept(resource=builder.instance_id, reason=f"orphaned ({run}), but over the safety cap of "
                                                                  f"{cap} terminations per run: the next run"))
            continue
        # an orphan outlived its dead-man timer: nothing else stops it, so terminating saves a month of it
        instance = instance_cost(builder.instance_type, HOURS_PER_MONTH, prices)
        savings = None if instance is None else instance + volume_monthly(builder.volume_gib, prices)
        actions.append(Action(action="terminate_builder", resource=builder.instance_id, monthly_savings_usd=savings,
                              reason=f"orphaned builder: {run}, launched {_hours(age)} ago, past the build "
                                     f"deadline of {_hours(deadline)}"))
    for volume in inventory.volumes:
        if volume.state != "available":
            continue  # attached: it goes with its builder (DeleteOnTermination)
        age = inventory.now - volume.create_time
        active, run = _run(inventory, volume.run_id)
        if active or age <= deadline:
            kept.append(Kept(resource=volume.volume_id, reason=run if active else "detached, within the build "
                             f"deadline ({_hours(age)} old)"))
            continue
        actions.append(Action(action="delete_volume", resource=volume.volume_id,
                              monthly_savings_usd=volume_monthly(volume.size_gib, prices),
                              reason=f"leftover volume ({volume.size_gib} GiB, detached): {run}, "
                                     f"created {_hours(age)} ago"))
    return actions, kept


def fsr_keep(inventory: Inventory) -> dict[str, str]:
    """Snapshots whose FSR stays on, and why: the live one and the rollback targets."""
    keep = dict(inventory.rollback_targets)
    if inventory.live_snapshot:
        keep[inventory.live_snapshot] = "live (the SSM parameter holds it)"
    return keep


def _fsr(inventory: Inventory, settings: JanitorSettings) -> tuple[list[Action], list[Kept]]:
    keep = fsr_keep(inventory)
    actions, kept = [], []
    for snapshot in inventory.snapshots:
        zones = sorted(zone for zone, state in snapshot.fsr.items() if state in BILLED_FSR_STATES)
        if not zones:
            continue
        active, run = _run(inventory, snapshot.run_id)
        if snapshot.snapshot_id in keep or active:
            why = keep.get(snapshot.snapshot_id) or f"its build is not finished ({run})"
            kept.append(Kept(resource=snapshot.snapshot_id, reason=f"FSR stays on in {zones}: {why}"))
            continue
        actions.append(Action(action="disable_fast_snapshot_restore", resource=snapshot.snapshot_id, zones=zones,
                              monthly_savings_usd=fsr_monthly(len(zones), settings.prices),
                              reason=f"FSR on in {zones}, but neither live nor a rollback target"))
    return actions, kept


def _delete_reason(snapshot: Snapshot, newer_published: int, inventory: Inventory,
                   settings: JanitorSettings) -> str | None:
    """Why the retention would delete `snapshot` (None: it is within the retention)."""
    lifecycle = settings.lifecycle
    if snapshot.published_at is not None:
        if newer_published < lifecycle.keep_published_snapshots:
            return None
        return (f"published {snapshot.published_at.isoformat()}, beyond the {lifecycle.keep_published_snapshots} "
                f"newest published snapshots")
    age = inventory.now - snapshot.start_time
    if age <= timedelta(hours=lifecycle.unpublished_snapshot_hours):
        return None
    return f"never published, {_hours(age)} old (limit {lifecycle.unpublished_snapshot_hours:g} h)"


def _retention(inventory: Inventory, settings: JanitorSettings,
               disabling: set[str]) -> tuple[list[Action], list[Kept]]:
    actions, kept = [], []
    published = sorted((s for s in inventory.snapshots if s.published_at is not None),
                       key=lambda s: s.published_at, reverse=True)  # type: ignore[arg-type,return-value]
    rank = {s.snapshot_id: index for index, s in enumerate(published)}
    for snapshot in inventory.snapshots:
        sid = snapshot.snapshot_id
        reason = _delete_reason(snapshot, rank.get(sid, 0), inventory, settings)
        if reason is None:
            kept.append(Kept(resource=sid, reason="within the retention"))
            continue
        references = inventory.references.get(sid)
        active, run = _run(inventory, snapshot.run_id)
        fsr_stays_on = [z for z, state in snapshot.fsr.items() if state not in FSR_GOING] and sid not in disabling
        if references:
            kept.append(Kept(resource=sid, reason=f"{reason}, but referenced: {'; '.join(references)}"))
        elif active:
            kept.append(Kept(resource=sid, reason=f"{reason}, but its build is not finished ({run})"))
        elif fsr_stays_on:
            kept.append(Kept(resource=sid, reason=f"{reason}, but FSR is still on and not disabled by this run"))
        else:
            fsr_left = sid in disabling or any(state != "disabled" for state in snapshot.fsr.values())
            then = " (once its FSR is disabled)" if fsr_left else ""
            actions.append(Action(action="delete_snapshot", resource=sid, reason=reason + then,
                                  monthly_savings_usd=snapshot_monthly(snapshot.size_gib * GIB, settings.prices)))
    return actions, kept


def _documents(inventory: Inventory, settings: JanitorSettings) -> tuple[list[Action], list[Kept]]:
    keep_newest = settings.lifecycle.keep_document_versions
    newest_first = sorted(inventory.document_versions, key=lambda v: int(v.version), reverse=True)
    actions, kept = [], []
    for index, version in enumerate(newest_first):
        resource = f"{inventory.document}:{version.version}"
        if version.is_default or index < keep_newest:
            kept.append(Kept(resource=resource, reason="the default version" if version.is_default
                             else f"one of the {keep_newest} newest versions"))
            continue
        actions.append(Action(action="delete_document_version", resource=resource, monthly_savings_usd=0.0,
                              reason=f"older than the {keep_newest} newest versions and not the default"))
    return actions, kept


def plan_cleanup(inventory: Inventory, settings: JanitorSettings) -> Plan:
    """Every action, in the order it must run: builders before their volumes, FSR off before deletion."""
    builder_actions, builder_kept = _builders(inventory, settings)
    fsr_actions, fsr_kept = _fsr(inventory, settings)
    retention_actions, retention_kept = _retention(inventory, settings, {a.resource for a in fsr_actions})
    document_actions, document_kept = _documents(inventory, settings)
    return Plan(actions=[*builder_actions, *fsr_actions, *retention_actions, *document_actions],
                kept=[*builder_kept, *fsr_kept, *retention_kept, *document_kept])
