"""Prove a rollout: every new GPU node started every cached image without pulling it.

Pure logic over plain dicts shaped like the Kubernetes API JSON (camelCase, as
`ApiClient().sanitize_for_serialization` returns them), so it is tested on recorded shapes and
used the same way against EKS and the local cloud. No airflow or kubernetes import here.

Kubelet messages this module reads (pkg/kubelet/images/image_manager.go):
- hit, up to 1.32:  Container image "REF" already present on machine
- hit, 1.33+:       Container image "REF" already present on machine and can be accessed by the pod
- miss: Pulling image "REF", then Pulled with
  up to 1.26:  Successfully pulled image "REF" in 5.1s
  1.27-1.29:   Successfully pulled image "REF" in 5.123s (5.123s including waiting)
  1.30+:       ... (5.123s including waiting). Image size: 1073741824 bytes.
- also a miss: Failed "Failed to pull image ...", BackOff "Back-off pulling image ...",
  ErrImageNeverPull "... is not present with pull policy of Never".

Timing: condition and container timestamps are RFC3339 in whole seconds; events written with the
events.k8s.io API (the scheduler) carry `eventTime` as MicroTime, the kubelet's legacy events
leave it null and carry whole-second `firstTimestamp`. Each stage takes the most precise source
available (ties: the first in its preference list) and `sources` says which one it used. The
origin is the pod's creation; creationTimestamp is whole seconds too, so the creating client may
pass its own clock reading (`created_at`) for a sub-second origin (see startup_stages).
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

MANAGED_BY = "ml-container-cache"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
RUN_ID_LABEL = "ml-cache/run-id"
NODE_ANNOTATION = "ml-cache/node"
IMAGE_ANNOTATION = "ml-cache/image"
NAME_PREFIX = "mlc-validate-"
GPU_TOLERATION_KEY = "nvidia.com/gpu"
# the repo's manifests/ (plugins/ml_cache/ -> ../../); $ML_CACHE_VALIDATION_POD_TEMPLATE overrides it
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "manifests" / "validation-pod.yaml"
TEMPLATE_ENV = "ML_CACHE_VALIDATION_POD_TEMPLATE"
STAGES = ("scheduled", "image_ready", "container_started", "containers_ready", "ready")

_LABEL_VALUE_MAX = 63
_LABEL_VALUE_RE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_DNS1123_LABEL_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_QUOTED_REF_RE = re.compile(r'image "([^"]+)"')
_GO_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|us|µs|μs|ns|m|s)")
_PULL_DURATION_RE = re.compile(r"Successfully pulled image \"[^\"]+\" in ([0-9.hmsuµμn]+)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}


class ValidationInputError(ValueError):
    """A validation pod cannot be rendered or an Asset event does not follow the contract."""


# --------------------------------------------------------------------------- the validation pod


def label_value(text: str) -> str:
    """Make any text (an Airflow run id) a valid label value: <= 63 chars of [-A-Za-z0-9_.],
    alphanumeric at both ends; a hash suffix keeps shortened values distinct."""
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "-", str(text)).strip("-_.")
    if len(cleaned) > _LABEL_VALUE_MAX or cleaned != str(text):
        digest = hashlib.sha256(str(text).encode()).hexdigest()[:8]
        cleaned = f"{cleaned[:_LABEL_VALUE_MAX - 9].rstrip('-_.')}-{digest}".strip("-_.")
    return cleaned


def validation_pod_name(node_name: str, image: str, run_id: str | None = None) -> str:
    """`mlc-validate-<12 hex>`: DNS-1123, stable for one (node, image, run), so a retried task finds
    its pod instead of creating a second one, and two runs never collide."""
    key = "\n".join([node_name, image, run_id or ""])
    return NAME_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:12]


def validation_pod_manifest(
    *,
    namespace: str,
    image: str,
    node_name: str,
    active_deadline_seconds: int,
    name: str | None = None,
    run_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    toleration_key: str = GPU_TOLERATION_KEY,
    command: list[str] | None = None,
    template_path: str | Path | None = None,
) -> dict[str, Any]:
    """The validation pod for one (node, image), from manifests/validation-pod.yaml.

    The template is loaded as YAML and fields are set on the object: no value is ever formatted
    into YAML text. `command=None` keeps the image's own entrypoint (the demo images print
    "ready" and exit 0).
    """
    if not image or not isinstance(image, str):
        raise ValidationInputError(f"image must be a non-empty string, got {image!r}")
    if not node_name or not isinstance(node_name, str):
        raise ValidationInputError(f"node_name must be a non-empty string, got {node_name!r}")
    if type(active_deadline_seconds) is not int or active_deadline_seconds <= 0:
        raise ValidationInputError(f"active_deadline_seconds must be a positive int, got {active_deadline_seconds!r}")
    if not _DNS1123_LABEL_RE.fullmatch(namespace or ""):
        raise ValidationInputError(f"namespace {namespace!r} is not a DNS-1123 label")
    pod_name = name or validation_pod_name(node_name, image, run_id)
    if not _DNS1123_LABEL_RE.fullmatch(pod_name):
        raise ValidationInputError(f"pod name {pod_name!r} is not a DNS-1123 label")
    if command is not None and (not command or not all(isinstance(arg, str) for arg in command)):
        raise ValidationInputError(f"command must be a non-empty list of strings, got {command!r}")

    path = Path(template_path or os.environ.get(TEMPLATE_ENV) or DEFAULT_TEMPLATE)
    if not path.is_file():
        raise ValidationInputError(f"validation pod template {path} not found: mount the repo's manifests/ "
                                   f"there or point ${TEMPLATE_ENV} at validation-pod.yaml")
    manifest = yaml.safe_load(path.read_text())
    metadata = manifest["metadata"]
    metadata["name"] = pod_name
    metadata["namespace"] = namespace
    pod_labels = metadata.setdefault("labels", {})
    for key, value in (labels or {}).items():
        pod_labels[key] = label_value(value)
    pod_labels[MANAGED_BY_LABEL] = MANAGED_BY
    if run_id is not None:
        pod_labels[RUN_ID_LABEL] = label_value(run_id)
    # annotations hold the exact values, which labels cannot (length, characters)
    metadata.setdefault("annotations", {}).update({NODE_ANNOTATION: node_name, IMAGE_ANNOTATION: image})

    spec = manifest["spec"]
    spec["nodeName"] = node_name
    spec["activeDeadlineSeconds"] = active_deadline_seconds
    spec["tolerations"] = [{"key": toleration_key, "operator": "Exists", "effect": "NoSchedule"}]
    container = spec["containers"][0]
    container["image"] = image
    container["imagePullPolicy"] = "IfNotPresent"
    if command is not None:
        container["command"] = list(command)
    return manifest


# --------------------------------------------------------------------------- timestamps


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


def _sorted_events(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    def key(event: Mapping[str, Any]) -> tuple[int, datetime]:
        instant, _ = event_time(event)
        return (0, instant.at) if instant else (1, datetime.max)

    return sorted((e for e in events or [] if isinstance(e, Mapping)), key=key)


# --------------------------------------------------------------------------- cache hit or miss


def _event_image(event: Mapping[str, Any]) -> str | None:
    match = _QUOTED_REF_RE.search(str(event.get("message") or ""))
    return match.group(1) if match else None


def _normalised(ref: str) -> str:
    """Compare refs the way users write them: docker.io/library/ and :latest are implied."""
    text = ref.strip()
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    last = text.rsplit("/", 1)[-1]
    if "@" not in text and ":" not in last:
        text += ":latest"
    return text


def _from_kubelet(event: Mapping[str, Any]) -> bool:
    component = (event.get("source") or {}).get("component") or event.get("reportingComponent") or ""
    return not component or "kubelet" in component


def _pull_events(events: Iterable[Mapping[str, Any]], image: str | None) -> list[Mapping[str, Any]]:
    chosen = []
    for event in _sorted_events(events):
        if not _from_kubelet(event):
            continue
        if image is not None:
            named = _event_image(event)
            if named is not None and _normalised(named) != _normalised(image):
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


# --------------------------------------------------------------------------- start-up stages


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
    events = _sorted_events(events_of(pod, events))
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


# --------------------------------------------------------------------------- results and report


@dataclass
class NodeResult:
    """One validation pod: the node, the image, whether it came from the cache, how long it took."""

    node: str
    image: str
    instance_id: str | None = None
    pod_name: str | None = None
    cache_hit: bool | None = None
    pull_seconds: float | None = None
    stages: dict[str, float | None] = field(default_factory=dict)
    sources: dict[str, str | None] = field(default_factory=dict)
    total_seconds: float | None = None
    succeeded: bool = False
    outcome: str = ""
    passed: bool | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeResult:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def node_result(
    pod: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    *,
    image: str | None = None,
    node: str | None = None,
    instance_id: str | None = None,
    created_at: datetime | str | None = None,
) -> NodeResult:
    """Everything the report needs from one pod and its events (read after the pod finished).
    `created_at`: the creating client's clock just before the create call (see startup_stages)."""
    events = events_of(pod, events)
    spec = pod.get("spec") or {}
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    image = image or annotations.get(IMAGE_ANNOTATION) or ((spec.get("containers") or [{}])[0]).get("image") or ""
    stages = startup_stages(pod, events, created_at=created_at)
    succeeded, outcome = pod_outcome(pod)
    return NodeResult(
        node=node or spec.get("nodeName") or annotations.get(NODE_ANNOTATION) or "",
        image=image,
        instance_id=instance_id,
        pod_name=(pod.get("metadata") or {}).get("name"),
        cache_hit=cache_hit(events, image),
        pull_seconds=pull_seconds(events, image),
        stages={stage: stages[stage] for stage in STAGES},
        sources=stages["sources"],
        total_seconds=stages["total_seconds"],
        succeeded=succeeded,
        outcome=outcome,
    )


