"""Drive our JSON waiters with botocore itself over canned (Stubber-validated) responses."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore import xform_name
from botocore.exceptions import WaiterError
from botocore.stub import Stubber
from botocore.waiter import WaiterModel, create_waiter_with_client

from ml_cache.hooks._waiters import WAITERS_DIR


def waiter_model(service: str) -> WaiterModel:
    return WaiterModel(json.loads((WAITERS_DIR / f"{service}.json").read_text()))


def outcome(service: str, waiter_name: str, responses: list[dict[str, Any] | str], **params: Any) -> str:
    """How the waiter ends on `responses`, one per attempt (a str is an error code):
    success, failure (terminal acceptor), error (an unmatched error response) or retry (attempts used up)."""
    client = boto3.client(service, region_name="us-west-2", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    model = waiter_model(service)
    operation = xform_name(model.get_waiter(waiter_name).operation)
    waiter = create_waiter_with_client(waiter_name, model, client)
    with Stubber(client) as stubber:
        for response in responses:
            if isinstance(response, str):
                stubber.add_client_error(operation, service_error_code=response, http_status_code=400)
            else:
                stubber.add_response(operation, response)  # validated against the output shape
        try:
            waiter.wait(**params, WaiterConfig={"Delay": 0, "MaxAttempts": len(responses)})
        except WaiterError as error:
            stubber.assert_no_pending_responses()
            if "terminal failure" in str(error):
                return "failure"
            if "Max attempts exceeded" in str(error):
                return "retry"
            return "error"
        stubber.assert_no_pending_responses()
        return "success"


@pytest.fixture
def waiter_outcome() -> Any:
    return outcome
