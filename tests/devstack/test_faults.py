"""Fault settings (registry fronts, ECR, lost instances): validated; counted faults used up one by one."""

from __future__ import annotations

import pytest

from devstack import faults


@pytest.fixture(autouse=True)
def _clean() -> None:
    faults.reset()
    yield
    faults.reset()


def test_counted_429s_are_used_up_one_request_at_a_time() -> None:
    faults.update({"registry_429_manifests": 2})
    assert [faults.take_one("registry_429_manifests") for _ in range(3)] == [True, True, False]
    assert faults.current().registry_429_manifests == 0


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_a_429_count_must_be_a_whole_number_of_requests(value) -> None:
    with pytest.raises(ValueError, match="registry_429_manifests must be a non-negative number of requests"):
        faults.update({"registry_429_manifests": value})
    assert faults.current().registry_429_manifests == 0


def test_ecr_tokens_last_12_hours_unless_the_fault_shortens_them(monkeypatch) -> None:
    monkeypatch.delenv("DEVSTACK_ECR_TOKEN_SECONDS", raising=False)
    assert faults.delay("ecr_token_seconds") == 12 * 3600  # API_GetAuthorizationToken.html: valid for 12 hours
    faults.update({"ecr_token_seconds": 5})
    assert faults.delay("ecr_token_seconds") == 5.0
    assert faults.delay("registry_retry_after_seconds") == 1.0


@pytest.mark.parametrize("value", ["stopped", "terminated", None])
def test_an_instance_is_lost_mid_command_by_stopping_or_terminating(value) -> None:
    assert faults.update({"instance_lost_mid_command": value})["instance_lost_mid_command"] == value


@pytest.mark.parametrize("value", ["stopping", "shutting-down", True])
def test_an_instance_loss_other_than_stopped_or_terminated_is_refused(value) -> None:
    with pytest.raises(ValueError, match=r"instance_lost_mid_command must be one of \['stopped', 'terminated'\]"):
        faults.update({"instance_lost_mid_command": value})
    assert faults.current().instance_lost_mid_command is None
