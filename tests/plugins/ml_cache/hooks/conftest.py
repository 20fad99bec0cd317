"""Hooks against a plain moto server over HTTP (what moto implements) or the local cloud (what it lacks)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import AwsEndpoint, use_aws_connection


@pytest.fixture
def moto_conn(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> AwsEndpoint:
    return use_aws_connection(monkeypatch, "ml_cache_moto", moto_endpoint, "us-east-2")


@pytest.fixture
def run_tags() -> dict[str, str]:
    """Tags unique to one test: moto's state is process-wide and outlives the test."""
    return {"ml-cache:pipeline": "hooks-test", "ml-cache:run-id": f"run-{uuid.uuid4()}"}
