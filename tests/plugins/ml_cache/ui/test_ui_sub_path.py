"""The page when Airflow is served under a sub-path (`[api] base_url = https://host/airflow`, common behind an
ingress): a real api-server started that way serves the page at `<base>/ml-cache/`, and the nav entry's href,
resolved the way the UI's iframe resolves it (against the index page's `<base href>`), reaches it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from devstack import process
from tests.conftest import REPO

SUB_PATH = "/airflow"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """An api-server under SUB_PATH on a fresh SQLite DB, every user an admin (the UI's default locally)."""
    home = tmp_path_factory.mktemp("sub-path")
    port = process.free_port()
    base = f"http://127.0.0.1:{port}{SUB_PATH}"
    (home / "dags").mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN"))}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True", "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port),
        # AWS unreachable (a closed local port): the page says so and still renders
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "login": "x", "password": "x", "extra": {
            "region_name": "us-west-2", "endpoint_url": f"http://127.0.0.1:{process.free_port()}"}}),
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
    })
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    log = home / "api-server.log"
    server = process.start([airflow, "api-server", "--port", str(port)], log, env=env)
    try:
        process.wait_ready(server, lambda: process.answers(f"{base}/api/v2/version"), what="api-server",
                           timeout=240, interval=0.5, log_path=log)
        yield base
    finally:
        process.stop(server)


def test_the_nav_entry_reaches_the_page_under_the_sub_path(served):
    index = requests.get(f"{served}/", timeout=30)
    (base_href,) = re.findall(r'<base href="([^"]*)"', index.text)
    assert base_href == f"{SUB_PATH}/"
    plugins = requests.get(f"{served}/api/v2/plugins", timeout=30).json()["plugins"]
    [ui] = [p for p in plugins if p["name"] == "ml_cache_ui"]
    [view] = ui["external_views"]
    frame_src = urljoin(urljoin(index.url, base_href), view["href"])  # what the iframe loads
    assert frame_src == f"{served}/ml-cache/"
    page = requests.get(frame_src, timeout=60)
    assert page.status_code == 200 and "Nothing published yet" in page.text
    # an absolute "/ml-cache/" would have missed it: nothing is served outside the sub-path
    root = served.removesuffix(SUB_PATH)
    assert requests.get(f"{root}/ml-cache/", timeout=30).status_code == 404
