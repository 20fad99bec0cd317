"""Tags and idempotency tokens: how retries and teardown find what a run created (and nothing else)."""

from __future__ import annotations

import hashlib
from typing import Any

PIPELINE_TAG = "ml-cache:pipeline"
RUN_ID_TAG = "ml-cache:run-id"
PUBLISHED_TAG = "ml-cache:published"  # on a snapshot a build published: when (ISO 8601 UTC)
CLIENT_TOKEN_MAX = 64  # RunInstances ClientToken: at most 64 ASCII characters


def run_tags(pipeline: str, run_id: str, **extra: str) -> dict[str, str]:
    """The tags every resource of one pipeline run carries (plus `extra`, e.g. role=builder)."""
    tags = {PIPELINE_TAG: pipeline, RUN_ID_TAG: run_id}
    tags.update({f"ml-cache:{key}": value for key, value in extra.items()})
    return tags


def client_token(dag_id: str, run_id: str, task_id: str, map_index: int, *attempt: str) -> str:
    """Idempotency token from the identity of the work, never from the try number.

    A retried task (worker died after RunInstances) sends the same token and gets the same instance;
    `attempt` distinguishes the fallbacks within one try (instance type, subnet), each its own request.
    """
    identity = "\x1f".join([dag_id, run_id, task_id, str(map_index), *attempt])
    token = "mlc-" + hashlib.sha256(identity.encode()).hexdigest()
    return token[:CLIENT_TOKEN_MAX]


def tag_filters(tags: dict[str, str]) -> list[dict[str, Any]]:
    """EC2 `Filters` that match every one of `tags`."""
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in sorted(tags.items())]


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """EC2's `[{"Key", "Value"}]` shape, sorted."""
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def tag_specifications(resource_types: list[str], tags: dict[str, str]) -> list[dict[str, Any]]:
    """EC2 `TagSpecifications` that tag each resource type at creation (no untagged window)."""
    return [{"ResourceType": resource_type, "Tags": tag_list(tags)} for resource_type in resource_types]
