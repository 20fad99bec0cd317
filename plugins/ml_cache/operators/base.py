"""The base of our AWS operators: the provider's connection fields and deferral to a waiter trigger."""

from __future__ import annotations

import math
from typing import Any, TypeVar

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger

HookT = TypeVar("HookT", bound=AwsBaseHook)


def waiter_attempts(timeout_seconds: int, delay_seconds: int) -> int:
    """A deadline expressed as waiter attempts."""
    return max(1, math.ceil(timeout_seconds / max(1, delay_seconds)))


class CacheAwsOperator(AwsBaseOperator[HookT]):
    """`AwsBaseOperator` (aws_conn_id, region_name, verify, botocore_config) plus `defer_until`."""

    def defer_until(self, trigger_class: type[AwsBaseWaiterTrigger], *, method_name: str, timeout_seconds: int,
                    poll_seconds: int, kwargs: dict[str, Any] | None = None, **trigger_args: Any) -> None:
        """Defer to `trigger_class` polling every `poll_seconds` until `timeout_seconds`.

        The deferred half talks to AWS exactly like the task: same connection, region, botocore config.
        """
        self.defer(
            trigger=trigger_class(
                waiter_delay=poll_seconds, waiter_max_attempts=waiter_attempts(timeout_seconds, poll_seconds),
                aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify,
                botocore_config=self.botocore_config, **trigger_args,
            ),
            method_name=method_name,
            kwargs=kwargs,
        )
