"""The builder's progress lines, read back for the task log.

The script prints them on stderr (build_cache_helpers.progress_line, the one definition of the format);
the SSM agent streams that stderr into CloudWatch Logs while the command runs, and
ml_cache.triggers.builder_command reads it there and logs what `describe` makes of each line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ml_cache.scripts.build_cache_helpers import PROGRESS_PREFIX, parse_progress

__all__ = ["PROGRESS_PREFIX", "describe", "parse_progress", "stream_name"]

STEP_NAME = "buildCache"  # the document's only step (ml_cache.ssm_document): part of the log stream's name


def stream_name(command_id: str, instance_id: str, output: str = "stderr") -> str:
    """The stream the SSM agent writes a step's output to: <CommandId>/<InstanceId>/<step>/<stdout|stderr>.

    amazon-ssm-agent: agent/runcommand/utils.go (generateCloudWatchLogStreamPrefix),
    agent/framework/runpluginutil/runpluginutil.go (the step name appended, ':' and '*' made '-'),
    agent/framework/processor/executer/iohandler/iohandler.go (the "stdout"/"stderr" suffix).
    """
    return f"{command_id}/{instance_id}/{STEP_NAME}/{output}"


def _size(count: Any) -> str:
    value = float(count or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def describe(fields: Mapping[str, Any]) -> str:
    """One line for the task log: which image, bytes done of total and percent."""
    phase, image = fields.get("phase"), fields.get("image", "?")
    if phase == "fetch":
        done, total = int(fields.get("done") or 0), int(fields.get("total") or 0)
        percent = f" ({100 * done // total}%)" if total else ""
        return (f"fetching: {_size(done)} of {_size(total)}{percent}, {fields.get('images_done', 0)} of "
                f"{fields.get('images', '?')} image(s) in, {fields.get('layers_applied', 0)} layer(s) applied; "
                f"now {image}")
    if phase == "image":
        state = "fetched" if fields.get("ok") else "not prefetched (ctr pulls it)"
        return f"image {image} {state}: {_size(fields.get('bytes'))}"
    if phase == "pulled":
        return f"image {image} {'pulled' if fields.get('ok') else 'failed to pull'}"
    return f"{phase}: {image}"
