"""The path `make run` takes, end to end, run once (KEEP=1) for three checks: its output (local cloud, Airflow
standalone, a build, the rollout, two weekly ticks), the "ML cache" page in headless Chromium on what it left
running, then `make down` stopping all of it.

`make run`'s Airflow runs with SIMPLE_AUTH_MANAGER_ALL_ADMINS (every request is an admin, like `make up`), so
the page test starts a second api-server on the same home and database with real logins: there an
unauthenticated browser is refused, and a user logged in through POST /auth/token (its JWT in the `_token`
cookie, as the UI's login sets it) sees the page. Screenshots go to ARTEFACTS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests
import yaml

from tests.conftest import REPO
from tests.e2e import webdriver

ARTEFACTS = REPO / ".artefacts" / "browser"
PORTS = {"DEVSTACK_PORT": "4577", "DEVSTACK_REGISTRY_PORT": "5077", "AIRFLOW_PORT": "8097"}


def _missing() -> str | None:
    from devstack.volumes import data_plane_missing

    return data_plane_missing()


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(_missing()), reason=f"make run needs the data plane: {_missing()}")]


@dataclass
class MadeRun:
    returncode: int
    output: str
    layout: object
    env: dict[str, str]


def _devstack(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devstack", command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    """`make run` with KEEP=1 (the same run as without, then left up); `make down` after, whatever happened."""
    from devstack.stack.layout import Layout

    home = (tmp_path_factory.mktemp("make-run") / "devstack").resolve()
    env = {**os.environ, "DEVSTACK_HOME": str(home), **PORTS}
    for key in [k for k in env if k.startswith(("AIRFLOW__", "AIRFLOW_CONN", "ML_CACHE"))] + ["AIRFLOW_HOME"]:
        env.pop(key, None)  # the pytest session's Airflow settings are not make run's
    layout = Layout(home=home, cloud_port=int(PORTS["DEVSTACK_PORT"]),
                    registry_port=int(PORTS["DEVSTACK_REGISTRY_PORT"]), airflow_port=int(PORTS["AIRFLOW_PORT"]))
    try:
        result = _devstack("run", {**env, "KEEP": "1"}, timeout=1800)
        ARTEFACTS.parent.mkdir(parents=True, exist_ok=True)
        (ARTEFACTS.parent / "make-run.log").write_text(result.stdout + result.stderr)  # the whole output, for a failure
        yield MadeRun(result.returncode, result.stdout + result.stderr, layout, env)
    finally:
        _devstack("down", env, timeout=600)


def test_make_run_builds_publishes_rolls_out_and_refreshes_weekly(made_run):
    """Three images: anonymous (127.0.0.1:5077), ECR-style (repository in the local cloud's ECR) and
    the Docker Hub/NGC-style registry (127.0.0.1:5080, login in Secrets Manager); then two weekly
    ticks: one image changed (incremental build and rollout), nothing changed (up to date)."""
    output = made_run.output
    assert made_run.returncode == 0, output[-6000:]
    assert re.search(r"Snapshot: snap-[0-9a-f]+ +\(SSM /ml-container-cache/snapshot-id version \d+\)", output)
    zones = re.findall(r"FSR (us-west-2[a-z]): (\w+)", output)
    assert zones and all(state == "enabled" for _, state in zones), output[-3000:]
    assert len(re.findall(r"sha256:[0-9a-f]{64}", output)) >= 3
    assert "publish_snapshot" in output
    # every image resolved before launch says how it authenticated (the resolve_images XCom)
    assert re.search(r"^  127\.0\.0\.1:5077/ml-cache-demo/small:1\.0 .*  anonymous$", output, re.M), output[-4000:]
    assert re.search(r"^  123456789012\.dkr\.ecr\.us-west-2\.amazonaws\.com/ml-cache-demo/tools:1\.0 .*"
                     r"  authenticated: ecr$", output, re.M), output[-4000:]
    assert re.search(r"^  127\.0\.0\.1:5080/private/ml-cache-demo/large:1\.0 .*  authenticated: secretsmanager$",
                     output, re.M), output[-4000:]
    assert re.search(r"^Data volume: \d+ GiB \(computed from the resolved image sizes\)$", output, re.M)
    # the rollout the build's Asset event started: every new node had every image (a cache hit)
    assert re.search(r"ml_container_cache_rollout run \S+: SUCCESS", output), output[-4000:]
    assert "### Cache validation passed" in output  # the validate_nodes report's own Markdown
    # no spurious failed try where a wait's condition already held (apache/airflow#71580) or where a
    # reschedule-mode sensor met a stale executor event (apache/airflow#71172)
    retried = re.findall(r"^\[[\d:]+\]\s+(validate_nodes|enable_fast_snapshot_restore|wait_for_\w+)\s+up_for_retry$",
                         output, re.M)
    assert not retried, retried
    rows = [line for line in output.splitlines() if line.startswith("| ") and line.rstrip().endswith("| PASS |")]
    assert len(rows) >= 3 and all(" hit " in row for row in rows), rows
    # the large (private) image: cached start versus the uncached baseline, which pulled it through
    # the bearer registry with the node's credentials, on the same instance type
    ratios = re.findall(r"127\.0\.0\.1:5080/private/ml-cache-demo/large:1.0: cached start .* (\d+)x faster", output)
    assert ratios and int(ratios[0]) >= 30, output[-3000:]
    # week 2 (clock +7 days): the tools image's tag moved to a version with one layer changed
    first = re.search(r"^Snapshot: (snap-[0-9a-f]+) ", output, re.M).group(1)
    assert re.search(rf"^Week 2 build: incremental from {first} ", output, re.M), output[-4000:]
    pulled, changed = (int(n.replace(",", "")) for n in re.search(
        r"^Bytes pulled: ([\d,]+) vs the changed layers' ([\d,]+) ", output, re.M).groups())
    assert changed / 1.1 <= pulled <= changed * 1.1, (pulled, changed, output[-6000:])
    second, incremental, full = re.search(r"^Snapshot (snap-[0-9a-f]+): ([\d,]+) bytes incremental of ([\d,]+) full",
                                          output, re.M).groups()
    assert second != first and 0 < int(incremental.replace(",", "")) < int(full.replace(",", ""))
    assert len(re.findall(r"ml_container_cache_rollout run \S+: SUCCESS", output)) == 2, output[-4000:]
    assert re.search(rf"^FSR on the superseded snapshot {first}: retired \(", output, re.M), output[-4000:]
    # week 2's uncached baseline ran on a fresh node (the baseline group goes back to 0 after each rollout),
    # so every image was pulled again: a cold start, not week 1's node that still held them
    fresh, before, pulled, measured = re.search(
        r"^Week 2 baseline: node (\S+) \(week 1's: (\S+)\), (\d+)/(\d+) images pulled$", output, re.M).groups()
    assert fresh != before and pulled == measured and int(measured) >= 3, output[-3000:]
    # week 3 (clock +7 days again): nothing changed
    assert re.search(rf"^Week 3 build: up to date: {second} ", output, re.M), output[-3000:]
    assert re.search(r"^Instances launched: 0$", output, re.M) and "Asset events: 0 (no rollout)" in output
    decided = float(re.search(r"^Decided in ([\d.]+) s", output, re.M).group(1))
    assert decided < 30, output[-2000:]


@pytest.fixture
def logins(made_run):
    """An api-server with real logins on make run's home and database: its URL and an admin's token."""
    from devstack import process
    from devstack.stack.airflow_standalone import airflow_env

    if made_run.returncode != 0:
        pytest.fail("make run failed: see the test above")
    layout = made_run.layout
    port = process.free_port()
    auth_env = {**made_run.env, **airflow_env(layout), "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__API__PORT": str(port)}
    log = layout.home / "logs" / "airflow-logins.log"
    server = process.start([str(Path(sys.executable).parent / "airflow"), "api-server", "--port", str(port)],
                           log, pid_file=layout.pid_file("airflow-logins"), env=auth_env, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        process.wait_ready(server, lambda: process.answers(f"{url}/api/v2/version", statuses=(200, 401)),
                           what="the api-server with logins", timeout=240, interval=0.5, log_path=log)
        passwords = json.loads((layout.home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
        login = requests.post(f"{url}/auth/token", json={"username": "admin", "password": passwords["admin"]},
                              timeout=30)
        login.raise_for_status()
        yield url, login.json()["access_token"]
    finally:
        process.stop(server)


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


@pytest.mark.skipif(bool(webdriver.missing()), reason=f"the browser test needs: {webdriver.missing()}")
def test_the_ml_cache_page_in_chromium_after_builds_and_rollouts(made_run, logins):
    layout, (url, token) = made_run.layout, logins
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
        assert (browser.attribute(frame, "src") or "").endswith("ml-cache/")
        browser.frame(frame)
        assert browser.text(browser.wait_for("code.snapshot-id")) == snapshot_id
        browser.frame(None)
        browser.screenshot(ARTEFACTS / "ml-cache-in-airflow-ui.png")


@pytest.mark.skipif(bool(webdriver.missing()), reason=f"the browser test needs: {webdriver.missing()}")
def test_the_trigger_form_in_chromium_shows_the_configured_defaults(made_run):
    """The build's trigger form, as a user opens it from the DAG's page: each field holds what a run would use
    (make run's config: its images, FSR on), sections closed but the images one opened for the screenshot."""
    if made_run.returncode != 0:
        pytest.fail("make run failed: see the first test")
    layout = made_run.layout
    build = yaml.safe_load(layout.config_path.read_text())["build"]
    with webdriver.Browser(layout.home / "logs" / "chromedriver-form.log") as browser:
        browser.get(f"{layout.airflow_url}/dags/ml_container_cache_build")
        browser.click(browser.wait_for('button[aria-label="Trigger Dag"]'))
        images = browser.wait_for('textarea[name="element_images"]')
        assert browser.execute("return arguments[0].value", {webdriver.ELEMENT: images}).splitlines() == build["images"]
        checked = dict(browser.execute("return Array.from(document.querySelectorAll("
                                       "'[role=dialog] input[type=checkbox]')).map(e => [e.name, e.checked])"))
        assert checked["element_enable_fast_snapshot_restore"] is build.get("enable_fast_snapshot_restore", True)
        assert checked["element_force_rebuild"] is False
        sections = [browser.text(e) for e in browser.find('[role="dialog"] button[aria-controls*=":content:"]')]
        assert [s for s in sections if s in ("Images", "Builder", "Volume", "FSR")] == ["Images", "Builder", "Volume",
                                                                                        "FSR"], sections
        shown = ""
        for section in ("FSR", "Volume", "Builder", "Images"):  # each opened in turn: every field read as shown
            browser.click(browser.wait_for(f'[role="dialog"] button[aria-controls$=":content:{section}"]'))
            shown += browser.execute("return Array.from(document.querySelectorAll('[role=dialog]'))"
                                     ".map(e => e.innerText).find(text => text.includes('Trigger Dag'))")
        assert "Images to cache" in shown and "Fast Snapshot Restore" in shown, shown
        assert "null" not in shown.lower(), shown
        # the published image set: an image the ML cache plugin draws from the SSM parameter when the form opens
        card = browser.wait_for('[role="dialog"] img[alt="The published image set"]')
        loaded = "return arguments[0].complete && arguments[0].naturalWidth"
        deadline = time.monotonic() + 30
        while not browser.execute(loaded, {webdriver.ELEMENT: card}) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert browser.execute(loaded, {webdriver.ELEMENT: card}) == 300  # drawn (its own width), not a broken image
        browser.wait_for('[role="dialog"] button[aria-controls$=":content:Builder"][aria-expanded="false"]')
        time.sleep(1)  # the accordion's closing animation, for a clean screenshot
        browser.screenshot(ARTEFACTS / "trigger-form.png")


def test_make_down_stops_what_make_run_left_running(made_run):
    """Last in this file: `make down` (services.down, what `make run` without KEEP calls at its end) leaves
    nothing of ours mounted or serving."""
    from devstack import process

    down = _devstack("down", made_run.env, timeout=600)
    assert down.returncode == 0, (down.stdout + down.stderr)[-3000:]
    assert str(made_run.layout.home) not in Path("/proc/self/mounts").read_text()
    assert not process.answers(f"{made_run.layout.airflow_url}/api/v2/version", statuses=(200, 401))
