"""The base of our AWS operators: the provider's connection fields, deferral to a waiter trigger, and
failures that no retry can cure failing the task at once (ml_cache.errors) in every subclass."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.links.base_aws import BaseAwsLink
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger
from airflow.providers.common.compat.sdk import AirflowFailException

from ml_cache.errors import DeadlinePassed, deadline_passed, fail_fast

HookT = TypeVar("HookT", bound=AwsBaseHook)

# How long a task polls a wait's condition itself before deferring. A condition that holds at once or
# within seconds (the local cloud's FSR, a completed snapshot) then ends the wait in this try: a trigger
# that fires at once can fail the resumed try (apache/airflow#71580), which shows as a failed first try.
# On AWS these waits take minutes, so they still defer, after holding a worker slot this long at most.
SETTLE_SECONDS = 10


def waiter_attempts(timeout_seconds: int, delay_seconds: int) -> int:
    """A deadline expressed as waiter attempts."""
    return max(1, math.ceil(timeout_seconds / max(1, delay_seconds)))


def _failing_fast(execute: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(execute)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with fail_fast():
            return execute(self, *args, **kwargs)

    return wrapper


class CacheAwsOperator(AwsBaseOperator[HookT]):
    """`AwsBaseOperator` (aws_conn_id, region_name, verify, botocore_config) plus `defer_until`.

    The task runner enters an operator through `execute` or, after a deferral, `resume_execution`;
    both run under `fail_fast`, so a subclass gets PermanentFailure for what no retry cures without
    a line of its own. A resume whose waiter ran out of attempts (its deadline) and that fails
    raises DeadlinePassed: the next try would wait a whole deadline again.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "execute" in cls.__dict__:  # already behind BaseOperatorMeta's ExecutorSafeguard: wrap that
            cls.execute = _failing_fast(cls.__dict__["execute"])  # type: ignore[method-assign]

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        event = (next_kwargs or {}).get("event")
        try:
            with fail_fast():
                return super().resume_execution(next_method, next_kwargs, context)
        except AirflowFailException:
            raise
        except Exception as error:
            if not deadline_passed(event):
                raise
            raise DeadlinePassed(f"Deadline passed: {error}") from error

    def persist_link(self, context: Any, link: type[BaseAwsLink], **ids: str) -> None:
        """Keep what `link` needs (this connection's region and partition, the IDs) for the console link."""
        link.persist(context=context, operator=self, region_name=self.hook.conn_region_name,
                     aws_partition=self.hook.conn_partition, **ids)

    def holds_soon(self, condition: Callable[[], bool], *, poll_seconds: int, timeout_seconds: int) -> bool:
        """True when `condition()` holds now or within a short budget (SETTLE_SECONDS, at most a quarter of
        the wait's deadline), polled every `poll_seconds` here. Any error reads as "not yet": the trigger
        then waits and judges, as it did before this check."""
        deadline = time.monotonic() + min(SETTLE_SECONDS, timeout_seconds / 4)
        while True:
            try:
                if condition():
                    return True
            except Exception as error:  # the trigger's waiter decides what an error means
                self.log.debug("Not settled yet: %s", error)
                return False
            if time.monotonic() + poll_seconds > deadline:
                return False
            time.sleep(poll_seconds)

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
