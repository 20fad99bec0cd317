"""The page's FastAPI app as the api-server mounts it (Airflow's create_app loads plugins/ml_cache_ui.py),
with Airflow's SimpleAuthManager and JWTs, the metadata DB holding the producers' Asset events, and the
metadata parameter published by the real writer into the local cloud over HTTP, FSR described by it."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml

from ml_cache.assets import (
    ML_CONTAINER_CACHE,
    ML_CONTAINER_CACHE_READY,
    cache_event_extra,
    read_cache_event,
    ready_event_extra,
)
from ml_cache.rollout_target import snapshot_from_event
from ml_cache.validation.report import short_image
from tests.conftest import REPO, use_aws_connection
from tests.plugins.ml_cache import producers

DEFAULT_CONFIG = REPO / "plugins/ml_cache/defaults/ml_container_cache.yaml"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """The api-server's app (core API + plugins) on a fresh metadata DB, through FastAPI's test client."""
    from airflow.api_fastapi.app import create_app
    from airflow.utils.db import resetdb
    from fastapi.testclient import TestClient

    resetdb()
    with TestClient(create_app(apps="core")) as test_client:
        yield test_client


def _token(role: str | None) -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=f"user-{role}", role=role))


def _cookie(role: str | None) -> dict[str, str]:
    """The UI's session: its JWT in the `_token` cookie, which the browser also sends with the page's iframe."""
    return {"Cookie": f"_token={_token(role)}"}


@pytest.fixture
def parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> dict[str, str]:
    """Parameter names of this test only (the moto server is shared), through the pipeline's config file."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    names = {"parameter": f"/ml-cache-ui-{request.node.name}/snapshot-id",
             "metadata_parameter": f"/ml-cache-ui-{request.node.name}/snapshot-metadata"}
    config["aws"]["ssm_parameter"], config["aws"]["ssm_metadata_parameter"] = names.values()
    path = tmp_path / "ml_container_cache.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ML_CACHE_CONFIG", str(path))
    return names


@pytest.fixture
def local_cloud(devstack_server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """aws_default on the local cloud (FSR implemented); FSR turned off after, the Region's quota is shared."""
    aws = use_aws_connection(monkeypatch, "aws_default", devstack_server.endpoint, "us-west-2")
    yield aws
    ec2 = aws.client("ec2")
    for item in ec2.describe_fast_snapshot_restores()["FastSnapshotRestores"]:
        if item["State"] in ("enabling", "optimizing", "enabled"):
            ec2.disable_fast_snapshot_restores(AvailabilityZones=[item["AvailabilityZone"]],
                                               SourceSnapshotIds=[item["SnapshotId"]])


def _snapshot_with_fsr(aws: Any, zone: str) -> str:
    """A real snapshot of the local cloud with FSR enabled in `zone`."""
    ec2 = aws.client("ec2")
    volume = ec2.create_volume(AvailabilityZone="us-west-2a", Size=1)["VolumeId"]
    snapshot_id = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snapshot_id], WaiterConfig={"Delay": 1})
    ec2.enable_fast_snapshot_restores(AvailabilityZones=[zone], SourceSnapshotIds=[snapshot_id])
    ec2.delete_volume(VolumeId=volume)
    return snapshot_id


