"""Kubelet evidence on a validation pod: was the image already on the node (hit) or pulled (miss)?

Pure logic over plain dicts shaped like the Kubernetes API JSON (camelCase, as
`ApiClient().sanitize_for_serialization` returns them). No airflow or kubernetes import here.

Kubelet messages this module reads (pkg/kubelet/images/image_manager.go):
- hit, up to 1.32:  Container image "REF" already present on machine
- hit, 1.33+:       Container image "REF" already present on machine and can be accessed by the pod
- miss: Pulling image "REF", then Pulled with
  up to 1.26:  Successfully pulled image "REF" in 5.1s
  1.27-1.29:   Successfully pulled image "REF" in 5.123s (5.123s including waiting)
  1.30+:       ... (5.123s including waiting). Image size: 1073741824 bytes.
- also a miss: Failed "Failed to pull image ...", BackOff "Back-off pulling image ...",
  ErrImageNeverPull "... is not present with pull policy of Never".

Events written with the events.k8s.io API (the scheduler) carry `eventTime` as MicroTime, the
kubelet's legacy events leave it null and carry whole-second `firstTimestamp`: `Instant` keeps
how many fractional digits a timestamp really had, so timing can prefer the most precise source.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ml_cache.images import canonical_reference

_QUOTED_REF_RE = re.compile(r'image "([^"]+)"')
_GO_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|us|µs|μs|ns|m|s)")
_PULL_DURATION_RE = re.compile(r"Successfully pulled image \"[^\"]+\" in ([0-9.hmsuµμn]+)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class Instant:
    """A parsed API timestamp and how many fractional digits it really had (its precision)."""

    at: datetime
    digits: int


def parse_timestamp(value: object) -> Instant | None:
    """RFC3339 (`2026-11-29T02:36:21Z`) or MicroTime (`...21.123456Z`, also with an offset)."""
    if not isinstance(value, str) or not value:
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value.strip())
    if not match:
        return None
    whole, fraction, zone = match.groups()
    fraction = fraction or ""
    micro = (fraction + "000000")[:6]
    at = datetime.fromisoformat(f"{whole}.{micro}{'+00:00' if zone == 'Z' else zone}")
    return Instant(at, min(len(fraction), 6))


def event_time(event: Mapping[str, Any]) -> tuple[Instant | None, str]:
    """When an event first happened, and which field said so (eventTime, else firstTimestamp...)."""
    for key in ("eventTime", "firstTimestamp", "lastTimestamp"):
        instant = parse_timestamp(event.get(key))
        if instant is not None:
            return instant, key
    series = event.get("series") or {}
    instant = parse_timestamp(series.get("lastObservedTime"))
    if instant is not None:
        return instant, "series.lastObservedTime"
    return parse_timestamp((event.get("metadata") or {}).get("creationTimestamp")), "metadata.creationTimestamp"


def sorted_events(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    def key(event: Mapping[str, Any]) -> tuple[int, datetime]:
        instant, _ = event_time(event)
        return (0, instant.at) if instant else (1, datetime.max)

    return sorted((e for e in events or [] if isinstance(e, Mapping)), key=key)


def events_of(pod: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Only this pod's events: a recreated pod of the same name (a retried task) must not inherit
    the events of its predecessor, which the API keeps for an hour. Matched by uid when both
    sides carry one."""
    uid = (pod.get("metadata") or {}).get("uid")
    chosen = []
    for event in events or []:
        event_uid = (event.get("involvedObject") or {}).get("uid")
        if uid and event_uid and event_uid != uid:
            continue
        chosen.append(event)
    return chosen


def _event_image(event: Mapping[str, Any]) -> str | None:
    match = _QUOTED_REF_RE.search(str(event.get("message") or ""))
    return match.group(1) if match else None


def _from_kubelet(event: Mapping[str, Any]) -> bool:
    component = (event.get("source") or {}).get("component") or event.get("reportingComponent") or ""
    return not component or "kubelet" in component


def _pull_events(events: Iterable[Mapping[str, Any]], image: str | None) -> list[Mapping[str, Any]]:
    chosen = []
    for event in sorted_events(events):
        if not _from_kubelet(event):
            continue
        if image is not None:
            named = _event_image(event)
            if named is not None and canonical_reference(named) != canonical_reference(image):
                continue
        chosen.append(event)
    return chosen


def classify_pull_event(event: Mapping[str, Any]) -> bool | None:
    """True: the image was already there; False: the kubelet pulled or had to; None: not a pull event."""
    reason = event.get("reason")
    message = str(event.get("message") or "")
    if reason == "Pulled" and "already present on machine" in message:
        return True
    if reason == "Pulled" and message.startswith("Successfully pulled image"):
        return False
    if reason == "Pulling":
        return False
    if reason == "ErrImageNeverPull" or "is not present with pull policy of Never" in message:
        return False
    if reason in ("Failed", "BackOff") and ("pull image" in message or "pulling image" in message):
        return False
    return None


def cache_hit(events: Iterable[Mapping[str, Any]], image: str | None = None) -> bool | None:
    """Was the image served from the node's cache? Any sign of a pull is a miss (even next to an
    "already present" of a restarted container); no pull event at all is None (unknown)."""
    verdicts = [classify_pull_event(event) for event in _pull_events(events, image)]
    if False in verdicts:
        return False
    if True in verdicts:
        return True
    return None


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go `time.Duration` string as the kubelet prints it: 5.123s, 313ms, 1m2.5s."""
    if not text:
        return None
    parts = _GO_DURATION_PART_RE.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return round(sum(float(number) * _GO_UNITS[unit] for number, unit in parts), 6)


def pull_seconds(events: Iterable[Mapping[str, Any]], image: str | None = None) -> float | None:
    """The pull time the kubelet measured ("Successfully pulled image ... in 5.123s"), if it pulled."""
    for event in _pull_events(events, image):
        if event.get("reason") == "Pulled":
            match = _PULL_DURATION_RE.search(str(event.get("message") or ""))
            if match:
                return parse_go_duration(match.group(1))
    return None
