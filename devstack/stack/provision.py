"""Resources in the local cloud for the demo: Terraform's example applied (with the uncached baseline node
group, `uncached_baseline = true`) or the builder's few resources by hand, and the DAG config written from them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import yaml

from devstack.stack.layout import REGION, REPO, Layout, say
from ml_cache.settings.config import DEFAULT_CONFIG_PATH

if TYPE_CHECKING:
    from devstack.stack.private_registries import PrivateRegistries

NOTIFICATION_TOPIC = "ml-container-cache-notifications"
TERRAFORM_APPLY = REPO / "terraform" / "examples" / "local-cloud" / "apply.sh"


def aws(layout: Layout, service: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=layout.endpoint,
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106 (local cloud)


def terraform_missing() -> str | None:
    """Why the Terraform configuration cannot be applied here, or None."""
    if not shutil.which("terraform"):
        return "terraform is not installed"
    if not Path(os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins")).is_dir():
        return "no AWS provider mirror (TF_PLUGIN_DIR, default /opt/tf-plugins)"
    return None


def provision_with_terraform(layout: Layout) -> dict[str, Any]:
    """terraform/examples/local-cloud applied into the local cloud; its `ml_cache_config` output."""
    output = layout.home / "terraform" / "ml_cache_config.yaml"
    env = {"TF_VAR_uncached_baseline": "true",  # the baseline group (kept at 0) that each rollout times cold starts on
           **os.environ, "ML_CACHE_TF_STATE": str(layout.home / "terraform" / "terraform.tfstate"),
           "TF_DATA_DIR": str(layout.home / "terraform" / "data")}
    started = time.monotonic()
    result = subprocess.run(["bash", str(TERRAFORM_APPLY), layout.endpoint, str(output)], env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"terraform apply into the local cloud failed:\n{result.stderr[-3000:]}")
    say(f"terraform applied into the local cloud in {time.monotonic() - started:.1f} s")
    record_push_queue(layout, env)
    return yaml.safe_load(output.read_text())


def record_push_queue(layout: Layout, env: dict[str, str]) -> None:
    """The build-on-push queue URL (TF_VAR_ecr_push_repository_names set) for Airflow's environment, or none."""
    state = Path(env["ML_CACHE_TF_STATE"])
    # `output` reads only the state; run beside it, not in the configuration, whose lock file (after any apply)
    # would demand providers in TF_DATA_DIR
    result = subprocess.run(["terraform", f"-chdir={state.parent}", "output", "-no-color", f"-state={state}",
                             "-json", "ecr_push_queue_url"],
                            env=env, capture_output=True, text=True, check=False)
    url = json.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else None
    layout.push_queue_url_file.unlink(missing_ok=True)
    if url:
        layout.push_queue_url_file.write_text(url)
        say(f"build on push: ECR pushes reach {url}")


def provision_by_hand(layout: Layout) -> dict[str, Any]:
    """Without terraform: the few resources the build needs (profile, parameter), default subnets."""
    iam, ec2, ssm = aws(layout, "iam"), aws(layout, "ec2"), aws(layout, "ssm")
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_instance_profile(InstanceProfileName="ml-container-cache-builder")
    subnets = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])
    with contextlib.suppress(ssm.exceptions.ParameterAlreadyExists):
        ssm.put_parameter(Name="/ml-container-cache/snapshot-id", Value="none", Type="String")
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    config["aws"].update({"region": REGION, "subnet_ids": [s["SubnetId"] for s in subnets[:1]]})
    config["build"]["fsr_availability_zones"] = sorted({s["AvailabilityZone"] for s in subnets})[:3]
    config.pop("rollout")  # no cluster without Terraform: nothing to roll out to
    return config


def provision(layout: Layout) -> dict[str, Any]:
    reason = terraform_missing()
    if reason is None:
        return provision_with_terraform(layout)
    say(f"not applying Terraform ({reason}): creating the builder's resources directly")
    return provision_by_hand(layout)


def create_notification_topic(layout: Layout) -> str:
    """The SNS topic the DAGs notify in the local cloud (CreateTopic is idempotent): its ARN."""
    return aws(layout, "sns").create_topic(Name=NOTIFICATION_TOPIC)["TopicArn"]


def write_config(layout: Layout, config: dict[str, Any], refs: dict[str, str],
                 private: PrivateRegistries, topic_arn: str | None = None) -> None:
    """The provisioned config, with the demo images (anonymous, ECR, Secrets Manager) by tag (each run
    resolves them: a moved tag is next week's change), the registry credentials and endpoints, local
    Kubernetes access, local deadlines and, given a topic, notifications of failures and successes to it.
    No volume size: the build computes it from the sizes resolve_images finds."""
    config["build"].update({
        "images": [refs[key].partition("@")[0] for key in ("small", "ecr", "private")],
        "allowed_registries": [layout.registry, *private.endpoints],
    })
    config["build"].pop("volume_size_gib", None)
    config["aws"].update({
        "registry_credentials": private.credentials,
        "registry_endpoints": {layout.registry: f"http://{layout.registry}", **private.endpoints},
    })
    config.setdefault("timeouts", {}).update({"poll_seconds": 2, "update_seconds": 600, "validation_seconds": 300})
    if topic_arn is not None:
        config["notifications"] = {"sns_topic_arn": topic_arn, "on_success": True}
    if "rollout" in config:
        config["rollout"]["kubernetes_conn_id"] = "kubernetes_local"  # the baseline's keys come from Terraform
    layout.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def rollout_configured(layout: Layout) -> bool:
    return "rollout" in yaml.safe_load(layout.config_path.read_text())
