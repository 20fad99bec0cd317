"""The builder's report must fit in what SSM returns of its stdout: an image list too long for it is
refused before any builder runs, instead of failing verify_build_report after the build.

GetCommandInvocation returns at most 24,000 characters of StandardOutputContent and silently cuts
the rest (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetCommandInvocation.html).
The report (`build_cache_helpers.py report build`) is one JSON line: per image its pinned ref, digest,
`unpacked` and bytes; in `volume`, up to LIST_CAP names of reused images (this set's) and of removed
ones (an earlier set's: unknown here, so counted at the longest name the grammar allows).
"""

from __future__ import annotations

import json

from ml_cache.images import DIGEST_HEX_LENGTHS, NAME_TOTAL_LENGTH_MAX, InvalidInputs, parse_reference, show
from ml_cache.scripts.build_cache_helpers import LIST_CAP

SSM_STDOUT_MAX = 24_000
TAG_LENGTH_MAX = 128  # the grammar's tag: [\w][\w.-]{0,127}
# A byte count in the report never exceeds the largest gp3 volume (16 TiB, settings.fields.GP3_SIZE_GIB).
_BYTES = 16384 * 1024**3
_SECONDS = 172800.99  # SSM's longest executionTimeout, with the report's two decimals
_LONGEST_DIGEST = f"sha512:{'f' * DIGEST_HEX_LENGTHS['sha512']}"
# `name:tag@digest` at the grammar's limits: the longest name containerd can list for a removed image.
LONGEST_STORED_NAME = "n" * NAME_TOTAL_LENGTH_MAX + ":" + "t" * TAG_LENGTH_MAX + "@" + _LONGEST_DIGEST
_RESOLVED_DIGEST = "sha256:" + "f" * DIGEST_HEX_LENGTHS["sha256"]  # what a tag resolves to (registry.py)


def _compact(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def pinned(ref: str) -> tuple[str, str]:
    """The ref as the builder pulls and reports it (`name[:tag]@digest`) and its digest, at their
    longest: a tag resolves to a sha256 digest, a pinned ref keeps its own."""
    image = parse_reference(ref)
    if image.digest is not None:
        return str(image), image.digest
    return f"{image}@{_RESOLVED_DIGEST}", _RESOLVED_DIGEST


def _image_chars(ref: str) -> int:
    name, digest = pinned(ref)
    return _compact({"ref": name, "digest": digest, "unpacked": True, "bytes": _BYTES})


def _frame_chars(refs: list[str]) -> int:
    """Everything but the images' entries, at its longest (and the line's newline)."""
    reused = sorted((pinned(ref)[0] for ref in refs), key=len, reverse=True)[:LIST_CAP]
    frame = {
        "schema": 99, "action": "build", "status": "ok", "platform": "linux/arm64/v8",
        "volume_id": "vol-" + "f" * 17, "images": [],
        "totals": {"images": len(refs), "bytes": _BYTES, "filesystem_used_bytes": _BYTES},
        "timings": {phase: _SECONDS for phase in ("prepare_seconds", "pull_seconds", "verify_seconds",
                                                  "quiesce_seconds")},
        "quiesced": True,
        "volume": {"restored": False, "reformatted_reason": "x" * 64, "filesystem_bytes_before": _BYTES,
                   "filesystem_bytes_after": _BYTES, "grown": False, "trimmed": False,
                   "removed_images": [LONGEST_STORED_NAME] * LIST_CAP, "removed_images_total": 10**6,
                   "reused_images": reused, "reused_images_total": len(refs),
                   "bytes_pruned": _BYTES, "bytes_pulled": _BYTES},
    }
    return _compact(frame) + 1


def report_chars(refs: list[str]) -> int:
    """The longest the builder's report line can be for these image refs."""
    entries = sum(_image_chars(ref) for ref in refs) + max(len(refs) - 1, 0)  # the commas between entries
    return _frame_chars(refs) + entries


def check_report_fits(refs: list[str]) -> None:
    """InvalidInputs naming `images` when the report for `refs` could exceed what SSM returns."""
    chars = report_chars(refs)
    if chars <= SSM_STDOUT_MAX:
        return
    fitting = next(count for count in range(len(refs), -1, -1) if report_chars(refs[:count]) <= SSM_STDOUT_MAX)
    longest = max(refs, key=len)
    raise InvalidInputs(
        f"images: the builder's report for these {len(refs)} images can take {chars:,} characters, more than "
        f"the {SSM_STDOUT_MAX:,} of its output SSM returns (GetCommandInvocation), so the build could not be "
        f"verified; the first {fitting} fit: split the list into several caches (longest ref {show(longest)})")
