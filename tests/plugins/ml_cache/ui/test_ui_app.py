"""The page's FastAPI app as the api-server mounts it (Airflow's create_app loads plugins/ml_cache_ui.py),
with Airflow's SimpleAuthManager and JWTs, the metadata DB holding the producers' Asset events, and the
metadata parameter published by the real writer into a moto server over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml_cache.assets import ML_CONTAINER_CACHE, ML_CONTAINER_CACHE_READY
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
def events() -> Iterator[None]:
    """One build's and one rollout's event in the metadata DB, as Airflow stores them."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    published = datetime.now(UTC) - timedelta(days=1)
    with create_session() as session:
        ids = []
        for asset, extra, when in ((ML_CONTAINER_CACHE, producers.cache_extra(), published),
                                   (ML_CONTAINER_CACHE_READY, producers.ready_extra(), published + timedelta(hours=1))):
            model = AssetModel(name=asset.name, uri=asset.uri)
            session.add(model)
            session.flush()
            ids.append(model.id)
            session.add(AssetEvent(asset_id=model.id, extra=extra, timestamp=when))
    yield
    with create_session() as session:
        session.execute(delete(AssetEvent).where(AssetEvent.asset_id.in_(ids)))
        session.execute(delete(AssetModel).where(AssetModel.id.in_(ids)))


@pytest.mark.parametrize("path", ["/ml-cache/", "/ml-cache/api/page"])
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
    assert plugin["external_views"][0]["href"] == "/ml-cache/" and plugin["external_views"][0]["destination"] == "nav"


def test_nothing_published_yet(client, parameters, moto_endpoint, monkeypatch):
    use_aws_connection(monkeypatch, "aws_default", moto_endpoint, "us-west-2")
    response = client.get("/ml-cache/", headers=_cookie("viewer"))
    assert response.status_code == 200
    assert "Nothing published yet" in response.text and "role=alert" not in response.text


def test_a_viewer_sees_the_live_snapshot_from_the_parameter_and_the_events(client, parameters, moto_endpoint,
                                                                           monkeypatch, events):
    from ml_cache.hooks.ssm import CacheSsmHook
    from ml_cache.published import publish_snapshot

    use_aws_connection(monkeypatch, "aws_default", moto_endpoint, "us-west-2")
    metadata = producers.published_metadata()
    publish_snapshot(CacheSsmHook(aws_conn_id="aws_default"), metadata=metadata, **parameters)

    page = client.get("/ml-cache/", headers=_cookie("viewer"))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert producers.SNAPSHOT_ID in page.text and producers.PYTORCH_DIGEST in page.text
    assert "SSM metadata parameter" in page.text and "role=alert" not in page.text

    data = client.get("/ml-cache/api/page", headers={"Authorization": f"Bearer {_token('viewer')}"}).json()
    [arch] = data["archs"]
    assert arch["live"]["snapshot_id"] == producers.SNAPSHOT_ID and arch["live"]["validated"] is True
    assert [(i["ref"], i["digest"], i["bytes"]) for i in arch["live"]["images"]] == [
        (i["ref"], i["digest"], i["bytes"]) for i in metadata["images"]]
    assert arch["live"]["rollout_run_id"] == producers.ROLLOUT_RUN_ID
    assert [row["run_id"] for row in data["history"]] == [producers.BUILD_RUN_ID]


def test_aws_unreachable_is_a_message_not_an_error(client, parameters, monkeypatch, events):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    use_aws_connection(monkeypatch, "aws_default", closed, "us-west-2")
    response = client.get("/ml-cache/", headers=_cookie("viewer"))
    assert response.status_code == 200
    assert "role=alert>Cannot read the published snapshot from SSM" in response.text
    assert producers.SNAPSHOT_ID in response.text and "newest Asset event" in response.text
