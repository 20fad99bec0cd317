"""The producers' real outputs, chained as in a build then a rollout, for round-trip tests.

resolve_images' result -> decide_build's decision -> the builder's report line for its pinned refs
-> parse_build_report and named_as_configured (verify_build_report) -> snapshot_metadata (published)
-> cache_event_extra -> read_cache_event -> snapshot_from_event (the rollout's target) -> ready_event_extra with the
report that validation's evaluate makes from a recorded pod. Each step's output goes through JSON,
as Airflow stores XComs and event extras.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_cache.assets import cache_event_extra, read_cache_event, ready_event_extra
from ml_cache.published import Published, snapshot_metadata
from ml_cache.refresh import decide
from ml_cache.registry import ResolvedImage
from ml_cache.report import parse_build_report
from ml_cache.resolution import ImageResolution
from ml_cache.rollout_target import snapshot_from_event
from ml_cache.settings import load_config, resolve_build_settings
from ml_cache.steps.build import build_provenance
from ml_cache.validation.report import evaluate, node_result, report_markdown

FIXTURES = Path(__file__).parent / "validation" / "fixtures"
SNAPSHOT_ID = "snap-0123456789abcdef0"
PYTORCH_DIGEST = "sha256:" + "ab" * 32
BUSYBOX_DIGEST = "sha256:" + "cd" * 32
IMAGES = ["nvcr.io/nvidia/pytorch:24.08-py3", "public.ecr.aws/docker/library/busybox:1.37"]
BUILD_RUN_ID = "scheduled__2026-11-30T03:00:00+00:00"
ROLLOUT_RUN_ID = "asset_triggered__2026-11-30T04:12:00+00:00"


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def resolution() -> ImageResolution:
    """What resolve_images returns for IMAGES (through JSON, as its XCom)."""
    images = [ResolvedImage(ref=ref, digest=digest, platform_digest="sha256:" + f"{n}e" * 32, platform="linux/amd64",
                            compressed_bytes=1000 + n, authenticated="anonymous")
              for n, (ref, digest) in enumerate(zip(IMAGES, (PYTORCH_DIGEST, BUSYBOX_DIGEST), strict=True))]
    resolved = ImageResolution(images=images, volume_size_gib=60, registry_credentials={}, registry_endpoints={})
    return ImageResolution.model_validate(_json(resolved.model_dump(mode="json")))


def build_report_line(digests: tuple[str, str] = (PYTORCH_DIGEST, BUSYBOX_DIGEST)) -> str:
    """The builder script's one JSON report line for the pinned refs it was given (resolution())."""
    images = [{"ref": ref, "digest": digest, "unpacked": True, "bytes": 1000 + n}
              for n, (ref, digest) in enumerate(zip(resolution().pinned_images, digests, strict=True))]
    return json.dumps({
        "schema": 1, "action": "build", "status": "ok", "platform": "linux/amd64",
        "volume_id": "vol-0123456789abcdef0", "images": images, "quiesced": True,
        "totals": {"images": len(images), "bytes": sum(image["bytes"] for image in images),
                   "filesystem_used_bytes": 9000},
        "timings": {"prepare_seconds": 1.0, "pull_seconds": 20.0, "verify_seconds": 0.5, "quiesce_seconds": 0.5},
    }) + "\n"


def build_settings(**build: Any) -> Any:
    """The settings of a build of IMAGES (the repo's config with the form's `build` values over it)."""
    config = load_config(str(Path(__file__).resolve().parents[3] / "plugins/ml_cache/defaults/ml_container_cache.yaml"))
    config["build"]["images"] = list(IMAGES)
    config["build"]["allowed_registries"] = ["nvcr.io", "public.ecr.aws"]
    config["aws"]["subnet_ids"] = ["subnet-0123456789abcdef0"]  # a build needs private subnets
    return resolve_build_settings(config, build, region="us-west-2")


BUILDER_SHA256 = "ee" * 32


def decision(published: Published | None = None, **build: Any) -> dict[str, Any]:
    """decide_build's result (through JSON, as its XCom) for IMAGES against `published` (default: nothing)."""
    published = published or Published(snapshot_id=None)
    snapshot = ({"SnapshotId": published.snapshot_id, "State": "completed", "VolumeSize": 60, "Encrypted": True,
                 "KmsKeyId": "arn:aws:kms:us-west-2:123456789012:key/k"} if published.snapshot_id else None)
    fsr = {"us-west-2a": "enabled", "us-west-2b": "enabled", "us-west-2c": "enabled"}
    return _json(decide(build_settings(**build), resolution(), builder_sha256=BUILDER_SHA256, published=published,
                        snapshot=snapshot, fsr_states=fsr))


def published_metadata(snapshot_id: str = SNAPSHOT_ID, start: datetime | None = None) -> dict[str, Any]:
    """What the build's publish_snapshot writes to the metadata parameter."""
    resolved = resolution()
    report = resolved.named_as_configured(parse_build_report(build_report_line(), resolved.pinned_images,
                                                             volume_id="vol-0123456789abcdef0",
                                                             platform="linux/amd64"))
    snapshot = {"SnapshotId": snapshot_id, "StartTime": start or datetime(2026, 11, 30, 3, 40, tzinfo=UTC)}
    return _json(snapshot_metadata(report=_json(report), snapshot=snapshot,
                                   fsr_states={"us-west-2b": "enabled", "us-west-2a": "enabled"},
                                   run_id=BUILD_RUN_ID, arch="x86_64", platform="linux/amd64",
                                   volume_size_gib=resolved.volume_size_gib,
                                   fingerprint_inputs=decision()["fingerprint_inputs"],
                                   build=build_provenance(decision(), _json(report))))


def cache_extra() -> dict[str, Any]:
    """The build's `ml_container_cache` event extra."""
    return _json(cache_event_extra(published_metadata()))


def rollout_target() -> dict[str, Any]:
    """The rollout's resolve_snapshot output on that event."""
    return _json(snapshot_from_event(read_cache_event(cache_extra())))


def validation_report() -> dict[str, Any]:
    """What validate_nodes returns for a recorded cache-hit pod: report dict plus its Markdown."""
    data = json.loads((FIXTURES / "cached_pod.json").read_text())
    report = evaluate([node_result(data["pod"], data["events"])], max_startup_seconds=60)
    return _json({**report.to_dict(), "markdown": report_markdown(report)})


def ready_extra() -> dict[str, Any]:
    """The rollout's publish_ready `ml_container_cache_ready` event extra."""
    return _json(ready_event_extra(rollout_target(), validation_report(), ROLLOUT_RUN_ID))
