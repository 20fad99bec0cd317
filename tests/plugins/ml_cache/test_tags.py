"""Idempotency tokens come from the identity of the work and its clear generation, never the try number."""

from __future__ import annotations

import string
from types import SimpleNamespace

from ml_cache.tags import CLIENT_TOKEN_MAX, clear_generation, client_token, run_tags

RUN = "manual__2026-11-29T01:00:00+00:00"


def _ti(dag_id="dag", run_id=RUN, task_id="launch_builder", map_index=-1, *, max_tries=2, retries=2):
    """A task instance as the Task SDK hands it to execute (max_tries from the API server)."""
    return SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, max_tries=max_tries,
                           task=SimpleNamespace(retries=retries))


def test_same_work_same_token():
    assert client_token(_ti(), "c6i.2xlarge", "subnet-1") == client_token(_ti(), "c6i.2xlarge", "subnet-1")


def test_any_part_of_the_identity_changes_the_token():
    base = {"dag_id": "dag", "run_id": "run", "task_id": "launch_builder", "map_index": -1}
    variants = [{"dag_id": "dag2"}, {"run_id": "run2"}, {"task_id": "other"}, {"map_index": 0}]
    tokens = {client_token(_ti(**base), "c6i.2xlarge", "subnet-1")}
    tokens |= {client_token(_ti(**{**base, **variant}), "c6i.2xlarge", "subnet-1") for variant in variants}
    tokens |= {client_token(_ti(**base), "m6i.2xlarge", "subnet-1"), client_token(_ti(**base), "c6i.2xlarge", "s-2")}
    assert len(tokens) == 1 + len(variants) + 2


def test_parts_cannot_be_shifted_into_each_other():
    assert client_token(_ti("a", "b/c", "t")) != client_token(_ti("a/b", "c", "t"))


def test_token_fits_run_instances():
    token = client_token(_ti("d" * 300, "r" * 300, "t" * 300, 12345), "x" * 300)
    assert len(token) <= CLIENT_TOKEN_MAX
    assert set(token) <= set(string.ascii_letters + string.digits + "-")


def test_retries_of_one_generation_share_the_token():
    # max_tries does not change between the tries 1, 2 and 3 of a task with retries=2
    assert clear_generation(max_tries=2, retries=2) == 1
    assert client_token(_ti(max_tries=2)) == client_token(_ti(max_tries=2))


def test_each_clear_starts_a_new_generation_and_token():
    # cleared after its third try failed: max_tries = try_number (3) + retries (2); the next try is 4
    assert clear_generation(max_tries=5, retries=2) == 4
    # cleared again after try 4 succeeded: max_tries = 4 + 2
    assert clear_generation(max_tries=6, retries=2) == 5
    tokens = {client_token(_ti(max_tries=max_tries)) for max_tries in (2, 5, 6)}
    assert len(tokens) == 3


def test_a_task_without_retries_still_counts_its_clears():
    assert clear_generation(max_tries=0, retries=0) == 1
    assert client_token(_ti(max_tries=0, retries=None)) != client_token(_ti(max_tries=1, retries=None))


def test_run_tags_name_pipeline_run_and_role():
    assert run_tags("ml-container-cache", "run-1", role="builder") == {
        "ml-cache:pipeline": "ml-container-cache", "ml-cache:run-id": "run-1", "ml-cache:role": "builder"}