@dataclass
class ValidationReport:
    """The verdict over all (node, image) pods; `to_dict()` travels in XCom and the Asset event."""

    passed: bool
    max_startup_seconds: float
    results: list[NodeResult]
    failures: list[str]
    baselines: list[NodeResult] = field(default_factory=list)
    speedups: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "max_startup_seconds": self.max_startup_seconds,
            "nodes": sorted({r.node for r in self.results}),
            "images": sorted({r.image for r in self.results}),
            "results": [r.to_dict() for r in self.results],
            "failures": list(self.failures),
            "baselines": [b.to_dict() for b in self.baselines],
            "speedups": dict(self.speedups),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationReport:
        return cls(
            passed=bool(data["passed"]),
            max_startup_seconds=data["max_startup_seconds"],
            results=[NodeResult.from_dict(r) for r in data.get("results") or []],
            failures=list(data.get("failures") or []),
            baselines=[NodeResult.from_dict(b) for b in data.get("baselines") or []],
            speedups=dict(data.get("speedups") or {}),
        )


def _as_result(item: NodeResult | Mapping[str, Any]) -> NodeResult:
    return copy.deepcopy(item) if isinstance(item, NodeResult) else NodeResult.from_dict(item)


def _verdict(result: NodeResult, max_startup_seconds: float) -> tuple[bool, str]:
    if result.cache_hit is False:
        pulled = f", pulled in {result.pull_seconds:.3f}s" if result.pull_seconds is not None else ""
        return False, f"cache miss: the image was not on the node, the kubelet had to pull it{pulled}"
    if result.cache_hit is None:
        return False, "cache status unknown: no kubelet pull event for the image"
    if not result.succeeded:
        return False, f"pod did not succeed: {result.outcome}"
    if result.total_seconds is None:
        return False, "start-up time unknown: the pod never reported Ready or completion"
    if result.total_seconds > max_startup_seconds:
        return False, f"start-up {result.total_seconds:.3f}s over the {max_startup_seconds:g}s threshold"
    return True, f"cache hit, started in {result.total_seconds:.3f}s"


