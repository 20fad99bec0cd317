"""Which failures fail a task at once (ml_cache.errors), and which keep their retries."""

from __future__ import annotations

import pytest
from airflow.providers.amazon.aws.exceptions import WaiterMaxAttemptsError
from airflow.providers.common.compat.sdk import AirflowFailException
from botocore.exceptions import ClientError, ParamValidationError

from ml_cache.errors import (
    DeadlinePassed,
    PermanentFailure,
    deadline_passed,
    error_code,
    fail_fast,
    fail_fast_task,
    is_permanent,
)
from ml_cache.images import InvalidImageReference


def _aws_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "RunInstances")


@pytest.mark.parametrize("code", ["UnauthorizedOperation", "InvalidParameterValue", "IdempotentParameterMismatch",
                                  "Unsupported", "InstanceLimitExceeded", "VcpuLimitExceeded", "ValidationException",
                                  "AccessDeniedException", "InvalidBlockDeviceMapping"])
def test_requests_that_can_never_succeed_are_permanent(code):
    assert is_permanent(_aws_error(code))
    with pytest.raises(PermanentFailure, match=rf"\({code}\)") as failed, fail_fast():
        raise _aws_error(code)
    assert isinstance(failed.value, AirflowFailException)  # what Airflow does not retry
    assert error_code(failed.value.__cause__) == code


@pytest.mark.parametrize(("code", "status"), [
    ("RequestLimitExceeded", 503), ("InternalError", 500), ("InsufficientInstanceCapacity", 500),
    ("InvalidInstanceID.NotFound", 400), ("InvalidInstanceId", 400), ("ThrottlingException", 400)])
def test_throttling_server_errors_and_eventual_consistency_keep_their_retries(code, status):
    assert not is_permanent(_aws_error(code, status))
    with pytest.raises(ClientError), fail_fast():
        raise _aws_error(code, status)


def test_our_input_checks_and_botocores_parameter_checks_are_permanent():
    with pytest.raises(PermanentFailure, match="bad ref"), fail_fast():
        raise InvalidImageReference("bad ref")
    with pytest.raises(PermanentFailure, match="Parameter validation failed"), fail_fast():
        raise ParamValidationError(report="Invalid length for parameter ClientToken")


def test_other_exceptions_and_airflow_failures_pass_unchanged():
    with pytest.raises(RuntimeError, match="disk"), fail_fast():
        raise RuntimeError("disk full")
    with pytest.raises(DeadlinePassed), fail_fast():
        raise DeadlinePassed("waited 3 s")


def test_fail_fast_task_wraps_a_task_callable():
    @fail_fast_task
    def launch(code: str) -> str:
        raise _aws_error(code)

    assert launch.__name__ == "launch"
    with pytest.raises(PermanentFailure, match="UnauthorizedOperation"):
        launch("UnauthorizedOperation")
    with pytest.raises(ClientError):
        launch("RequestLimitExceeded")


def test_a_waiter_out_of_attempts_is_a_passed_deadline():
    # the event AwsBaseWaiterTrigger yields for WaiterMaxAttemptsError (the trigger tests show it live)
    event = {"status": "error", "message": str(WaiterMaxAttemptsError("Waiter error: max attempts reached")),
             "instance_id": "i-1"}
    assert deadline_passed(event)
    assert not deadline_passed({"status": "error", "message": "Builder i-1 did not reach running: terminated"})
    assert not deadline_passed({"status": "success", "instance_id": "i-1"})
    assert not deadline_passed(None)


def test_a_permanent_failure_logs_its_cause_in_one_line_and_keeps_no_internal_frames(caplog):
    import traceback

    def deep_in_a_library():
        raise _aws_error("UnauthorizedOperation")

    with pytest.raises(PermanentFailure) as failed, fail_fast():
        deep_in_a_library()
    assert error_code(failed.value.__cause__) == "UnauthorizedOperation"  # still chained, for the record
    printed = "".join(traceback.format_exception(failed.value))
    assert "deep_in_a_library" not in printed  # the replaced error's frames are gone
    assert "UnauthorizedOperation" in printed
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "Failed, not retried: An error occurred (UnauthorizedOperation) when calling the RunInstances operation: "
        "UnauthorizedOperation happened"]
