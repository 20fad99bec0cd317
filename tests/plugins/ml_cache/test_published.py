"""The published state in SSM: the writer's parameters read back by the reader, on a moto server.

A moto server (not `mock_aws`), reached through the `aws_default` connection like AWS is.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from ml_cache.published import NO_CACHE, Published, StalePublish, publish_snapshot, read_published, restore_snapshot
from ml_cache.rollout_target import snapshot_from_published
from tests.plugins.ml_cache import producers

OLD = "snap-0aaaaaaaaaaaaaaa0"
NEW = "snap-0bbbbbbbbbbbbbbb0"


@pytest.fixture
def ssm(moto_endpoint, monkeypatch):
    from ml_cache.hooks.ssm import CacheSsmHook

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"region_name": "us-west-2", "endpoint_url": moto_endpoint}}))
    return CacheSsmHook(aws_conn_id="aws_default")


@pytest.fixture
def names():
    """Parameter names of this test only (the server lives for the session)."""
    root = f"/ml-cache-{uuid.uuid4().hex[:8]}"
    return {"parameter": f"{root}/snapshot-id", "metadata_parameter": f"{root}/snapshot-metadata"}


def metadata(snapshot_id: str, hour: int) -> dict:
    return producers.published_metadata(snapshot_id, start=datetime(2026, 11, 30, hour, tzinfo=UTC))


def test_nothing_published_yet(ssm, names):
    assert read_published(ssm, **names) == Published(None, {})


def test_terraform_placeholder_is_no_snapshot(ssm, names):
    ssm.put_parameter(names["parameter"], NO_CACHE)
    ssm.put_parameter(names["metadata_parameter"], "none")  # not JSON
    assert read_published(ssm, **names) == Published(None, {})
    ssm.put_parameter(names["metadata_parameter"], "[1, 2]")  # JSON, not an object
    assert read_published(ssm, **names).metadata == {}


def test_published_snapshot_reads_back_into_the_rollout(ssm, names):
    written = metadata(NEW, 3)
    result = publish_snapshot(ssm, **names, metadata=written)
    assert result["parameter"] == names["parameter"] and result["previous_snapshot_id"] is None
    assert result["parameter_version"] == 1 and result["metadata_parameter_version"] == 1
    assert ssm.get_parameter(names["parameter"])["Value"] == NEW  # bare id: Terraform reads it
    published = read_published(ssm, **names)
    assert published == Published(NEW, written)
    target = snapshot_from_published(published)
    assert target["snapshot_id"] == NEW and target["arch"] == "x86_64"
    assert [image["digest"] for image in target["images"]] == [producers.PYTORCH_DIGEST, producers.BUSYBOX_DIGEST]


def test_an_older_snapshot_never_overwrites_a_newer_one(ssm, names):
    publish_snapshot(ssm, **names, metadata=metadata(NEW, 5))
    with pytest.raises(StalePublish, match=f"already holds {NEW}") as refused:
        publish_snapshot(ssm, **names, metadata=metadata(OLD, 4))
    assert isinstance(refused.value, AirflowFailException)  # no retry: the newer snapshot stays newer
    assert read_published(ssm, **names).snapshot_id == NEW
    newer = "snap-0ccccccccccccccc0"
    assert publish_snapshot(ssm, **names, metadata=metadata(newer, 6))["previous_snapshot_id"] == NEW
    assert read_published(ssm, **names).snapshot_id == newer


def test_metadata_that_describes_another_snapshot_does_not_refuse_a_publish(ssm, names):
    """Only the published snapshot's own start time counts: stray metadata of another id cannot block it."""
    ssm.put_parameter(names["parameter"], OLD)
    ssm.put_parameter(names["metadata_parameter"], json.dumps(metadata(NEW, 9)))
    assert publish_snapshot(ssm, **names, metadata=metadata(NEW.replace("b", "c"), 5))["previous_snapshot_id"] == OLD


def test_restore_after_a_failed_rollout(ssm, names):
    publish_snapshot(ssm, **names, metadata=metadata(OLD, 3))
    publish_snapshot(ssm, **names, metadata=metadata(NEW, 4))
    assert restore_snapshot(ssm, **names, failed_snapshot_id=NEW, previous_snapshot_id=OLD) == OLD
    # described as fully as when it was built (images, fingerprint), so the next build compares against it
    assert read_published(ssm, **names) == Published(OLD, {**metadata(OLD, 3), "rolled_back_from": NEW})


def test_restore_of_a_snapshot_the_history_does_not_describe(ssm, names):
    publish_snapshot(ssm, **names, metadata=metadata(NEW, 4))
    assert restore_snapshot(ssm, **names, failed_snapshot_id=NEW, previous_snapshot_id=OLD) == OLD
    assert read_published(ssm, **names) == Published(OLD, {"snapshot_id": OLD, "rolled_back_from": NEW})


def test_restore_without_a_previous_cache_writes_the_placeholder(ssm, names):
    publish_snapshot(ssm, **names, metadata=metadata(NEW, 3))
    assert restore_snapshot(ssm, **names, failed_snapshot_id=NEW, previous_snapshot_id=None) == NO_CACHE
    assert ssm.get_parameter(names["parameter"])["Value"] == NO_CACHE
    assert read_published(ssm, **names).snapshot_id is None


def test_restore_leaves_a_snapshot_published_meanwhile(ssm, names):
    publish_snapshot(ssm, **names, metadata=metadata(NEW, 3))
    assert restore_snapshot(ssm, **names, failed_snapshot_id=OLD, previous_snapshot_id=None) is None
    assert read_published(ssm, **names) == Published(NEW, metadata(NEW, 3))
