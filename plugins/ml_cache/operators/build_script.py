"""The builder script over SSM Run Command: registered as our document, fed its spec as data."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.operators.ssm import SsmRunCommandOperator
from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.operators.builder import waiter_attempts

SCRIPT_PATH = Path(__file__).resolve().parent.parent / "scripts" / "build_cache.sh"
SSM_DOCUMENT_LIMIT = 64 * 1024
SSM_STDERR_LIMIT = 8000
DELIVERY_TIMEOUT_SECONDS = 600
# The script is written to a file and run by bash: SSM runs runCommand with `sh`, and the
# heredoc keeps our (static) script text byte for byte. The spec never appears in this text:
# SSM hands it over as the environment variable SSM_spec (interpolationType ENV_VAR).
BOOTSTRAP_HEAD = [
    "set -eu",
    'script="$(mktemp /tmp/ml-cache-build.XXXXXX)"',
    "trap 'rm -f \"$script\"' EXIT",
    "cat > \"$script\" <<'ML_CACHE_SCRIPT_EOF'",
]
BOOTSTRAP_TAIL = ["ML_CACHE_SCRIPT_EOF", 'bash "$script"']


def build_document(script_text: str | None = None) -> str:
    """The SSM Command document (schema 2.2) that runs the builder script on its spec."""
    script_text = script_text if script_text is not None else SCRIPT_PATH.read_text()
    if "ML_CACHE_SCRIPT_EOF" in script_text:
        raise ValueError("The builder script must not contain the heredoc delimiter")
    document = {
        "schemaVersion": "2.2",
        "description": "Pull container images into containerd on the data volume and verify them "
                       "(ml-container-cache builder).",
        "parameters": {
            "spec": {
                "type": "String",
                "description": "Base64 of the JSON build spec; delivered as the environment variable SSM_spec.",
                "allowedPattern": "^[A-Za-z0-9+/=]{1,65536}$",
                "interpolationType": "ENV_VAR",
            },
            "executionTimeout": {
                "type": "String",
                "default": "3600",
                "description": "Seconds the build may run.",
                "allowedPattern": "^[1-9][0-9]{0,5}$",
            },
        },
        "mainSteps": [{
            "action": "aws:runShellScript",
            "name": "buildCache",
            "inputs": {
                "timeoutSeconds": "{{ executionTimeout }}",
                "runCommand": [*BOOTSTRAP_HEAD, *script_text.splitlines(), *BOOTSTRAP_TAIL],
            },
        }],
    }
    content = json.dumps(document, indent=1, sort_keys=True)
    if len(content.encode()) > SSM_DOCUMENT_LIMIT:
        raise ValueError(f"SSM document would be {len(content.encode())} bytes, over the 64 KB limit")
    return content


def document_digest(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def register_document(hook: CacheSsmHook, name: str, tags: dict[str, str]) -> dict[str, str]:
    """Make `name`'s default version hold the current script; returns the version to run."""
    content = build_document()
    existing = hook.describe_document(name)
    if existing is None:
        created = hook.create_document(name, content, tags)
        return {"name": name, "version": created["DocumentVersion"], "sha256": document_digest(content)}
    default_version = existing["DefaultVersion"]
    if json.loads(hook.get_document_content(name, default_version)) == json.loads(content):
        return {"name": name, "version": default_version, "sha256": document_digest(content)}
    updated = hook.update_document(name, content)
    hook.set_default_document_version(name, updated["DocumentVersion"])
    return {"name": name, "version": updated["DocumentVersion"], "sha256": document_digest(content)}


def encode_spec(spec: dict[str, Any]) -> str:
    """The spec as one base64 token: data that cannot be read as shell text."""
    return base64.b64encode(json.dumps(spec, sort_keys=True).encode()).decode("ascii")


def build_spec(action: str, settings: dict[str, Any], builder: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": action,
        "images": list(settings["images"]),
        "platform": settings["platform"],
        "volume_id": builder["data_volume_id"],
        "parallel": settings["pull_parallelism"],
        "registry_credentials": dict(settings.get("registry_credentials") or {}),
    }


class RunBuilderScriptOperator(SsmRunCommandOperator):
    """SsmRunCommandOperator for our document: spec as data, timeout sized to the work, deferrable.

    On failure the error carries the tail of the script's stderr, so the run names the cause
    (the image that failed to pull) rather than only "exit code 1".
    """

    aws_hook_class = CacheSsmHook
    template_fields: Sequence[str] = aws_template_fields("settings", "builder", "document")

    def __init__(self, *, action: str, settings: Any, builder: Any, document: Any, **kwargs: Any) -> None:
        kwargs.setdefault("deferrable", True)
        super().__init__(document_name="(set at run time)", **kwargs)
        self.action = action
        self.settings = settings
        self.builder = builder
        self.document = document

    def execute(self, context: Any) -> str:
        timeout = self.settings["build_seconds"]
        self.document_name = self.document["name"]
        self.waiter_delay = self.settings["poll_seconds"]
        # The deadline of the wait is the command's own timeout plus delivery slack.
        self.waiter_max_attempts = waiter_attempts(timeout + DELIVERY_TIMEOUT_SECONDS, self.waiter_delay)
        self.run_command_kwargs = {
            "InstanceIds": [self.builder["instance_id"]],
            "DocumentVersion": self.document["version"],
            "Parameters": {
                "spec": [encode_spec(build_spec(self.action, self.settings, self.builder))],
                "executionTimeout": [str(timeout)],
            },
            "TimeoutSeconds": DELIVERY_TIMEOUT_SECONDS,
            "Comment": f"ml-container-cache {self.action} {context['ti'].run_id}"[:100],
        }
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> str:
        event = validate_execute_complete_event(event)
        if event["status"] != "success":
            raise RuntimeError(self._failure_message(event))
        return super().execute_complete(context, event)

    def _failure_message(self, event: dict[str, Any]) -> str:
        command_id = event.get("command_id")
        instance_id = self.builder["instance_id"]
        try:
            invocation = self.hook.get_command_invocation(command_id, instance_id)
        except Exception as error:  # the cause is still worth reporting without the stderr
            return f"Builder script ({self.action}) failed on {instance_id}: {event} ({error})"
        stderr_tail = (invocation.get("StandardErrorContent") or "").strip()[-1500:]
        return (
            f"Builder script ({self.action}) on {instance_id} ended {invocation.get('Status')} "
            f"(exit code {invocation.get('ResponseCode')}, command {command_id}). stderr tail:\n{stderr_tail}"
        )
