"""The builder script over SSM Run Command: our document (ml_cache.ssm_document), fed its spec as data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from ml_cache.builder_spec import build_spec, encode_spec
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.operators.builder import trigger_connection, waiter_attempts
from ml_cache.triggers.ssm import SsmCommandExecutedTrigger

DELIVERY_TIMEOUT_SECONDS = 600


class RunBuilderScriptOperator(AwsBaseOperator[CacheSsmHook]):
    """Run our document on the builder: spec as data, timeout sized to the work, deferrable wait.

    On failure the error carries the tail of the script's stderr, so the run names the cause
    (the image that failed to pull) rather than only "exit code 1".
    """

    aws_hook_class = CacheSsmHook
    template_fields: Sequence[str] = aws_template_fields("settings", "builder", "document")

    def __init__(self, *, action: str, settings: Any, builder: Any, document: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.action = action
        self.settings = settings
        self.builder = builder
        self.document = document

    def execute(self, context: Any) -> str:
        timeout = self.settings["build_seconds"]
        instance_id = self.builder["instance_id"]
        spec = build_spec(
            self.action,
            images=self.settings["images"],
            platform=self.settings["platform"],
            volume_id=self.builder["data_volume_id"],
            parallel=self.settings["pull_parallelism"],
            registry_credentials=self.settings.get("registry_credentials") or {},
        )
        response = self.hook.conn.send_command(
            InstanceIds=[instance_id],
            DocumentName=self.document["name"],
            DocumentVersion=self.document["version"],
            Parameters={
                "spec": [encode_spec(spec)],
                "executionTimeout": [str(timeout)],
            },
            TimeoutSeconds=DELIVERY_TIMEOUT_SECONDS,
            Comment=f"ml-container-cache {self.action} {context['ti'].run_id}"[:100],
        )
        command_id = response["Command"]["CommandId"]
        self.log.info("Sent %s (%s) to %s; deadline %s s", command_id, self.action, instance_id, timeout)
        delay = self.settings["poll_seconds"]
        self.defer(
            trigger=SsmCommandExecutedTrigger(
                command_id=command_id, instance_id=instance_id, waiter_delay=delay,
                # the command's own timeout plus delivery slack
                waiter_max_attempts=waiter_attempts(timeout + DELIVERY_TIMEOUT_SECONDS, delay),
                **trigger_connection(self),
            ),
            method_name="execute_complete",
        )
        return command_id  # not reached: defer raises

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> str:
        event = validate_execute_complete_event(event)
        command_id = event["command_id"]
        invocation = self.hook.get_command_invocation(command_id, self.builder["instance_id"])
        if event["status"] != "success" or invocation.get("Status") != "Success":
            stderr_tail = (invocation.get("StandardErrorContent") or "").strip()[-1500:]
            raise RuntimeError(
                f"Builder script ({self.action}) on {self.builder['instance_id']} ended "
                f"{invocation.get('Status')} (exit code {invocation.get('ResponseCode')}, command {command_id})."
                f" stderr tail:\n{stderr_tail}"
            )
        return command_id
