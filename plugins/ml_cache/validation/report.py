"""The verdict over all validation pods, the cached-vs-uncached speed-up, and its renderings.

`ValidationReport.to_dict()` travels in XCom and the `ml_container_cache_ready` event with every value
in full; the renderings (the plain table for the task log, the Markdown summary in XCom) show short
refs, node names and digests (`sha256:1234abcd…`) so that they fit a screen. No airflow or kubernetes
import here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ml_cache.images import InvalidInputs, canonical_reference, parse_reference
from ml_cache.validation.evidence import cache_hit, events_of, pull_seconds
from ml_cache.validation.manifest import (
    CREATED_AT_ANNOTATION,
    IMAGE_ANNOTATION,
    NODE_ANNOTATION,
    ValidationInputError,
)
from ml_cache.validation.timing import STAGES, pod_outcome, startup_stages


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
    `created_at`: the creating client's clock just before the create call (see startup_stages);
    by default the pod's created-at annotation, which the creating client wrote."""
    events = events_of(pod, events)
    spec = pod.get("spec") or {}
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    created_at = created_at or annotations.get(CREATED_AT_ANNOTATION)
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


def is_cold(baseline: NodeResult | Mapping[str, Any]) -> bool:
    """A baseline measured an uncached start unless the kubelet found its image on the node (a node that
    pulled it before: a warm start, left out of the speed-up and of the uncached series)."""
    hit = baseline.cache_hit if isinstance(baseline, NodeResult) else baseline.get("cache_hit")
    return hit is not True


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
    give the per-image speed-up: slowest cold baseline over slowest cached start.
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
    seen = {(r.node, canonical_reference(r.image)) for r in checked}
    for node in sorted(set(expected_nodes or ())):
        for image in sorted(set(expected_images or ())):
            if (node, canonical_reference(image)) not in seen:
                failures.append(f"{node} {image}: no validation result (pod never created or never read)")
    reference = [_as_result(item) for item in baselines]
    speedups = {}
    for image in sorted({b.image for b in reference}):
        cached = [r.total_seconds for r in checked if r.image == image and r.total_seconds is not None]
        uncached = [b.total_seconds for b in reference
                    if b.image == image and b.total_seconds is not None and is_cold(b)]
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


_DIGEST_RE = re.compile(r"\b(sha256:[0-9a-f]{8})[0-9a-f]{56}\b")


def short_digests(text: str) -> str:
    """Every sha256 digest in `text` as `sha256:<first 8 hex>…`."""
    return _DIGEST_RE.sub(r"\1…", text)


def short_image(ref: str) -> str:
    """`pytorch:24.08-py3@sha256:1234abcd…` for `nvcr.io/nvidia/pytorch:24.08-py3@sha256:<64 hex>`: the
    repository's last component, the tag, the digest abbreviated (the full ref stays in the report's data)."""
    try:
        parsed = parse_reference(ref)
    except InvalidInputs:
        return short_digests(ref)
    text = parsed.repository.rsplit("/", 1)[-1]
    text += f":{parsed.tag}" if parsed.tag is not None else ""
    text += f"@{parsed.digest}" if parsed.digest is not None else ""
    return short_digests(text)


def short_node(node: str) -> str:
    """`ip-10-0-12-34` for `ip-10-0-12-34.us-west-2.compute.internal` (the instance id column is unique)."""
    return node.split(".", 1)[0]


def _rows(report: ValidationReport) -> list[list[str]]:
    rows = []
    for kind, items in (("", report.results), (" (baseline)", report.baselines)):
        for r in items:
            verdict = ("baseline" if is_cold(r) else "baseline, warm: not counted") if kind else (
                "PASS" if r.passed else "FAIL")
            rows.append([short_node(r.node) + kind, r.instance_id or "-", short_image(r.image), _hit(r.cache_hit),
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
    lines.extend(f"  {short_image(image)}: cached start {ratio:g}x faster than uncached"
                 for image, ratio in report.speedups.items())
    lines.extend(f"  failure: {short_digests(failure)}" for failure in report.failures)
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def report_markdown(report: ValidationReport | Mapping[str, Any]) -> str:
    """A Markdown summary (XCom `markdown`, for a view that renders it): verdict, per-pod table, speed-ups,
    failures."""
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
        lines += ["", *(f"- `{_md(short_image(image))}`: cached start **{ratio:g}x** faster than uncached"
                        for image, ratio in report.speedups.items())]
    if report.failures:
        lines += ["", "**Failures**", "", *(f"- {_md(short_digests(failure))}" for failure in report.failures)]
    return "\n".join(lines) + "\n"
