"""The "ML cache" page in headless Chromium against a real Airflow after `make run`'s build, rollout and
weekly ticks on the local cloud (KEEP=1 leaves the stack up).

`make run`'s Airflow runs with SIMPLE_AUTH_MANAGER_ALL_ADMINS (every request is an admin, like
`make up`), so the test starts a second api-server on the same home and database with real logins:
there an unauthenticated browser is refused, and a user logged in through POST /auth/token (its JWT in
the `_token` cookie, as the UI's login sets it) sees the page. Screenshots go to ARTEFACTS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import requests
import yaml

from tests.conftest import REPO
from tests.e2e import webdriver

ARTEFACTS = REPO / ".artefacts" / "browser"
PORTS = {"DEVSTACK_PORT": "4677", "DEVSTACK_REGISTRY_PORT": "5177", "AIRFLOW_PORT": "8197"}


def _missing() -> str | None:
    from devstack.volumes import data_plane_missing

    return webdriver.missing() or data_plane_missing()


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "DEVSTACK_HOME": str(home), **PORTS}
    for key in [k for k in env if k.startswith(("AIRFLOW__", "AIRFLOW_CONN", "ML_CACHE"))] + ["AIRFLOW_HOME"]:
        env.pop(key, None)  # the pytest session's Airflow settings are not the stack's
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`make run` with KEEP=1, then an api-server with logins on its home; both stopped after."""
    from devstack import process
    from devstack.stack.airflow_standalone import airflow_env
    from devstack.stack.layout import Layout

    home = tmp_path_factory.mktemp("browser") / "devstack"
    env = _env(home)
    layout = Layout(home=home.resolve(), cloud_port=int(PORTS["DEVSTACK_PORT"]),
                    registry_port=int(PORTS["DEVSTACK_REGISTRY_PORT"]), airflow_port=int(PORTS["AIRFLOW_PORT"]))
    try:
        result = subprocess.run([sys.executable, "-m", "devstack", "run"], cwd=REPO, env={**env, "KEEP": "1"},
                                capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
        port = process.free_port()
        auth_env = {**env, **airflow_env(layout), "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                    "AIRFLOW__API__PORT": str(port)}
        log = layout.home / "logs" / "airflow-logins.log"
        server = process.start([str(Path(sys.executable).parent / "airflow"), "api-server", "--port", str(port)],
                               log, pid_file=layout.pid_file("airflow-logins"), env=auth_env, cwd=REPO)
        url = f"http://127.0.0.1:{port}"
        process.wait_ready(server, lambda: process.answers(f"{url}/api/v2/version", statuses=(200, 401)),
                           what="the api-server with logins", timeout=240, interval=0.5, log_path=log)
        passwords = json.loads((layout.home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
        login = requests.post(f"{url}/auth/token", json={"username": "admin", "password": passwords["admin"]},
                              timeout=30)
        login.raise_for_status()
        yield layout, url, login.json()["access_token"]
        process.stop(server)
    finally:
        subprocess.run([sys.executable, "-m", "devstack", "down"], cwd=REPO, env=env, capture_output=True,
                       timeout=600, check=False)


def _published(layout) -> tuple[str, dict]:
    """The SSM parameters as the build wrote them (names from the stack's config)."""
    aws = yaml.safe_load(layout.config_path.read_text())["aws"]
    ssm = boto3.client("ssm", region_name="us-west-2", endpoint_url=layout.endpoint,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    snapshot_id = ssm.get_parameter(Name=aws.get("ssm_parameter", "/ml-container-cache/snapshot-id"))
    metadata = ssm.get_parameter(Name=aws.get("ssm_metadata_parameter", "/ml-container-cache/snapshot-metadata"))
    return snapshot_id["Parameter"]["Value"], json.loads(metadata["Parameter"]["Value"])


def _newest_event(url: str, token: str, asset: str) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    assets = requests.get(f"{url}/api/v2/assets", params={"name_pattern": asset}, headers=headers, timeout=30).json()
    [asset_id] = [a["id"] for a in assets["assets"] if a["name"] == asset]
    events = requests.get(f"{url}/api/v2/assets/events", headers=headers, timeout=30,
                          params={"asset_id": asset_id, "order_by": "-timestamp", "limit": 1}).json()
    return events["asset_events"][0]["extra"]


@pytest.mark.slow
@pytest.mark.skipif(bool(_missing()), reason=f"the browser test needs: {_missing()}")
def test_the_page_in_chromium_after_builds_and_rollouts(stack):
    layout, url, token = stack
    snapshot_id, metadata = _published(layout)
    event = _newest_event(url, token, "ml_container_cache")
    assert event["snapshot_id"] == snapshot_id == metadata["snapshot_id"]
    with webdriver.Browser(layout.home / "logs" / "chromedriver.log") as browser:
        browser.get(f"{url}/ml-cache/")
        assert "Not authenticated" in browser.source()  # no session: the api-server refuses (401)
        assert not browser.find("code.snapshot-id")
        browser.screenshot(ARTEFACTS / "ml-cache-refused.png")

        browser.add_cookie("_token", token)  # what the UI's login leaves in the browser
        browser.get(f"{url}/ml-cache/")
        shown = browser.text(browser.wait_for("code.snapshot-id"))
        assert shown == snapshot_id
        digests = [browser.text(element) for element in browser.find("code.digest")]
        assert digests == [image["digest"] for image in metadata["images"]]
        assert {image["digest"] for image in event["images"]} == set(digests)
        assert browser.find("svg.startup-chart polyline.cached") and browser.find("svg.startup-chart polyline.uncached")
        assert browser.find("svg.stages-chart") and browser.find("svg.cost-chart")
        browser.screenshot(ARTEFACTS / "ml-cache-page.png", full_page=True)

        browser.resize(1400, 1000)
        browser.get(f"{url}/plugin/ml-cache")  # the nav entry: the UI shows the page in an iframe
        frame = browser.wait_for("iframe")
        assert (browser.attribute(frame, "src") or "").endswith("/ml-cache/")
        browser.frame(frame)
        assert browser.text(browser.wait_for("code.snapshot-id")) == snapshot_id
        browser.frame(None)
        browser.screenshot(ARTEFACTS / "ml-cache-in-airflow-ui.png")
