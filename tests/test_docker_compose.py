"""docker-compose.yaml: the official Airflow 3 shape, our mounts and env, the optional local cloud.

No Docker engine runs here, so the file is checked as data; `docker compose config -q` (which
needs no engine) also runs when a docker CLI with the compose plugin is installed.
"""

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

from ml_cache.settings.config import DEFAULT_CONFIG_PATH

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
AIRFLOW_IMAGE = "apache/airflow:3.3.2-python3.11"
AIRFLOW_SERVICES = {
    "airflow-init": None,
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
DEFAULT_RE = re.compile(r"^\$\{(?P<name>\w+):-(?P<default>.*)\}$", re.DOTALL)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


def default_of(value: str) -> str:
    """The value compose uses when the variable is unset: `${NAME:-default}` -> default."""
    match = DEFAULT_RE.match(value)
    return match["default"] if match else value


def test_services(compose):
    assert set(compose["services"]) == {"postgres", "devstack", "airflow-secrets", *AIRFLOW_SERVICES}


def test_common_anchor_is_merged_into_every_airflow_service(compose):
    common = compose["x-airflow-common"]
    assert default_of(common["image"]) == AIRFLOW_IMAGE
    for name, command in AIRFLOW_SERVICES.items():
        service = compose["services"][name]
        assert service["image"] == common["image"], name
        assert service["volumes"] == common["volumes"], name
        if command is not None:
            assert service["command"] == command
            assert service["environment"] == common["environment"], name
            assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
            assert service["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}
            assert "healthcheck" in service, name


def test_executor_and_environment(compose):
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    # shared by all components, or tokens signed by the scheduler are refused by the API server
    assert env["AIRFLOW__API_AUTH__JWT_SECRET_CMD"]  # generated: tests/test_compose_secrets.py


def test_requirements_are_installed_from_the_mounted_files(compose):
    common = compose["x-airflow-common"]
    requirements = default_of(common["environment"]["_PIP_ADDITIONAL_REQUIREMENTS"]).split()
    assert requirements == [
        "-r",
        "/opt/ml-container-cache/requirements.txt",
        "-c",
        "/opt/ml-container-cache/constraints.txt",
    ]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in common["volumes"]}
    assert mounts["/opt/ml-container-cache/requirements.txt"] == "./requirements.txt"
    assert mounts["/opt/ml-container-cache/constraints.txt"] == "./constraints.txt"
    assert (REPO / "requirements.txt").is_file()
    assert (REPO / "constraints.txt").is_file()
    assert "apache-airflow==3.3.2" in (REPO / "requirements.txt").read_text().split()
    # the init container migrates the DB only; it needs none of our packages
    assert compose["services"]["airflow-init"]["environment"]["_PIP_ADDITIONAL_REQUIREMENTS"] == ""


def test_dags_and_plugins_are_mounted(compose):
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in compose["x-airflow-common"]["volumes"]}
    assert mounts["/opt/airflow/dags"] == "./dags"
    assert mounts["/opt/airflow/plugins"] == "./plugins"  # the config and pod template ship inside ml_cache


def test_ml_cache_config_points_at_the_mounted_file(compose):
    env = compose["x-airflow-common"]["environment"]
    path = default_of(env["ML_CACHE_CONFIG"])
    assert path == "/opt/airflow/plugins/ml_cache/defaults/ml_container_cache.yaml"
    # the packaged default (ml_cache.settings.config) is that same file of the ./plugins mount
    assert Path(str(DEFAULT_CONFIG_PATH)) == REPO / Path(path).relative_to("/opt/airflow")


def test_aws_connection_defaults_to_the_local_cloud(compose):
    uri = default_of(compose["x-airflow-common"]["environment"]["AIRFLOW_CONN_AWS_DEFAULT"])
    parts = urlsplit(uri)
    assert parts.scheme == "aws"
    extra = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert extra["region_name"] == "us-west-2"
    endpoint = urlsplit(unquote(extra["endpoint_url"]))
    assert (endpoint.hostname, endpoint.port) == ("devstack", 4566)


def test_init_migrates_the_database_as_root(compose):
    init = compose["services"]["airflow-init"]
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init["user"] == "0:0"
    assert init["entrypoint"] == "/bin/bash"


def test_api_server_is_published_on_loopback_only(compose):
    assert compose["services"]["airflow-apiserver"]["ports"] == ["127.0.0.1:8080:8080"]


def test_local_cloud_is_an_optional_privileged_profile(compose):
    devstack = compose["services"]["devstack"]
    assert devstack["profiles"] == ["local-cloud"]
    assert devstack["privileged"] is True
    assert devstack["command"] == ["python", "-m", "devstack", "serve", "--port", "4566"]
    assert devstack["working_dir"] == "/opt/ml-container-cache"
    assert ".:/opt/ml-container-cache:ro" in devstack["volumes"]
    dockerfile = devstack["build"]["dockerfile_inline"]
    for package in ("containerd", "docker-registry", "skopeo", "xfsprogs", "pigz", "busybox-static"):
        assert package in dockerfile, package
    assert "python:3.11" in dockerfile
    # Airflow must start without the optional service: nothing may depend on it
    for name in AIRFLOW_SERVICES:
        assert "devstack" not in compose["services"][name].get("depends_on", {}), name


def test_named_volumes_are_declared(compose):
    used = {
        volume.split(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/"))
    }
    assert used <= set(compose["volumes"])


def strings_in(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def test_every_dollar_is_compose_interpolation_or_escaped(compose):
    """A bare `$` in a value would be interpolated by compose (`$HOSTNAME` silently emptied)."""
    bare = [text for text in strings_in(compose) if re.search(r"\$(?!\{\w+(?::?[-?][^}]*)?\})", text.replace("$$", ""))]
    assert bare == []


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not docker_compose_available(), reason="docker CLI with the compose plugin not installed")
def test_docker_compose_config_accepts_the_file():
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--profile", "local-cloud", "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
