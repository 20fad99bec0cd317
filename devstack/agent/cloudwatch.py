"""SendCommand's CloudWatchOutputConfig, as the real agent honours it: each step's stdout and stderr
streamed into the moto server's CloudWatch Logs while the step runs.

What amazon-ssm-agent does (read in its source, not copied):
- agent/runcommand/utils.go: the group is CloudWatchLogGroupName, else /aws/ssm/<DocumentName>;
  the stream prefix is <CommandId>/<InstanceId>.
- agent/framework/runpluginutil/runpluginutil.go: the step (plugin) id is appended, ':' and '*' made '-'.
- agent/framework/processor/executer/iohandler/iohandler.go: CreateLogGroup first (an existing group
  is fine; on another error nothing is streamed), streams <prefix>/stdout and <prefix>/stderr.
- agent/agentlogstocloudwatch/cloudwatchlogspublisher: the output file is read once a second
  (UploadFrequency) and sent with PutLogEvents, the stream created on its first upload; the step's
  end waits for the last upload.
Here: one event per line, the stream created when its first line is sent.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moto.core.utils import unix_time_millis, utcnow
from moto.logs.models import logs_backends

log = logging.getLogger(__name__)

DEFAULT_GROUP_PREFIX = "/aws/ssm/"
UPLOAD_SECONDS = 1.0


@dataclass(frozen=True)
class CloudWatchOutput:
    """Where an invocation's output goes: the account and region of the command, and the group."""

    account: str
    region: str
    group: str

    @classmethod
    def from_request(cls, config: dict[str, Any] | None, account: str, region: str,
                     document_name: str) -> CloudWatchOutput | None:
        """From SendCommand's CloudWatchOutputConfig; None when output streaming is off."""
        config = config or {}
        if str(config.get("CloudWatchOutputEnabled", "false")).lower() != "true":
            return None
        return cls(account, region, config.get("CloudWatchLogGroupName") or DEFAULT_GROUP_PREFIX + document_name)

    def as_response(self) -> dict[str, Any]:
        return {"CloudWatchLogGroupName": self.group, "CloudWatchOutputEnabled": True}


def stream_name(command_id: str, instance_id: str, step: str, output: str) -> str:
    step = step.replace(":", "-").replace("*", "-")
    return f"{command_id}/{instance_id}/{step}/{output}"


class StepStreamer:
    """Tails one step's stdout and stderr files into the group until `close`, which sends the rest."""

    def __init__(self, target: CloudWatchOutput, command_id: str, instance_id: str, step: str,
                 files: dict[str, Path]) -> None:
        self.backend = logs_backends[target.account][target.region]
        self.group = target.group
        self.streams = {output: stream_name(command_id, instance_id, step, output) for output in files}
        self.files = files
        self.offsets = dict.fromkeys(files, 0)
        self.created: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"cwl-{command_id[:8]}", daemon=True)

    def start(self) -> StepStreamer:
        if self.group not in self.backend.groups:  # the agent's CreateLogGroup
            self.backend.create_log_group(self.group, tags={})
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        try:
            while not self.stop.wait(UPLOAD_SECONDS):
                self._upload(final=False)
            self._upload(final=True)
        except Exception:  # the agent stops streaming on an error; the command goes on
            log.exception("streaming to CloudWatch Logs group %s stopped", self.group)

    def _upload(self, final: bool) -> None:
        for output, path in self.files.items():
            try:
                with path.open("rb") as handle:
                    handle.seek(self.offsets[output])
                    data = handle.read()
            except FileNotFoundError:
                continue
            complete = data if final else data[:data.rfind(b"\n") + 1]  # a partial line waits for its end
            if not complete:
                continue
            self.offsets[output] += len(complete)
            lines = [line for line in complete.decode("utf-8", errors="replace").splitlines() if line]
            if not lines:
                continue
            stream = self.streams[output]
            if stream not in self.created:
                self.backend.create_log_stream(self.group, stream)
                self.created.add(stream)
            now = int(unix_time_millis(utcnow()))
            self.backend.put_log_events(self.group, stream, [{"timestamp": now, "message": line} for line in lines])
