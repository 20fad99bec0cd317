"""Start-up stages of a validation pod, in seconds since its creation, and its outcome.

Condition and container timestamps are RFC3339 in whole seconds; the scheduler's events carry
MicroTime. Each stage takes the most precise source available (ties: the first in its preference
list) and `sources` says which one it used. The origin is the pod's creation; creationTimestamp
is whole seconds too, so the creating client may pass its own clock reading (`created_at`) for a
sub-second origin (see startup_stages). No airflow or kubernetes import here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ml_cache.validation.evidence import Instant, event_time, events_of, parse_timestamp, sorted_events

STAGES = ("scheduled", "image_ready", "container_started", "containers_ready", "ready")


@dataclass(frozen=True)
class _Candidate:
    instant: Instant
    source: str


def _best(candidates: list[_Candidate]) -> _Candidate | None:
    """The most precise candidate; on equal precision, the first (the preferred source)."""
    best = None
    for candidate in candidates:
        if best is None or candidate.instant.digits > best.instant.digits:
            best = candidate
    return best


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _condition_candidates(pod: Mapping[str, Any], kind: str) -> list[_Candidate]:
    condition = _condition(pod, kind)
    if condition and condition.get("status") == "True":
        instant = parse_timestamp(condition.get("lastTransitionTime"))
        if instant:
            return [_Candidate(instant, f"condition {kind}")]
    return []


def _event_candidates(events: list[Mapping[str, Any]], reasons: tuple[str, ...], *, last: bool) -> list[_Candidate]:
    """The first (or last) event with one of these reasons; with several containers the last
    Pulled/Started is when all of them got there."""
    matching = [e for e in events if e.get("reason") in reasons]
    if not matching:
        return []
    event = matching[-1] if last else matching[0]
    instant, field_name = event_time(event)
    return [_Candidate(instant, f"event {event.get('reason')} {field_name}")] if instant else []


def _statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((pod.get("status") or {}).get("containerStatuses") or [])


def _started_candidates(pod: Mapping[str, Any]) -> list[_Candidate]:
    found = []
    for status in _statuses(pod):
        state = status.get("state") or {}
        for kind in ("running", "terminated"):
            instant = parse_timestamp((state.get(kind) or {}).get("startedAt"))
            if instant:
                found.append(_Candidate(instant, f"containerStatuses[{status.get('name')}].state.{kind}.startedAt"))
    if len(found) != len(_statuses(pod)) or not found:
        return []  # a container that never started: the pod never got there
    return [max(found, key=lambda candidate: candidate.instant.at)]


def _finished_candidates(pod: Mapping[str, Any]) -> list[_Candidate]:
    """For a pod that ran to completion: when its last container finished (exit 0 only)."""
    found = []
    for status in _statuses(pod):
        terminated = (status.get("state") or {}).get("terminated") or {}
        instant = parse_timestamp(terminated.get("finishedAt"))
        if instant is None or terminated.get("exitCode") != 0:
            return []
        found.append(_Candidate(instant, f"containerStatuses[{status.get('name')}].state.terminated.finishedAt"))
    return [max(found, key=lambda candidate: candidate.instant.at)] if found else []


def _completed(pod: Mapping[str, Any], kind: str) -> bool:
    condition = _condition(pod, kind)
    return bool(condition) and condition.get("status") == "False" and condition.get("reason") == "PodCompleted"


def _without_probes(pod: Mapping[str, Any]) -> bool:
    """No readiness or startup probe: the kubelet counts a container ready as soon as it runs."""
    containers = (pod.get("spec") or {}).get("containers") or []
    return bool(containers) and not any(c.get("readinessProbe") or c.get("startupProbe") for c in containers)


# a client-recorded creation time further than this from creationTimestamp means skewed clocks
_CLIENT_CLOCK_TOLERANCE_SECONDS = 2.0


def _anchor(pod: Mapping[str, Any], created_at: object) -> tuple[Instant | None, str | None]:
    """The pod's creation: creationTimestamp (whole seconds), or the creating client's own
    microsecond clock reading when given and consistent with it (within its second, allowing
    for the request's time in flight), which removes up to a second of truncation from every stage."""
    server = parse_timestamp((pod.get("metadata") or {}).get("creationTimestamp"))
    client = created_at if isinstance(created_at, Instant) else (
        Instant(created_at, 6) if isinstance(created_at, datetime) else parse_timestamp(created_at))
    if client is not None and client.at.tzinfo is None:
        client = None
    if server is None:
        return (client, "client create time") if client else (None, None)
    if client is not None and client.digits > server.digits:
        offset = (client.at - server.at).total_seconds()
        if -_CLIENT_CLOCK_TOLERANCE_SECONDS <= offset <= 1.0 + _CLIENT_CLOCK_TOLERANCE_SECONDS:
            return client, "client create time"
    return server, "metadata.creationTimestamp"


def startup_stages(
    pod: Mapping[str, Any], events: Iterable[Mapping[str, Any]], *, created_at: datetime | str | None = None
) -> dict[str, Any]:
    """Seconds (ms resolution) from the pod's creation to each start-up stage, and the source of each.

    - created (the origin): metadata.creationTimestamp, whole seconds; or `created_at`, the
      creating client's clock read just before the create call (microseconds), when it agrees with
      creationTimestamp to within the tolerance. Give it: otherwise every stage carries up to 1 s
      of truncation, which swamps a sub-second cached start.
    - scheduled: the scheduler's Scheduled event (MicroTime), else the PodScheduled condition
      (set by the kubelet when the pod is bound by nodeName, as validation pods are).
    - image_ready: the kubelet's Pulled event (either "already present" or "Successfully pulled").
    - container_started: containerStatuses startedAt (the last container), else the Started event.
    - containers_ready / ready: the ContainersReady / Ready conditions while True. A container
      without readiness or startup probe is ready as soon as it runs, so container_started is a
      candidate too (often the more precise one). A validation pod runs to completion, and then
      both conditions read False with reason PodCompleted: the moment they were True is
      overwritten. For such a pod (exit code 0) the stages use container_started when there is no
      probe, else the container's terminated.finishedAt (an upper bound, never an underestimate).
    - total_seconds = ready; None when the pod never got there (a failed pod is never ready).
    """
    events = sorted_events(events_of(pod, events))
    created, created_source = _anchor(pod, created_at)
    candidates = {
        "scheduled": _event_candidates(events, ("Scheduled",), last=False) + _condition_candidates(pod, "PodScheduled"),
        "image_ready": _event_candidates(events, ("Pulled",), last=True),
        "container_started": _started_candidates(pod) + _event_candidates(events, ("Started",), last=True),
        "containers_ready": _condition_candidates(pod, "ContainersReady"),
        "ready": _condition_candidates(pod, "Ready"),
    }
    started = _best(candidates["container_started"])
    for stage, kind in (("containers_ready", "ContainersReady"), ("ready", "Ready")):
        completed = _completed(pod, kind) and bool(_finished_candidates(pod))
        if not (candidates[stage] or completed):
            continue  # never ready (failed, pending, probes failing)
        if started is not None and _without_probes(pod):
            candidates[stage].append(_Candidate(started.instant, f"{started.source} (no readiness probe)"))
        if not candidates[stage]:
            candidates[stage] = _finished_candidates(pod)
    stages: dict[str, float | None] = {}
    sources: dict[str, str | None] = {}
    for stage in STAGES:
        chosen = _best(candidates[stage])
        if chosen is None or created is None:
            stages[stage], sources[stage] = None, None
            continue
        seconds = round((chosen.instant.at - created.at).total_seconds(), 3)
        source = chosen.source
        if seconds < 0 and chosen.instant.digits < created.digits:
            # a truncated whole second before the precise origin: the moment itself was not earlier
            seconds, source = 0.0, f"{source} (whole second, clamped to the origin)"
        stages[stage], sources[stage] = seconds, source
    sources["created"] = created_source
    return {**stages, "total_seconds": stages["ready"], "sources": sources,
            "created": created.at.isoformat() if created else None}


def pod_outcome(pod: Mapping[str, Any]) -> tuple[bool, str]:
    """(succeeded, why): Succeeded with every container exited 0, or Running and Ready."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Unknown"
    for container in _statuses(pod):
        terminated = (container.get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode") != 0:
            detail = terminated.get("reason") or "Error"
            return False, f"container {container.get('name')} exited {terminated.get('exitCode')} ({detail})"
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and phase != "Succeeded":
            detail = " ".join(str(x) for x in (waiting.get("reason"), waiting.get("message")) if x)
            return False, f"container {container.get('name')} waiting: {detail or 'no reason given'}"
    if phase == "Succeeded":
        return True, "pod succeeded"
    ready = _condition(pod, "Ready")
    if phase == "Running" and ready and ready.get("status") == "True":
        return True, "pod running and ready"
    detail = " ".join(str(x) for x in (status.get("reason"), status.get("message")) if x)
    return False, f"pod phase {phase}" + (f": {detail}" if detail else "")
