"""The DAG config `make run` writes: the three demo images by tag, their credentials and endpoints, no volume size."""

from __future__ import annotations

from pathlib import Path

import yaml

from devstack.stack.layout import Layout
from devstack.stack.private_registries import PrivateRegistries
from devstack.stack.provision import write_config

ECR = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
ARN = "arn:aws:secretsmanager:us-west-2:123456789012:secret:ml-container-cache/private-registry-AbCdEf"


def test_config_names_every_registry_with_its_credential_source_and_endpoint(tmp_path: Path) -> None:
    layout = Layout(home=tmp_path, cloud_port=4566, registry_port=5000, airflow_port=8080)
    private = PrivateRegistries(
        refs={"ecr": f"{ECR}/ml-cache-demo/tools:1.0@sha256:{'2' * 64}",
              "private": f"127.0.0.1:5003/private/ml-cache-demo/large:1.0@sha256:{'3' * 64}"},
        credentials={ECR: {"source": "ecr"}, "127.0.0.1:5003": {"source": "secretsmanager", "secret_arn": ARN}},
        endpoints={ECR: "http://127.0.0.1:5002", "127.0.0.1:5003": "http://127.0.0.1:5003"})
    refs = {"small": f"127.0.0.1:5000/ml-cache-demo/small:1.0@sha256:{'1' * 64}", **private.refs}
    config = {"build": {"volume_size_gib": 8, "architecture": "x86_64"}, "aws": {"region": "us-west-2"}}
    write_config(layout, config, refs, private)
    written = yaml.safe_load(layout.config_path.read_text())
    # by tag, as a user writes them: each run resolves them, so a moved tag is the next week's change
    assert written["build"]["images"] == ["127.0.0.1:5000/ml-cache-demo/small:1.0", f"{ECR}/ml-cache-demo/tools:1.0",
                                          "127.0.0.1:5003/private/ml-cache-demo/large:1.0"]
    assert "volume_size_gib" not in written["build"]  # computed from the resolved sizes
    assert written["build"]["allowed_registries"] == ["127.0.0.1:5000", ECR, "127.0.0.1:5003"]
    assert written["aws"]["registry_credentials"] == {
        ECR: {"source": "ecr"}, "127.0.0.1:5003": {"source": "secretsmanager", "secret_arn": ARN}}
    assert written["aws"]["registry_endpoints"] == {"127.0.0.1:5000": "http://127.0.0.1:5000",
                                                    ECR: "http://127.0.0.1:5002",
                                                    "127.0.0.1:5003": "http://127.0.0.1:5003"}
    assert "rollout" not in written and written["aws"]["region"] == "us-west-2"
    assert "password" not in layout.config_path.read_text()
    assert "notifications" not in written  # no topic: nothing to notify


def test_a_local_topic_gets_failures_and_successes(tmp_path: Path) -> None:
    from ml_cache.settings.models import NotificationsConfig

    layout = Layout(home=tmp_path, cloud_port=4566, registry_port=5000, airflow_port=8080)
    private = PrivateRegistries(refs={"ecr": "e", "private": "p"}, credentials={}, endpoints={})
    topic = "arn:aws:sns:us-west-2:123456789012:ml-container-cache-notifications"
    write_config(layout, {"build": {}, "aws": {}}, {"small": "s", **private.refs}, private, topic_arn=topic)
    notifications = NotificationsConfig.model_validate(yaml.safe_load(layout.config_path.read_text())["notifications"])
    assert notifications.sns_topic_arn == topic and notifications.on_failure and notifications.on_success
