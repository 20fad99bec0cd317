"""Tags and idempotency tokens: how retries and teardown find what a run created (and nothing else)."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

PIPELINE_TAG = "ml-cache:pipeline"
RUN_ID_TAG = "ml-cache:run-id"
PUBLISHED_TAG = "ml-cache:published"  # on a snapshot a build published: when (ISO 8601 UTC)
CLIENT_TOKEN_MAX = 64  # RunInstances ClientToken: at most 64 ASCII characters


def run_tags(pipeline: str, run_id: str, **extra: str) -> dict[str, str]:
    """The tags every resource of one pipeline run carries (plus `extra`, e.g. role=builder)."""
    tags = {PIPELINE_TAG: pipeline, RUN_ID_TAG: run_id}
    tags.update({f"ml-cache:{key}": value for key, value in extra.items()})
    return tags


class TaskTry(Protocol):
    """What a token needs of a task instance (the Task SDK's `context["ti"]`)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    max_tries: int
    task: Any  # its `retries`


def clear_generation(max_tries: int, retries: int) -> int:
    """The first try number of the task instance's current generation: 1 until it is cleared.

    A clear sets `max_tries = try_number + retries` (airflow.models.taskinstance.clear_task_instances)
    and a retry leaves it alone, so `max_tries - retries + 1` is the same for every try of one
    generation and grows with each clear (the Task SDK finds a generation's first try the same way in
    `RuntimeTaskInstance.get_first_reschedule_date`).
    """
    return max_tries - retries + 1


def client_token(ti: TaskTry, *attempt: str) -> str:
    """Idempotency token from the identity of the work and its clear generation, never the try number.

    A retried task (worker died after RunInstances) sends the same token and gets the same instance; a
    cleared task is new work: EC2 would answer its old token with the old, terminated instance for 24 h.
    `attempt` distinguishes the requests within one try (instance type, subnet).
    """
    generation = clear_generation(ti.max_tries, ti.task.retries or 0)
    return identity_token(ti.dag_id, ti.run_id, ti.task_id, str(ti.map_index), str(generation), *attempt)


def identity_token(*identity: str) -> str:
    """A token (at most 64 ASCII characters) that is the same exactly when `identity` is."""
    token = "mlc-" + hashlib.sha256("\x1f".join(identity).encode()).hexdigest()
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
