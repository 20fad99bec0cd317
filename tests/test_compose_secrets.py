"""docker-compose.yaml commits no secret: `airflow-secrets` generates them once into a named volume and
every Airflow component reads them through Airflow's `_CMD` options (the script is run here for real)."""

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[1]
SECRETS_DIR = "/opt/airflow/secrets"
# Airflow's sensitive options (each accepts a _CMD variant: airflow.configuration sensitive_config_values).
SECRET_OPTIONS = {"AIRFLOW__CORE__FERNET_KEY": "fernet_key", "AIRFLOW__API_AUTH__JWT_SECRET": "jwt_secret",
                  "AIRFLOW__API__SECRET_KEY": "api_secret_key"}
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def test_every_airflow_service_reads_the_generated_secrets_and_none_is_committed(compose):
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        env = service["environment"]
        for option, file in SECRET_OPTIONS.items():
            assert option not in env, f"{name} commits {option}"
            assert env[f"{option}_CMD"] == f"cat {SECRETS_DIR}/{file}", name
        assert f"airflow-secrets:{SECRETS_DIR}:ro" in service["volumes"], name
        assert service["depends_on"]["airflow-secrets"] == {"condition": "service_completed_successfully"}, name
    text = (REPO / "docker-compose.yaml").read_text()
    assert not re.search(r"(FERNET_KEY|JWT_SECRET|SECRET_KEY):\s*\$\{", text)  # no value, not even a default


def test_the_generator_writes_only_its_own_volume(compose):
    generator = compose["services"]["airflow-secrets"]
    assert generator["volumes"] == [f"airflow-secrets:{SECRETS_DIR}"]
    assert "environment" not in generator and "depends_on" not in generator
    assert "airflow-secrets" in compose["volumes"]


def run_generator(compose, directory: Path) -> None:
    """The service's script as compose would run it (`$$` is compose's escaped `$`), on `directory`."""
    script = compose["services"]["airflow-secrets"]["command"][1]
    script = script.replace("$$", "$").replace("${AIRFLOW_UID:-50000}", str(os.getuid()))
    script = script.replace(SECRETS_DIR, str(directory))
    subprocess.run(["bash", "-c", script], check=True, env={"PATH": os.environ["PATH"]})


def test_the_secrets_are_generated_once_and_kept(compose, tmp_path, monkeypatch):
    run_generator(compose, tmp_path)
    first = {file: (tmp_path / file).read_text() for file in SECRET_OPTIONS.values()}
    Fernet(first["fernet_key"].encode())  # a valid key, as Airflow decodes it
    assert len(set(first.values())) == 3 and all(len(value) >= 44 for value in first.values())
    assert all((tmp_path / file).stat().st_mode & 0o777 == 0o400 for file in first)
    run_generator(compose, tmp_path)
    assert {file: (tmp_path / file).read_text() for file in first} == first  # a later start keeps them
    other = tmp_path / "other"
    other.mkdir()
    run_generator(compose, other)
    assert (other / "fernet_key").read_text() != first["fernet_key"]  # generated, not constant

    from airflow.configuration import conf

    for option, file in SECRET_OPTIONS.items():
        monkeypatch.setenv(f"{option}_CMD", f"cat {tmp_path / file}")
        monkeypatch.delenv(option, raising=False)
        section, key = option.removeprefix("AIRFLOW__").lower().split("__")
        assert conf.get(section, key) == first[file]
