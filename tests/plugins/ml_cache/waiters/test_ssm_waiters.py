"""waiters/ssm.json `agent_online`: the instance listed and Online; anything else is retried."""

from __future__ import annotations

import pytest

INSTANCE = "i-0123456789abcdef0"
FILTERS = [{"Key": "InstanceIds", "Values": [INSTANCE]}]


def _info(*statuses: str) -> dict:
    return {"InstanceInformationList": [{"InstanceId": INSTANCE, "PingStatus": status} for status in statuses]}


@pytest.mark.parametrize(("responses", "expected"), [
    ([_info("Online")], "success"),
    ([_info(), _info("ConnectionLost"), _info("Online")], "success"),
    ([_info()], "retry"),  # not registered yet
    ([_info("ConnectionLost")], "retry"),
    ([_info("Inactive")], "retry"),
    (["InvalidInstanceInformationFilterValue"], "error"),
], ids=["online", "absent-lost-online", "absent", "connection-lost", "inactive", "error-response"])
def test_agent_online(waiter_outcome, responses, expected) -> None:
    assert waiter_outcome("ssm", "agent_online", responses, Filters=FILTERS) == expected