@contextlib.contextmanager
def _events(metadata: dict[str, Any]) -> Iterator[None]:
    """The build's and the rollout's events for `metadata` in the metadata DB, as Airflow stores them:
    cache_event_extra, then the rollout's target from it and the ready event with the recorded validation."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    cache = json.loads(json.dumps(cache_event_extra(metadata)))
    target = json.loads(json.dumps(snapshot_from_event(read_cache_event(cache))))
    ready = json.loads(json.dumps(ready_event_extra(target, producers.validation_report(), producers.ROLLOUT_RUN_ID)))
    published = datetime.now(UTC) - timedelta(days=1)
    ids = []
    with create_session() as session:
        for asset, extra, when in ((ML_CONTAINER_CACHE, cache, published),
                                   (ML_CONTAINER_CACHE_READY, ready, published + timedelta(hours=1))):
            model = AssetModel(name=asset.name, uri=asset.uri)
            session.add(model)
            session.flush()
            ids.append(model.id)
            session.add(AssetEvent(asset_id=model.id, extra=extra, timestamp=when))
    try:
        yield
    finally:
        with create_session() as session:
            session.execute(delete(AssetEvent).where(AssetEvent.asset_id.in_(ids)))
            session.execute(delete(AssetModel).where(AssetModel.id.in_(ids)))


@pytest.mark.parametrize("path", ["/ml-cache/", "/ml-cache/api/page", "/ml-cache/published.svg"])
def test_refused_without_a_valid_token(client, path):
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Cookie": "_token=not-a-jwt"}).status_code == 403
    assert client.get(path, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403


def test_refused_to_a_user_the_auth_manager_does_not_allow(client):
    response = client.get("/ml-cache/api/page", headers={"Authorization": f"Bearer {_token(None)}"})
    assert response.status_code == 403


def test_the_nav_entry_points_at_the_page(client):
    response = client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {_token('admin')}"})
    [plugin] = [p for p in response.json()["plugins"] if p["name"] == "ml_cache_ui"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/ml-cache"
    assert plugin["external_views"][0]["href"] == "ml-cache/" and plugin["external_views"][0]["destination"] == "nav"


def test_nothing_published_yet(client, parameters, local_cloud):
    response = client.get("/ml-cache/", headers=_cookie("viewer"))
    assert response.status_code == 200
    assert "Nothing published yet" in response.text and "role=alert" not in response.text


def test_a_viewer_sees_the_live_snapshot_from_the_parameter_the_events_and_ec2(client, parameters, local_cloud):
    from ml_cache.hooks.ssm import CacheSsmHook
    from ml_cache.published import publish_snapshot

    snapshot_id = _snapshot_with_fsr(local_cloud, "us-west-2b")
    metadata = producers.published_metadata(snapshot_id)
    publish_snapshot(CacheSsmHook(aws_conn_id="aws_default"), metadata=metadata, **parameters)
    with _events(metadata):
        page = client.get("/ml-cache/", headers=_cookie("viewer"))
        data = client.get("/ml-cache/api/page", headers={"Authorization": f"Bearer {_token('viewer')}"}).json()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert snapshot_id in page.text and producers.PYTORCH_DIGEST in page.text
    assert '<code class=pipeline>ml-container-cache</code>' in page.text and data["pipeline"] == "ml-container-cache"
    assert "SSM metadata parameter" in page.text and "role=alert" not in page.text
    [arch] = data["archs"]
    live = arch["live"]
    assert live["snapshot_id"] == snapshot_id and live["validated"] is True
    assert [(i["ref"], i["digest"], i["bytes"]) for i in live["images"]] == [
        (i["ref"], i["digest"], i["bytes"]) for i in metadata["images"]]
    assert live["rollout_run_id"] == producers.ROLLOUT_RUN_ID
    assert dict(live["fsr"])["us-west-2a"] == "disabled"  # enabled at publish (producers), off now
    assert dict(live["fsr"])["us-west-2b"] in ("enabling", "optimizing", "enabled")
    assert [row["run_id"] for row in data["history"]] == [producers.BUILD_RUN_ID]


def test_the_trigger_forms_card_shows_the_published_set_from_the_parameter(client, parameters, local_cloud):
    """The image the build's form embeds: what the metadata parameter holds when the form opens."""
    from ml_cache.hooks.ssm import CacheSsmHook
    from ml_cache.published import publish_snapshot

    empty = client.get("/ml-cache/published.svg", headers=_cookie("viewer"))
    assert empty.status_code == 200 and "Nothing published yet" in empty.text
    snapshot_id = _snapshot_with_fsr(local_cloud, "us-west-2b")
    metadata = producers.published_metadata(snapshot_id)
    publish_snapshot(CacheSsmHook(aws_conn_id="aws_default"), metadata=metadata, **parameters)
    with _events(metadata):
        card = client.get("/ml-cache/published.svg", headers=_cookie("viewer"))
    assert card.status_code == 200 and card.headers["content-type"].startswith("image/svg+xml")
    assert card.headers["cache-control"] == "no-store"
    assert f"Published now: {snapshot_id}" in card.text and "x86_64, 1 d 0 h old, validated" in card.text
    for image in metadata["images"]:  # short refs, abbreviated digests: the UI draws it 300 px wide
        assert f">{short_image(image['ref'])}<" in card.text and f">{image['digest'][:15]}…  " in card.text
    assert 'width="300"' in card.text
    ElementTree.fromstring(card.text)  # noqa: S314 (our own output) well-formed: a browser draws it as an image


