"""Failures that waiting cannot cure fail the task at once; every other error keeps its retries.

Airflow retries any exception but `AirflowFailException`. Bad input, a refused permission, a
parameter AWS rejects or a reused idempotency token with other parameters are as wrong on the next
try: retrying them only delays the failure by the retry delays and buries the cause in more log.
`fail_fast` turns exactly those into `PermanentFailure` (an `AirflowFailException`) with the cause
first in the message; throttling, 5xx and eventual-consistency `*.NotFound` codes stay retried.
An expected error names its cause in one log line; the error it replaces stays chained, but without
its frames (botocore's or pydantic's internals say nothing to the user).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from airflow.providers.common.compat.sdk import AirflowFailException
from botocore.exceptions import ClientError, ParamValidationError

from ml_cache.images import InvalidInputs

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

# Error codes that name a request that can never succeed as sent (EC2, SSM, EKS, IAM error references).
# EC2's quota and offering codes are here too: the fault catalog wants them failed with no retries burnt
# (a quota is not raised by waiting a minute; an instance type not offered in an AZ stays so).
PERMANENT_CODES = frozenset({
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
    "IdempotentParameterMismatch",
    "InstanceLimitExceeded",
    "InvalidBlockDeviceMapping",
    "InvalidClientTokenId",
    "InvalidDocument",  # SendCommand: the document's content no longer has the hash the DAG pinned
    "InvalidDocumentVersion",
    "InvalidParameter",
    "InvalidParameterCombination",
    "InvalidParameterException",
    "InvalidParameterValue",
    "InvalidParameterValueException",
    "MissingParameter",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "Unsupported",
    "UnsupportedOperation",
    "ValidationException",
    "VcpuLimitExceeded",
})


class PermanentFailure(AirflowFailException):
    """The task failed for a reason no retry can change (the message starts with the cause)."""


class DeadlinePassed(AirflowFailException):
    """A wait passed its configured deadline: not retried, so each deadline counts once in the run
    timeout (ml_cache.run_deadline)."""


# Failures whose message is the whole story for the user (a run note, a notification show it alone).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (PermanentFailure, DeadlinePassed, InvalidInputs)


# What AwsBaseWaiterTrigger's event carries when its waiter used up every attempt (WaiterMaxAttemptsError).
_MAX_ATTEMPTS = "max attempts reached"


def deadline_passed(event: Any) -> bool:
    """True for a waiter trigger's event that says the wait ran out of attempts, i.e. its deadline."""
    return (isinstance(event, dict) and event.get("status") != "success"
            and _MAX_ATTEMPTS in str(event.get("message", "")))


def error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, else None."""
    return error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else None


def is_permanent(error: BaseException) -> bool:
    """True for errors no retry can cure: our input checks, botocore's own parameter checks, and the
    AWS codes above."""
    if isinstance(error, InvalidInputs | ParamValidationError):
        return True
    return error_code(error) in PERMANENT_CODES


@contextmanager
def fail_fast() -> Iterator[None]:
    """Re-raise permanent errors as `PermanentFailure` (chained, so the original stays in the log)."""
    try:
        yield
    except AirflowFailException:
        raise
    except Exception as error:
        if not is_permanent(error):
            raise
        log.error("Failed, not retried: %s", error)  # the cause in one line, above Airflow's traceback
        raise PermanentFailure(str(error)) from error.with_traceback(None)


def fail_fast_task(func: F) -> F:
    """`fail_fast` around a task's callable: `@task` on top, `@fail_fast_task` below it."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with fail_fast():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