def speedup(cached_seconds: float | None, uncached_seconds: float | None) -> float | None:
    """How many times faster the cached start was; None when either is unknown. A cached start
    measured as 0 (same whole second) counts as 1 ms so the ratio stays finite."""
    if cached_seconds is None or uncached_seconds is None or cached_seconds < 0 or uncached_seconds < 0:
        return None
    return round(uncached_seconds / max(cached_seconds, 0.001), 1)


def evaluate(
    results: Iterable[NodeResult | Mapping[str, Any]],
    *,
    max_startup_seconds: float,
    baselines: Iterable[NodeResult | Mapping[str, Any]] = (),
    expected_nodes: Iterable[str] | None = None,
    expected_images: Iterable[str] | None = None,
) -> ValidationReport:
    """Pass only when every pod was a cache hit, succeeded and started within the threshold.

    No results at all is a failure too (no node runs the new version, or nothing was validated),
    and so is any (node, image) pair of expected_nodes x expected_images without a result.
    Baselines (uncached pods of the same image on the same instance type) are never judged; they
    give the per-image speed-up: slowest baseline over slowest cached start.
    """
    if max_startup_seconds <= 0:
        raise ValidationInputError(f"max_startup_seconds must be positive, got {max_startup_seconds!r}")
    checked = [_as_result(item) for item in results]
    failures = []
    for result in checked:
        result.passed, result.reason = _verdict(result, max_startup_seconds)
        if not result.passed:
            failures.append(f"{result.node} {result.image}: {result.reason}")
    if not checked:
        failures.append("no validation pods: no node of the node group runs the new launch template version")
    seen = {(r.node, _normalised(r.image)) for r in checked}
    for node in sorted(set(expected_nodes or ())):
        for image in sorted(set(expected_images or ())):
            if (node, _normalised(image)) not in seen:
                failures.append(f"{node} {image}: no validation result (pod never created or never read)")
    reference = [_as_result(item) for item in baselines]
    speedups = {}
    for image in sorted({b.image for b in reference}):
        cached = [r.total_seconds for r in checked if r.image == image and r.total_seconds is not None]
        uncached = [b.total_seconds for b in reference if b.image == image and b.total_seconds is not None]
        ratio = speedup(max(cached), max(uncached)) if cached and uncached else None
        if ratio is not None:
            speedups[image] = ratio
    return ValidationReport(passed=not failures, max_startup_seconds=max_startup_seconds, results=checked,
                            failures=failures, baselines=reference, speedups=speedups)


