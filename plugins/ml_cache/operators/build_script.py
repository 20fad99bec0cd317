"""The builder script over SSM Run Command: our document (ml_cache.ssm_document), fed its spec as data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from ml_cache.build_progress import parse_progress, stream_name
from ml_cache.builder_spec import build_spec, encode_spec
from ml_cache.errors import DeadlinePassed, PermanentFailure, fail_fast
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.links import RunCommandLink
from ml_cache.operators.base import CacheAwsOperator
from ml_cache.ssm_document import STEP_NAME
from ml_cache.triggers.builder_command import BuilderCommandTrigger

DELIVERY_TIMEOUT_SECONDS = 600
RUNNING = ("Pending", "InProgress", "Delayed")  # a command that may still change the volume


class RunBuilderScriptOperator(CacheAwsOperator[CacheSsmHook]):
    """Run our document on the builder: spec as data, timeout sized to the work, deferrable wait.

    On failure the error carries the tail of the script's stderr, so the run names the cause
    (the image that failed to pull) rather than only "exit code 1". With `log_group`, the SSM agent
    streams the script's output to CloudWatch Logs and the trigger logs its progress while it runs.
    """

    aws_hook_class = CacheSsmHook
    operator_extra_links = (RunCommandLink(),)
    template_fields: Sequence[str] = aws_template_fields(
        "builder", "document", "images", "platform", "pull_parallelism", "registry_credentials",
        "registry_endpoints", "timeout_seconds", "poll_seconds", "log_group")

    def __init__(self, *, action: str, builder: dict[str, Any], document: dict[str, str], images: list[str],
                 platform: str, pull_parallelism: int | None, registry_credentials: dict[str, Any],
                 registry_endpoints: dict[str, str], timeout_seconds: int, poll_seconds: int,
                 log_group: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.action = action
        self.builder = builder
        self.document = document
        self.images = images
        self.platform = platform
        self.pull_parallelism = pull_parallelism
        self.registry_credentials = registry_credentials
        self.registry_endpoints = registry_endpoints
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds
        self.log_group = log_group  # the SSM agent streams the script's output there; the trigger logs its progress

    def execute(self, context: Any) -> str:
        instance_id = self.builder["instance_id"]
        comment = f"ml-container-cache {self.action} {context['ti'].run_id}"[:100]
        earlier = self._earlier_command(instance_id, comment)
        if earlier is not None and earlier["Status"] == "Success":
            # A try that failed after its command succeeded (apache/airflow#71580: a trigger that fires at once
            # can fail the resumed try): use that result. Sending again would rerun the work, and the second
            # run's report (e.g. 0 bytes pulled) would replace what the build really did.
            self.log.info("Command %s of this run already succeeded on %s: using its result",
                          earlier["CommandId"], instance_id)
            return self.execute_complete(context, {"status": "success", "command_id": earlier["CommandId"]})
        if earlier is not None and earlier["Status"] in RUNNING:
            # never a second script on the same volume at once: wait for the one a lost try left running
            self.log.info("Command %s of this run is still %s on %s: waiting for it", earlier["CommandId"],
                          earlier["Status"], instance_id)
            return self._wait(earlier["CommandId"], instance_id)
        with fail_fast():  # bad spec, AccessDenied...: no retry helps
            spec = build_spec(self.action, images=list(self.images), platform=self.platform,
                              volume_id=self.builder["data_volume_id"], parallel=self.pull_parallelism,
                              registry_credentials=dict(self.registry_credentials),
                              registry_endpoints=dict(self.registry_endpoints))
            response = self.hook.conn.send_command(
                InstanceIds=[instance_id],
                DocumentName=self.document["name"],
                # Pinned: SSM refuses a version whose content is no longer what register_build_script checked.
                DocumentVersion=self.document["version"],
                DocumentHash=self.document["sha256"],
                DocumentHashType="Sha256",
                Parameters={"spec": [encode_spec(spec)], "executionTimeout": [str(self.timeout_seconds)]},
                TimeoutSeconds=DELIVERY_TIMEOUT_SECONDS,
                Comment=comment,  # what a retry finds this run's command by
                **({"CloudWatchOutputConfig": {"CloudWatchOutputEnabled": True,
                                               "CloudWatchLogGroupName": self.log_group}} if self.log_group else {}),
            )
        command_id = response["Command"]["CommandId"]
        self.persist_link(context, RunCommandLink, command_id=command_id, instance_id=instance_id)
        self.log.info("Sent %s (%s) to %s; deadline %s s", command_id, self.action, instance_id, self.timeout_seconds)
        return self._wait(command_id, instance_id)

    def _wait(self, command_id: str, instance_id: str) -> str:
        # the command's own timeout plus delivery slack
        self.defer_until(BuilderCommandTrigger, method_name="execute_complete", command_id=command_id,
                         instance_id=instance_id, timeout_seconds=self.timeout_seconds + DELIVERY_TIMEOUT_SECONDS,
                         poll_seconds=self.poll_seconds, log_group=self.log_group or None,
                         log_stream=stream_name(command_id, instance_id, STEP_NAME) if self.log_group else None)
        return command_id  # not reached: defer raises

    def _earlier_command(self, instance_id: str, comment: str) -> dict[str, Any] | None:
        """The newest invocation of our document on the builder that this run sent for this action (its Comment),
        None on a first try. A failed one is sent again: a script's exit code may be a registry's hiccup."""
        pages = self.hook.conn.get_paginator("list_command_invocations").paginate(InstanceId=instance_id)
        mine = [item for page in pages for item in page["CommandInvocations"]
                if item.get("Comment") == comment and item.get("DocumentName") == self.document["name"]]
        return max(mine, key=lambda item: item["RequestedDateTime"], default=None)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> str:
        event = validate_execute_complete_event(event)
        command_id = event["command_id"]
        if event.get("instance_lost"):  # stopped or terminated: no retry can finish the command there
            raise PermanentFailure(f"Builder script ({self.action}): {event['message']}")
        invocation = self.hook.get_command_invocation(command_id, self.builder["instance_id"])
        if event["status"] != "success" or invocation.get("Status") != "Success":
            stderr_tail = event.get("stderr_tail") or "\n".join(  # the trigger's (CloudWatch Logs) or SSM's first 8,000
                line for line in (invocation.get("StandardErrorContent") or "").strip().splitlines()
                if parse_progress(line) is None)[-1500:]
            status, details = invocation.get("Status"), invocation.get("StatusDetails")
            ended = status if details in (None, status) else f"{status}: {details}"  # TimedOut: DeliveryTimedOut
            raise failure_class(status, details)(
                f"Builder script ({self.action}) on {self.builder['instance_id']} ended "
                f"{ended} (exit code {invocation.get('ResponseCode')}, command {command_id})."
                f" stderr tail:\n{stderr_tail}"
            )
        return command_id


def failure_class(status: str | None, details: str | None) -> type[Exception]:
    """Only a script that failed (exit code) may succeed on a retry (a registry's hiccup). A command past
    its execution or delivery timeout, or our wait's, would wait that deadline again (ml_cache.run_deadline
    counts it once); one cancelled, undeliverable or denied is not cured by sending it again."""
    if status in ("TimedOut", "Pending", "InProgress", "Delayed"):  # still running: our wait's deadline passed
        return DeadlinePassed
    if status == "Cancelled" or details in ("Undeliverable", "AccessDenied", "InvalidPlatform", "Terminated"):
        return PermanentFailure
    return RuntimeError