def test_aws_unreachable_is_a_message_not_an_error(client, parameters, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    use_aws_connection(monkeypatch, "aws_default", closed, "us-west-2")
    with _events(producers.published_metadata()):
        response = client.get("/ml-cache/", headers=_cookie("viewer"))
    assert response.status_code == 200
    assert "role=alert>Cannot read the published snapshot from SSM" in response.text
    assert producers.SNAPSHOT_ID in response.text and "newest Asset event" in response.text


def test_a_failed_build_run_shows_with_the_cause_its_note_gives(client, parameters, local_cloud):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType
    from sqlalchemy import delete

    ended = datetime.now(UTC)
    with create_session() as session:
        run = DagRun(dag_id="ml_container_cache_build", run_id="manual__refused", run_type=DagRunType.MANUAL,
                     state=DagRunState.FAILED, run_after=ended, start_date=ended - timedelta(minutes=3))
        run.end_date = ended
        run.note = "image 'busybox;rm -rf /' is not a reference: ';' is not allowed"
        session.add(run)
    try:
        data = client.get("/ml-cache/api/page", headers={"Authorization": f"Bearer {_token('viewer')}"}).json()
    finally:
        with create_session() as session:
            session.execute(delete(DagRun).where(DagRun.run_id == "manual__refused"))
    [row] = data["history"]
    assert (row["run_id"], row["outcome"], row["snapshot_id"]) == ("manual__refused", "failed", None)
    assert row["cause"] == "image 'busybox;rm -rf /' is not a reference: ';' is not allowed"
    assert row["duration_seconds"] == 180


def test_a_janitor_run_shows_the_actions_its_report_cleanup_xcom_holds(client, parameters, local_cloud):
    """The XCom as the task SDK stores a return value (XComModel.serialize_value), on its task instance."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XCOM_RETURN_KEY, XComModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType
    from sqlalchemy import delete, insert

    from ml_cache.janitor.inventory import Inventory
    from ml_cache.janitor.plan import Action, Plan
    from ml_cache.janitor.report import cleanup_report

    dag_id, run_id, task_id = "ml_container_cache_janitor", "manual__dry", "report_cleanup"
    ended = datetime.now(UTC)
    plan = Plan(actions=[Action(action="delete_snapshot", resource="snap-old", reason="beyond the retention",
                                monthly_savings_usd=1.5)], kept=[])
    report = cleanup_report(Inventory(now=ended, clock="aws"), plan, None, dry_run=True)
    with create_session() as session:
        run = DagRun(dag_id=dag_id, run_id=run_id, run_type=DagRunType.MANUAL, state=DagRunState.SUCCESS,
                     run_after=ended, start_date=ended - timedelta(minutes=1))
        session.add(run)
        session.flush()
        session.execute(insert(TaskInstance.__table__).values(
            dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=-1, try_number=1, max_tries=0,
            pool="default_pool", pool_slots=1))
        session.add(XComModel(dag_run_id=run.id, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=-1,
                              key=XCOM_RETURN_KEY, value=XComModel.serialize_value(report)))
    try:
        data = client.get("/ml-cache/api/page", headers={"Authorization": f"Bearer {_token('viewer')}"}).json()
        page = client.get("/ml-cache/", headers=_cookie("viewer")).text
    finally:
        with create_session() as session:
            session.execute(delete(XComModel).where(XComModel.dag_id == dag_id))
            session.execute(delete(TaskInstance).where(TaskInstance.dag_id == dag_id))
            session.execute(delete(DagRun).where(DagRun.dag_id == dag_id))
    [row] = data["janitor"]
    assert (row["run_id"], row["dry_run"], row["monthly_savings_usd"]) == (run_id, True, 1.5)
    assert [(a["action"], a["resource"], a["outcome"]) for a in row["actions"]] == [
        ("delete_snapshot", "snap-old", "would do (dry run)")]
    assert "delete_snapshot <code>snap-old</code>: would do (dry run)" in page
