"""`make up`'s build-on-push wiring: the queue URL from Terraform's state (the real CLI reads it) reaches
Airflow's environment as ML_CACHE_PUSH_QUEUE_URL; without the queue, no variable."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from devstack.stack.airflow_standalone import airflow_env
from devstack.stack.layout import Layout
from devstack.stack.provision import record_push_queue

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
URL = "http://127.0.0.1:4566/123456789012/ml-container-cache-ecr-push"


def _state(path: Path, outputs: dict[str, Any]) -> dict[str, str]:
    path.write_text(json.dumps({"version": 4, "terraform_version": "1.11.4", "serial": 1,
                                "lineage": "3f1b2a4c-0000-4000-8000-000000000000", "outputs": outputs,
                                "resources": [], "check_results": None}))
    return {**os.environ, "ML_CACHE_TF_STATE": str(path), "TF_DATA_DIR": str(path.parent / "data"),
            "TF_CLI_CONFIG_FILE": os.devnull}


@pytest.mark.parametrize(("outputs", "expected"), [
    ({"ecr_push_queue_url": {"value": URL, "type": "string"}}, URL),
    ({"ecr_push_queue_url": {"value": None, "type": "string"}}, None),  # the variable left empty
    ({}, None),  # a state from before the output existed
])
def test_the_queue_url_of_the_state_reaches_airflow(tmp_path: Path, outputs: dict[str, Any],
                                                    expected: str | None) -> None:
    layout = Layout(home=tmp_path, cloud_port=4566, registry_port=5000, airflow_port=8080)
    (tmp_path / "terraform").mkdir()
    layout.push_queue_url_file.write_text("http://stale")  # from an earlier `make up`
    record_push_queue(layout, _state(tmp_path / "terraform" / "terraform.tfstate", outputs))
    assert airflow_env(layout).get("ML_CACHE_PUSH_QUEUE_URL") == expected
