"""The cache's metrics, sent through Airflow's own metrics ([metrics] statsd_on / otel_on decide where):
every name is defined here, and the steps call these with what they already hold (the published metadata,
the builder's report, the validation report). A metric that cannot be sent never fails a task.

Names (tagged `arch`, the build's also `pipeline`; StatsD without tag support sees the names only):
- ml_cache.build.published (count), ml_cache.build.up_to_date (count: the weekly run found nothing changed)
- ml_cache.build.bytes_pulled, ml_cache.snapshot.images, ml_cache.snapshot.image_bytes,
  ml_cache.snapshot.filesystem_used_bytes, ml_cache.fsr.availability_zones (gauges)
- ml_cache.build.pull (timer, the builder's pull phase)
- ml_cache.validation.passed / ml_cache.validation.failed (count), ml_cache.validation.cache_hits and
  ml_cache.validation.cache_misses (gauges: validation pods whose image was / was not on the node already)
- ml_cache.validation.cached_start and ml_cache.validation.uncached_start (timers per image, tag `image`),
  ml_cache.validation.speedup (gauge per image: uncached over cached start)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk.observability import stats

from ml_cache.validation.report import is_cold

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def image_tag(ref: str) -> str:
    """A short, StatsD-safe name for an image: repository base name and tag, no digest."""
    name = ref.split("@", 1)[0].rsplit("/", 1)[-1]
    return _UNSAFE.sub("_", name)[:100] or "image"


def _send(kind: str, name: str, value: Any = None, **tags: str) -> None:
    try:
        if kind == "incr":
            stats.incr(name, tags=tags)
        elif kind == "gauge":
            stats.gauge(name, value if isinstance(value, int) else float(value), tags=tags)
        else:
            stats.timing(name, timedelta(seconds=float(value)), tags=tags)
    except Exception as error:  # metrics are a side channel: never a task's failure
        log.warning("metric %s not sent: %s", name, error)


def build_published(metadata: Mapping[str, Any], report: Mapping[str, Any], *, pipeline: str) -> None:
    """A build that published its snapshot."""
    tags = {"pipeline": pipeline, "arch": str(metadata.get("arch") or "")}
    _send("incr", "ml_cache.build.published", **tags)
    build, totals = metadata.get("build") or {}, metadata.get("totals") or {}
    images = metadata.get("images") or []
    gauges = {
        "ml_cache.build.bytes_pulled": build.get("bytes_pulled"),
        "ml_cache.snapshot.images": len(images),
        "ml_cache.snapshot.image_bytes": sum(int(image.get("bytes") or 0) for image in images),
        "ml_cache.snapshot.filesystem_used_bytes": totals.get("filesystem_used_bytes"),
        "ml_cache.fsr.availability_zones": len(metadata.get("fsr_availability_zones") or []),
    }
    for name, value in gauges.items():
        if value is not None:
            _send("gauge", name, value, **tags)
    pull = (report.get("timings") or {}).get("pull_seconds")
    if pull is not None:
        _send("timing", "ml_cache.build.pull", pull, **tags)


def build_up_to_date(*, pipeline: str, arch: str) -> None:
    """A scheduled or manual run that found the published cache current (nothing launched)."""
    _send("incr", "ml_cache.build.up_to_date", pipeline=pipeline, arch=arch)


def rollout_validated(report: Mapping[str, Any], *, arch: str | None) -> None:
    """A rollout's validation report (ValidationReport.to_dict())."""
    tags = {"arch": arch or ""}
    _send("incr", "ml_cache.validation.passed" if report.get("passed") else "ml_cache.validation.failed", **tags)
    results = report.get("results") or []
    _send("gauge", "ml_cache.validation.cache_hits", sum(1 for r in results if r.get("cache_hit")), **tags)
    _send("gauge", "ml_cache.validation.cache_misses", sum(1 for r in results if r.get("cache_hit") is False), **tags)
    cold = [b for b in report.get("baselines") or [] if is_cold(b)]  # a warm baseline measured no pull
    for name, pods in (("ml_cache.validation.cached_start", results), ("ml_cache.validation.uncached_start", cold)):
        for pod in pods:
            if pod.get("total_seconds") is not None:
                _send("timing", name, pod["total_seconds"], image=image_tag(pod.get("image") or ""), **tags)
    for image, ratio in (report.get("speedups") or {}).items():
        _send("gauge", "ml_cache.validation.speedup", ratio, image=image_tag(image), **tags)
