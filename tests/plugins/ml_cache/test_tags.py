"""Idempotency tokens come from the identity of the work, never from the try number."""

from __future__ import annotations

import string

from ml_cache.tags import CLIENT_TOKEN_MAX, client_token, run_tags


def test_same_work_same_token():
    first = client_token("dag", "manual__2026-11-29T01:00:00+00:00", "launch_builder", -1, "c6i.2xlarge", "subnet-1")
    again = client_token("dag", "manual__2026-11-29T01:00:00+00:00", "launch_builder", -1, "c6i.2xlarge", "subnet-1")
    assert first == again


def test_any_part_of_the_identity_changes_the_token():
    base = ("dag", "run", "launch_builder", -1, "c6i.2xlarge", "subnet-1")
    variants = [("dag2", *base[1:]), (base[0], "run2", *base[2:]), (*base[:2], "other", *base[3:]),
                (*base[:3], 0, *base[4:]), (*base[:4], "m6i.2xlarge", base[5]), (*base[:5], "subnet-2")]
    tokens = {client_token(*base)} | {client_token(*variant) for variant in variants}
    assert len(tokens) == 1 + len(variants)


def test_parts_cannot_be_shifted_into_each_other():
    assert client_token("a", "b/c", "t", -1) != client_token("a/b", "c", "t", -1)


def test_token_fits_run_instances():
    token = client_token("d" * 300, "r" * 300, "t" * 300, 12345, "x" * 300)
    assert len(token) <= CLIENT_TOKEN_MAX
    assert set(token) <= set(string.ascii_letters + string.digits + "-")


def test_run_tags_name_pipeline_run_and_role():
    assert run_tags("ml-container-cache", "run-1", role="builder") == {
        "ml-cache:pipeline": "ml-container-cache", "ml-cache:run-id": "run-1", "ml-cache:role": "builder"}
