"""waiters/eks.json `nodegroup_update_successful`: Successful ends it; Failed and Cancelled fail it."""

from __future__ import annotations

import pytest

PARAMS = {"name": "cluster", "nodegroupName": "gpu", "updateId": "u-1"}


def _update(status: str) -> dict:
    return {"update": {"id": "u-1", "status": status, "type": "VersionUpdate", "params": [], "errors": []}}


@pytest.mark.parametrize(("responses", "expected"), [
    ([_update("Successful")], "success"),
    ([_update("InProgress"), _update("InProgress"), _update("Successful")], "success"),
    ([_update("InProgress")], "retry"),
    ([_update("Failed")], "failure"),
    ([_update("Cancelled")], "failure"),
    (["ResourceNotFoundException"], "error"),
], ids=["successful", "in-progress-then-successful", "in-progress", "failed", "cancelled", "not-found"])
def test_nodegroup_update_successful(waiter_outcome, responses, expected) -> None:
    assert waiter_outcome("eks", "nodegroup_update_successful", responses, **PARAMS) == expected