def _report(report: ValidationReport | Mapping[str, Any]) -> ValidationReport:
    return report if isinstance(report, ValidationReport) else ValidationReport.from_dict(report)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _hit(value: bool | None) -> str:
    return {True: "hit", False: "MISS", None: "unknown"}[value]


_COLUMNS = ("node", "instance", "image", "cache",
            "scheduled", "image_ready", "started", "cont_ready", "ready", "result")


def _rows(report: ValidationReport) -> list[list[str]]:
    rows = []
    for kind, items in (("", report.results), (" (baseline)", report.baselines)):
        for r in items:
            verdict = "baseline" if kind else ("PASS" if r.passed else "FAIL")
            rows.append([r.node + kind, r.instance_id or "-", r.image, _hit(r.cache_hit),
                         *(_seconds(r.stages.get(stage)) for stage in STAGES), verdict])
    return rows


def report_table(report: ValidationReport | Mapping[str, Any]) -> str:
    """A fixed-width table for the task log; seconds since pod creation, then the failures."""
    report = _report(report)
    rows = [list(_COLUMNS), *_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    numeric = set(range(4, 9))
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    verdict = "PASSED" if report.passed else "FAILED"
    lines.append(f"validation {verdict}: {len(report.results)} pod(s), threshold {report.max_startup_seconds:g}s")
    lines.extend(f"  {image}: cached start {ratio:g}x faster than uncached" for image, ratio in report.speedups.items())
    lines.extend(f"  failure: {failure}" for failure in report.failures)
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def report_markdown(report: ValidationReport | Mapping[str, Any]) -> str:
    """A Markdown summary for the run's note: verdict, per-pod table, speed-ups, failures."""
    report = _report(report)
    verdict = "passed" if report.passed else "FAILED"
    hits = sum(1 for r in report.results if r.cache_hit is True)
    lines = [
        f"### Cache validation {verdict}",
        "",
        f"{hits}/{len(report.results)} pods started from the cache; start-up threshold "
        f"{report.max_startup_seconds:g} s (seconds since pod creation).",
        "",
        "| Node | Instance | Image | Cache | Scheduled | Image ready | Started | Containers ready | Ready | Result |",
        "|---|---|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for row in _rows(report):
        node, instance, image, cache, *times, result = row
        lines.append("| " + " | ".join([_md(node), instance, f"`{_md(image)}`", cache, *times, result]) + " |")
    if report.speedups:
        lines += ["", *(f"- `{_md(image)}`: cached start **{ratio:g}x** faster than uncached"
                        for image, ratio in report.speedups.items())]
    if report.failures:
        lines += ["", "**Failures**", "", *(f"- {_md(failure)}" for failure in report.failures)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the Asset event contract


def read_ready_event(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check an `ml_container_cache_ready` event's extra and return its fields.

    Contract: snapshot_id, image_set, images [{ref, digest}], arch, validation (report), run_id.
    A data-team DAG calls this first, so a malformed event fails its run with a clear message.
    """
    if not isinstance(extra, Mapping) or not extra:
        raise ValidationInputError("the asset event has no extra: expected snapshot_id, images, ...")
    snapshot_id = extra.get("snapshot_id")
    if not isinstance(snapshot_id, str) or not re.fullmatch(r"snap-[0-9a-f]{8,17}", snapshot_id):
        raise ValidationInputError(f"asset event snapshot_id {snapshot_id!r} is not a snap-… id")
    images = extra.get("images")
    if not isinstance(images, list) or not images:
        raise ValidationInputError("asset event carries no images")
    for entry in images:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("ref"), str) or not entry.get("ref"):
            raise ValidationInputError(f"asset event image entry {entry!r} has no ref")
        digest = entry.get("digest")
        if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise ValidationInputError(f"asset event image {entry['ref']!r} has no sha256 digest: {digest!r}")
    validation = extra.get("validation")
    if isinstance(validation, Mapping) and validation.get("passed") is False:
        raise ValidationInputError("asset event says validation failed: it should never have been published")
    return {
        "snapshot_id": snapshot_id,
        "image_set": extra.get("image_set"),
        "images": [{"ref": entry["ref"], "digest": entry["digest"]} for entry in images],
        "arch": extra.get("arch"),
        "validation": validation,
        "run_id": extra.get("run_id"),
    }


def _repository(ref: str) -> str:
    """registry/repository of a ref, without tag or digest."""
    name = ref.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    if ":" in last:
        last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def pick_image(images: list[Mapping[str, str]], name: str) -> str:
    """The cached image a job needs, pinned by digest (`registry/repo@sha256:...`).

    `name` matches the repository: in full (`nvcr.io/nvidia/pytorch`), or by its last path
    components (`nvidia/pytorch`, `pytorch`). Exactly one image must match, so a job never
    silently runs another image than it asked for.
    """
    wanted = name.strip().strip("/")
    matches = []
    for entry in images:
        repository = _repository(entry["ref"])
        if repository == wanted or repository.endswith("/" + wanted):
            matches.append(entry)
    if len(matches) != 1:
        known = ", ".join(_repository(entry["ref"]) for entry in images) or "none"
        what = "no cached image" if not matches else f"{len(matches)} cached images"
        raise ValidationInputError(f"{what} named {name!r} in the cache (cached: {known})")
    entry = matches[0]
    return f"{_repository(entry['ref'])}@{entry['digest']}"
