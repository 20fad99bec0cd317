"""Validate the one-line JSON report the builder script prints on stdout.

SSM's `Success` only means exit code 0, and GetCommandInvocation silently cuts stdout at
24,000 characters. So the DAG never trusts the status alone: it checks that the report is
complete and that every image it asked for is present, unpacked and at the expected digest.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ml_cache.images import PLATFORMS, InvalidImageReference, is_sha256_digest, parse_reference, show

SSM_STDOUT_LIMIT = 24000
REPORT_SCHEMA = 1


class BuildReportError(ValueError):
    """The builder's report is missing, cut, malformed or does not match what was asked."""


def _last_json_line(stdout: str) -> dict[str, Any]:
    if not isinstance(stdout, str) or not stdout.strip():
        raise BuildReportError("no report: the builder printed nothing on stdout")
    if len(stdout) >= SSM_STDOUT_LIMIT:
        raise BuildReportError(
            f"report truncated at {SSM_STDOUT_LIMIT:,} characters of SSM stdout "
            f"({len(stdout):,} characters received); the script must log to stderr, not stdout"
        )
    line = next(text.strip() for text in reversed(stdout.splitlines()) if text.strip())
    try:
        report = json.loads(line)
    except json.JSONDecodeError as error:
        if line.startswith("{") and error.msg != "Extra data":  # an object that never closes
            raise BuildReportError(
                f"report truncated: the JSON line is cut off or malformed ({error.msg} at character "
                f"{error.pos} of {len(line)}): {show(line)}"
            ) from error
        raise BuildReportError(f"report is not JSON ({error.msg}): last stdout line {show(line)}") from error
    if not isinstance(report, dict):
        raise BuildReportError(f"report is not a JSON object: {show(line)}")
    return report


def _check_header(report: dict[str, Any], action: str, volume_id: str | None) -> None:
    schema = report.get("schema")
    if type(schema) is not int or schema != REPORT_SCHEMA:
        raise BuildReportError(f"report schema {show(schema)} is not {REPORT_SCHEMA}")
    if report.get("action") != action:
        raise BuildReportError(f"report action {show(report.get('action'))} is not {action!r}")
    if report.get("status") != "ok":
        detail = report.get("error") or report.get("message")
        suffix = f": {detail}" if detail else ""
        raise BuildReportError(f"builder reported status {show(report.get('status'))}{suffix}")
    if volume_id is not None and report.get("volume_id") != volume_id:
        raise BuildReportError(
            f"report is for volume {show(report.get('volume_id'))}, expected {volume_id!r}"
        )


