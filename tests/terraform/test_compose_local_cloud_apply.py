"""The compose file's `local-cloud-terraform` one-shot, run for real: its script (as compose would
run it, container paths mapped to temporary ones) applies terraform/examples/local-cloud into a local
cloud and leaves a DAG config that the settings accept. No Docker engine here, so not in a container.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from tf_runner import PLUGIN_DIR, REPO, skip_reason

from ml_cache.settings import load_config, resolve_build_settings, resolve_rollout_settings

pytestmark = [
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
    pytest.mark.slow,
]


def compose_script(service: str) -> tuple[str, dict[str, str]]:
    """The service's bash script with compose's `$$` unescaped, and its environment."""
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    spec = compose["services"][service]
    assert spec["entrypoint"] == "/bin/bash" and spec["command"][0] == "-c"
    return spec["command"][1].replace("$$", "$"), dict(spec["environment"])


def test_the_profile_applies_the_example_and_writes_the_dag_config(local_cloud, tmp_path: Path) -> None:
    script, environment = compose_script("local-cloud-terraform")
    work, state, out = tmp_path / "work", tmp_path / "devstack", tmp_path / "local-cloud"
    work.mkdir()
    out.mkdir()
    # container paths -> this machine's (the script's own scratch /tmp/ first: tmp_path lies under /tmp)
    script = script.replace("/tmp/", f"{work}/")
    for container, here in (("/opt/ml-container-cache", str(REPO)), ("/var/lib/devstack", str(state)),
                            ("/opt/local-cloud", str(out)), ("http://devstack:4566", local_cloud.endpoint)):
        script = script.replace(container, here)
    env = {key: value.replace("/var/lib/devstack", str(state)) for key, value in environment.items()}
    env["TF_PLUGIN_DIR"] = str(PLUGIN_DIR)  # offline here; the container has the Terraform registry
    result = subprocess.run(["bash", "-c", script], env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-4000:]

    config_file = out / "ml_container_cache.yaml"
    assert config_file.stat().st_mode & 0o777 == 0o644  # Airflow's user reads what root wrote
    config = load_config(str(config_file))
    # both DAGs' settings accept it as it is, with the deployment's ids
    build = resolve_build_settings(config, {}, region="us-west-2")
    rollout = resolve_rollout_settings(config, {}, region="us-west-2")
    assert config["aws"]["subnet_ids"] and config["aws"]["security_group_ids"]
    assert build.pipeline == "ml-container-cache"
    assert rollout.rollout.cluster_name == "ml-container-cache"
    # the repository stayed untouched: Terraform worked on the copy
    assert not (REPO / "terraform" / "examples" / "local-cloud" / "terraform.tfstate").exists()
    assert (state / "terraform" / "terraform.tfstate").is_file()
