"""The builder script over SSM Run Command: registered as our document, fed its spec as data."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.operators.base import CacheAwsOperator
from ml_cache.triggers.ssm import SsmCommandExecutedTrigger

SCRIPT_PATH = Path(__file__).resolve().parent.parent / "scripts" / "build_cache.sh"
SSM_DOCUMENT_LIMIT = 64 * 1024
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


class RunBuilderScriptOperator(CacheAwsOperator[CacheSsmHook]):
    """Run our document on the builder: spec as data, timeout sized to the work, deferrable wait.

    On failure the error carries the tail of the script's stderr, so the run names the cause
    (the image that failed to pull) rather than only "exit code 1".
    """

    aws_hook_class = CacheSsmHook
    template_fields: Sequence[str] = aws_template_fields(
        "builder", "document", "images", "platform", "pull_parallelism", "registry_credentials",
        "timeout_seconds", "poll_seconds")

    def __init__(self, *, action: str, builder: dict[str, Any], document: dict[str, str], images: list[str],
                 platform: str, pull_parallelism: int, registry_credentials: dict[str, Any], timeout_seconds: int,
                 poll_seconds: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.action = action
        self.builder = builder
        self.document = document
        self.images = images
        self.platform = platform
        self.pull_parallelism = pull_parallelism
        self.registry_credentials = registry_credentials
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds

    def execute(self, context: Any) -> str:
        instance_id = self.builder["instance_id"]
        spec = build_spec(self.action, images=list(self.images), platform=self.platform,
                          volume_id=self.builder["data_volume_id"], parallel=self.pull_parallelism,
                          registry_credentials=dict(self.registry_credentials))
        response = self.hook.conn.send_command(
            InstanceIds=[instance_id],
            DocumentName=self.document["name"],
            DocumentVersion=self.document["version"],
            Parameters={"spec": [encode_spec(spec)], "executionTimeout": [str(self.timeout_seconds)]},
            TimeoutSeconds=DELIVERY_TIMEOUT_SECONDS,
            Comment=f"ml-container-cache {self.action} {context['ti'].run_id}"[:100],
        )
        command_id = response["Command"]["CommandId"]
        self.log.info("Sent %s (%s) to %s; deadline %s s", command_id, self.action, instance_id, self.timeout_seconds)
        # the command's own timeout plus delivery slack
        self.defer_until(SsmCommandExecutedTrigger, method_name="execute_complete", command_id=command_id,
                         instance_id=instance_id, timeout_seconds=self.timeout_seconds + DELIVERY_TIMEOUT_SECONDS,
                         poll_seconds=self.poll_seconds)
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