def _non_negative_int(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise BuildReportError(f"{what} must be a non-negative integer, got {show(value)}")
    return value


def _canonical(ref: object, where: str) -> str:
    try:
        return str(parse_reference(ref))  # type: ignore[arg-type]
    except InvalidImageReference as error:
        raise BuildReportError(f"{where}: {error}") from error


def _match_expected(reported_ref: str, expected: dict[str, str]) -> str | None:
    """Find the expected ref a reported one stands for: the same canonical ref, else the only
    expected ref with the same name and tag (the digests are compared afterwards)."""
    if reported_ref in expected:
        return reported_ref
    reported = parse_reference(reported_ref)
    candidates = [
        key
        for key in expected
        if (image := parse_reference(key)).name == reported.name and image.tag == reported.tag
    ]
    return candidates[0] if len(candidates) == 1 else None


def _check_images(report: dict[str, Any], expected_refs: list[str]) -> list[dict[str, Any]]:
    expected = {_canonical(ref, "expected ref"): ref for ref in expected_refs}
    images = report.get("images")
    if not isinstance(images, list):
        raise BuildReportError(f"report has no images list (got {show(images)})")
    found: dict[str, dict[str, Any]] = {}
    for entry in images:
        if not isinstance(entry, dict):
            raise BuildReportError(f"report image entry is not an object: {show(entry)}")
        reported_ref = _canonical(entry.get("ref"), "report image ref")
        key = _match_expected(reported_ref, expected)
        if key is None:
            raise BuildReportError(f"report lists an image that was not requested: {entry.get('ref')!r}")
        if key in found:
            raise BuildReportError(f"report lists image {expected[key]!r} twice")
        if entry.get("unpacked") is not True:
            raise BuildReportError(
                f"image {expected[key]!r} is not unpacked (unpacked={show(entry.get('unpacked'))})"
            )
        digest = entry.get("digest")
        if not is_sha256_digest(digest):
            raise BuildReportError(f"image {expected[key]!r} has no valid digest (got {show(digest)})")
        for pinned in (parse_reference(key).digest, parse_reference(reported_ref).digest):
            if pinned is not None and digest != pinned:
                raise BuildReportError(
                    f"image {expected[key]!r} was pinned to {pinned} but the builder reported {digest}"
                )
        size = _non_negative_int(entry.get("bytes", 0), f"bytes of image {expected[key]!r}")
        found[key] = {**entry, "ref": key, "digest": digest, "unpacked": True, "bytes": size}
    missing = [expected[key] for key in expected if key not in found]
    if missing:
        raise BuildReportError(f"report is missing requested image(s): {', '.join(map(repr, missing))}")
    return [found[key] for key in expected]


def _check_totals(report: dict[str, Any], images: list[dict[str, Any]]) -> dict[str, Any]:
    totals = report.get("totals")
    totals = {} if totals is None else totals
    if not isinstance(totals, dict):
        raise BuildReportError(f"report totals is not an object: {show(totals)}")
    count = totals.get("images", len(images))
    if count != len(images):
        raise BuildReportError(f"report totals.images is {show(count)} but {len(images)} images are listed")
    total_bytes = _non_negative_int(totals.get("bytes", sum(i["bytes"] for i in images)), "totals.bytes")
    normalised = {**totals, "images": len(images), "bytes": total_bytes}
    if "filesystem_used_bytes" in totals:
        _non_negative_int(totals["filesystem_used_bytes"], "totals.filesystem_used_bytes")
    return normalised


def _check_timings(report: dict[str, Any]) -> dict[str, float]:
    timings = report.get("timings")
    timings = {} if timings is None else timings
    if not isinstance(timings, dict):
        raise BuildReportError(f"report timings is not an object: {show(timings)}")
    for name, seconds in timings.items():
        valid = isinstance(seconds, int | float) and not isinstance(seconds, bool)
        if not valid or not math.isfinite(seconds) or seconds < 0:
            raise BuildReportError(f"timing {name!r} must be a non-negative number, got {show(seconds)}")
    return {name: float(seconds) for name, seconds in timings.items()}


VOLUME_FLAGS = ("restored", "grown", "trimmed")
VOLUME_BYTES = ("filesystem_bytes_before", "filesystem_bytes_after", "bytes_pruned", "bytes_pulled")
VOLUME_LISTS = ("removed_images", "reused_images")  # capped by the builder; `<name>_total` counts all


def _check_volume(report: dict[str, Any]) -> dict[str, Any] | None:
    """How the builder found its data volume and what it changed (None from a builder that predates it)."""
    volume = report.get("volume")
    if volume is None:
        return None
    if not isinstance(volume, dict):
        raise BuildReportError(f"report volume is not an object: {show(volume)}")
    for name in VOLUME_FLAGS:
        if type(volume.get(name)) is not bool:
            raise BuildReportError(f"volume.{name} must be true or false, got {show(volume.get(name))}")
    reason = volume.get("reformatted_reason")
    if reason is not None and (not isinstance(reason, str) or not reason or volume["restored"]):
        raise BuildReportError(f"volume.reformatted_reason must be null or, on a volume not restored, "
                               f"a non-empty reason; got {show(reason)} (restored={volume['restored']})")
    checked = {name: _non_negative_int(volume.get(name), f"volume.{name}") for name in VOLUME_BYTES}
    for name in VOLUME_LISTS:
        names = volume.get(name)
        if not isinstance(names, list) or not all(isinstance(item, str) for item in names):
            raise BuildReportError(f"volume.{name} must be a list of image names, got {show(names)}")
        total = _non_negative_int(volume.get(f"{name}_total", len(names)), f"volume.{name}_total")
        if total < len(names):
            raise BuildReportError(f"volume.{name}_total is {total} but {len(names)} names are listed")
        checked |= {name: names, f"{name}_total": total}
    return {**volume, **checked, "reformatted_reason": reason}


def parse_build_report(
    stdout: str,
    expected_refs: list[str],
    *,
    volume_id: str | None = None,
    platform: str | None = None,
) -> dict:
    """Return the build report with refs canonical, images in `expected_refs` order and `volume` checked
    (None when absent), or raise BuildReportError saying what is wrong with it."""
    if not expected_refs:
        raise BuildReportError("no expected image refs given to check the report against")
    report = _last_json_line(stdout)
    _check_header(report, "build", volume_id)
    reported_platform = report.get("platform")
    if reported_platform is not None and reported_platform not in PLATFORMS.values():
        raise BuildReportError(
            f"report platform {show(reported_platform)} is not one of {list(PLATFORMS.values())}"
        )
    if platform is not None and reported_platform != platform:
        raise BuildReportError(f"report is for platform {show(reported_platform)}, expected {platform!r}")
    images = _check_images(report, expected_refs)
    if report.get("quiesced") is not True:
        raise BuildReportError(
            f"volume was not quiesced (quiesced={show(report.get('quiesced'))}): not safe to snapshot"
        )
    return {
        **report,
        "images": images,
        "totals": _check_totals(report, images),
        "timings": _check_timings(report),
        "volume": _check_volume(report),
    }


def parse_quiesce_report(stdout: str, *, volume_id: str) -> dict:
    """Return the quiesce report once it proves the volume is unmounted and containerd stopped."""
    report = _last_json_line(stdout)
    _check_header(report, "quiesce", volume_id)
    if report.get("mounted") is not False:
        raise BuildReportError(f"volume {volume_id} is still mounted (mounted={show(report.get('mounted'))})")
    if report.get("containerd_running") is not False:
        raise BuildReportError(
            f"containerd is still running (containerd_running={show(report.get('containerd_running'))})"
        )
    return report
