"""The builder's progress lines, read back for the task log.

The script prints them on stderr (build_cache_helpers.progress_line, the one definition of the format);
the SSM agent streams that stderr into CloudWatch Logs while the command runs, and
ml_cache.triggers.builder_command reads it there and logs what `describe` makes of each line.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ml_cache.scripts.build_cache_helpers import PROGRESS_PREFIX, parse_progress

__all__ = ["PROGRESS_PREFIX", "ProgressReader", "describe", "parse_progress", "stream_name"]


def stream_name(command_id: str, instance_id: str, step: str, output: str = "stderr") -> str:
    """The stream the SSM agent writes a step's output to: <CommandId>/<InstanceId>/<step>/<stdout|stderr>.

    amazon-ssm-agent: agent/runcommand/utils.go (generateCloudWatchLogStreamPrefix),
    agent/framework/runpluginutil/runpluginutil.go (the step name appended, ':' and '*' made '-'),
    agent/framework/processor/executer/iohandler/iohandler.go (the "stdout"/"stderr" suffix).
    """
    step = step.replace(":", "-").replace("*", "-")
    return f"{command_id}/{instance_id}/{step}/{output}"


def _size(count: Any) -> str:
    value = float(count or 0)
    if value < 1000:
        return f"{value:.0f} B"
    for unit in ("KB", "MB"):
        value /= 1000
        if value < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} GB"


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


class ProgressReader:
    """Reads the new events of one log stream on each call and logs them; never fails the build.

    The stream appears only once the agent has output to send (ResourceNotFoundException until then, as
    for a missing group: `finish` warns when the command ended and no stream ever appeared); a denied
    read is warned about once and reading stops. The forward token is kept in
    memory only: a trigger rebuilt after a triggerer restart reads the stream from its start again.
    """

    PAGES_PER_READ = 20
    TAIL_LINES = 30

    def __init__(self, group: str, stream: str, log: logging.Logger) -> None:
        self.group, self.stream, self.log = group, stream, log
        self.token: str | None = None
        self.off = False
        self.found = False
        self.tail: collections.deque[str] = collections.deque(maxlen=self.TAIL_LINES)  # the other stderr lines

    async def read(self, logs: Any) -> None:
        """Log what the stream gained since the last call (`logs`: an aiobotocore CloudWatch Logs client)."""
        if self.off:
            return
        for _ in range(self.PAGES_PER_READ):
            request = {"logGroupName": self.group, "logStreamName": self.stream, "startFromHead": True}
            if self.token:
                request["nextToken"] = self.token
            try:
                page = await logs.get_log_events(**request)
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if code == "ResourceNotFoundException":
                    return  # not yet created by the agent (or no such group: see finish)
                self.off = True
                self.log.warning("No builder progress from CloudWatch Logs %s (%s): %s; the build goes on",
                                 self.group, code, error)
                return
            except BotoCoreError as error:
                self.off = True
                self.log.warning("No builder progress from CloudWatch Logs %s: %s; the build goes on",
                                 self.group, error)
                return
            self.found = True
            for event in page.get("events", []):
                self._line(event.get("message", "").rstrip("\n"))
            token = page.get("nextForwardToken")
            if not token or token == self.token:
                return
            self.token = token

    def finish(self) -> None:
        """After the command's last read: say so when its output never reached the group."""
        if not self.found and not self.off:
            self.off = True
            self.log.warning("No builder output in CloudWatch Logs %s stream %s: does the group exist, and may "
                             "the builder's role write to it (logs:CreateLogStream, logs:PutLogEvents)?",
                             self.group, self.stream)

    def _line(self, line: str) -> None:
        fields = parse_progress(line)
        if fields is not None:
            try:
                self.log.info("builder progress: %s", describe(fields))
            except (TypeError, ValueError):  # a field of another shape: the line as it came
                self.log.info("builder progress: %s", line[len(PROGRESS_PREFIX):])
        elif line.strip():
            self.tail.append(line)
            self.log.info("builder: %s", line)

    def stderr_tail(self, limit: int = 1500) -> str:
        return "\n".join(self.tail)[-limit:]
