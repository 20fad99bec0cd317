"""Every CacheAwsOperator fails at once for what no retry cures, without a line of its own (operators/base.py)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from ml_cache.errors import DeadlinePassed, PermanentFailure
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.operators.base import CacheAwsOperator

MAX_ATTEMPTS = {"status": "error", "message": "Waiter error: max attempts reached", "instance_id": "i-1"}
TERMINAL = {"status": "error", "message": "Builder i-1 did not reach running: terminated", "instance_id": "i-1"}


def _aws_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "no"}}, "RunInstances")


class Calls(CacheAwsOperator[CacheEc2Hook]):
    """Raises what it is told to, in execute and in its resume method, like our operators' AWS calls."""

    aws_hook_class = CacheEc2Hook

    def __init__(self, *, error: Exception | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def execute(self, context: Any) -> str:
        if self.error:
            raise self.error
        return "done"

    def done(self, context: Any, event: dict[str, Any] | None = None) -> str:
        if self.error:
            raise self.error
        if event["status"] != "success":
            raise RuntimeError(f"i-1 never ran: {event['message']}")
        return "resumed"


class Inherits(Calls):
    """A subclass that does not define execute keeps its parent's behaviour."""


@pytest.mark.parametrize("operator_class", [Calls, Inherits])
def test_execute_fails_at_once_for_a_permanent_aws_error(operator_class):
    operator = operator_class(task_id="t", error=_aws_error("UnauthorizedOperation"))
    with pytest.raises(PermanentFailure, match="UnauthorizedOperation"):
        operator.execute({})


def test_execute_keeps_retries_for_a_transient_error_and_returns_results():
    with pytest.raises(ClientError, match="RequestLimitExceeded"):
        Calls(task_id="t", error=_aws_error("RequestLimitExceeded")).execute({})
    assert Calls(task_id="t").execute({}) == "done"


def test_a_resume_after_the_waiters_deadline_that_fails_is_a_passed_deadline():
    with pytest.raises(DeadlinePassed, match=r"Deadline passed: i-1 never ran: Waiter error: max attempts") as failed:
        Calls(task_id="t").resume_execution("done", {"event": MAX_ATTEMPTS}, {})
    assert isinstance(failed.value.__cause__, RuntimeError)


def test_a_resume_after_a_terminal_state_keeps_the_operators_own_error():
    with pytest.raises(RuntimeError, match="did not reach running: terminated"):
        Calls(task_id="t").resume_execution("done", {"event": TERMINAL}, {})


def test_a_resume_fails_at_once_for_a_permanent_aws_error_and_returns_results():
    with pytest.raises(PermanentFailure, match="AccessDenied"):
        Calls(task_id="t", error=_aws_error("AccessDenied")).resume_execution("done", {"event": TERMINAL}, {})
    assert Calls(task_id="t").resume_execution("done", {"event": {"status": "success"}}, {}) == "resumed"
