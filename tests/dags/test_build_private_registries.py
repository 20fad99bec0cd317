"""Private registries through the build DAG on the local cloud: each credential source caches a private
image end to end, each broken credential or missing image fails in resolve_images with no instance
launched, and the secret never shows up where anybody could read it.

The registries are the local cloud's fronts (tests/conftest.py: a Docker Hub/NGC-style bearer-token
registry, an ECR-style host that checks the local ECR's tokens), reached through
`aws.registry_endpoints` exactly as a pull-through mirror would be.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dags.conftest import assert_failed_with, needs_data_plane, run_dag

REGION = "us-west-2"
FOREIGN_ACCOUNT = "210987654321"


def unpinned(ref: str) -> str:
    """The ref by its tag, as a user writes it: resolve_images finds the digest."""
    return ref.split("@", 1)[0]


def configure(cloud: Any, images: list[str], credentials: dict[str, dict], endpoints: dict[str, str],
              **build: Any) -> None:
    """The DAG's config: these images, their registries allowed, credentials and endpoints."""
    cloud.write_config(images=images, **build)
    config = yaml.safe_load(cloud.config_path.read_text())
    allowed = config["build"]["allowed_registries"]
    allowed += [host for host in dict.fromkeys(ref.split("/", 1)[0] for ref in images) if host not in allowed]
    config["aws"]["registry_credentials"] = credentials
    config["aws"]["registry_endpoints"] = {**config["aws"].get("registry_endpoints", {}), **endpoints}
    cloud.config_path.write_text(yaml.safe_dump(config))


def secret_arn(cloud: Any, name: str, username: str, password: str) -> str:
    """A Secrets Manager secret in the local cloud holding {"username", "password"} (a wrong login;
    the registry's own is the `private_registry_secret` fixture)."""
    secrets = cloud.client("secretsmanager")
    value = json.dumps({"username": username, "password": password})
    try:
        return secrets.create_secret(Name=name, SecretString=value)["ARN"]
    except secrets.exceptions.ResourceExistsException:
        secrets.put_secret_value(SecretId=name, SecretString=value)
        return secrets.describe_secret(SecretId=name)["ARN"]


def assert_failed_in_resolve(cloud: Any, run: Any, states: dict[str, str], before: int, cause: str, capfd) -> None:
    """FAILED at resolve_images, at once (waiting does not cure it), naming the cause; no instance launched."""
    assert_failed_with(run, states, "resolve_images", cause, capfd, retried=False)
    assert states["launch_builder"] == "upstream_failed"
    assert cloud.instance_count() == before
    assert states["publish_snapshot"] != "success"


# ---- failures in resolve_images, before any EC2 call ---------------------------------------------


def test_a_wrong_password_fails_naming_the_image(cloud, build_dag, private_registry, capfd):
    arn = secret_arn(cloud, "ml-cache/wrong", private_registry.username, "not-the-password")
    image = unpinned(private_registry.image)
    configure(cloud, [image], {private_registry.host: {"source": "secretsmanager", "secret_arn": arn}},
              private_registry.endpoints)
    before = cloud.instance_count()
    run, states = run_dag(build_dag)
    assert_failed_in_resolve(cloud, run, states, before, rf"{image}.*unauthorized", capfd)


def test_an_expired_ecr_token_fails_naming_the_image(cloud, build_dag, ecr_registry, registry_faults, capfd):
    registry_faults(ecr_token_seconds=0)  # every token the local ECR hands out has already expired
    image = unpinned(ecr_registry.image)
    configure(cloud, [image], {ecr_registry.host: {"source": "ecr"}}, ecr_registry.endpoints)
    before = cloud.instance_count()
    run, states = run_dag(build_dag)
    assert_failed_in_resolve(cloud, run, states, before, rf"{image}.*unauthorized.*expired", capfd)


def test_a_token_of_another_account_fails_naming_the_image(cloud, build_dag, ecr_registry, registry_backend, capfd):
    """Airflow's role gets tokens for its own account; a repository of another account, with no
    repository policy granting that account, refuses them (403, not a missing image)."""
    import boto3

    from devstack import registries

    # the other account's admin (moto gives an assumed role of another account its own state)
    session = cloud.client("sts").assume_role(RoleArn=f"arn:aws:iam::{FOREIGN_ACCOUNT}:role/admin",
                                              RoleSessionName="other-team")["Credentials"]
    boto3.client("ecr", region_name=ecr_registry.region, endpoint_url=cloud.endpoint,
                 aws_access_key_id=session["AccessKeyId"], aws_secret_access_key=session["SecretAccessKey"],
                 aws_session_token=session["SessionToken"]).create_repository(repositoryName=ecr_registry.repository)
    front = registries.start_ecr(FOREIGN_ACCOUNT, ecr_registry.region, registry_backend)
    try:
        image = f"{front.host}/{ecr_registry.repository}:1.0"
        configure(cloud, [image], {"*.dkr.ecr.*.amazonaws.com": {"source": "ecr"}}, {front.host: front.endpoint})
        before = cloud.instance_count()
        run, states = run_dag(build_dag)
    finally:
        registries.stop(front.host)
    assert_failed_in_resolve(cloud, run, states, before, rf"{image}.*unauthorized.*not authorized to perform", capfd)


def test_a_missing_tag_fails_naming_the_image(cloud, build_dag, ecr_registry, capfd):
    image = f"{ecr_registry.host}/{ecr_registry.repository}:no-such-tag"
    configure(cloud, [image], {ecr_registry.host: {"source": "ecr"}}, ecr_registry.endpoints)
    before = cloud.instance_count()
    run, states = run_dag(build_dag)
    assert_failed_in_resolve(cloud, run, states, before, rf"{image}.*not found", capfd)


def test_a_missing_architecture_fails_naming_the_image(cloud, build_dag, private_registry, private_registry_secret,
                                                      capfd):
    arn = private_registry_secret()
    image = unpinned(private_registry.image)
    configure(cloud, [image], {private_registry.host: {"source": "secretsmanager", "secret_arn": arn}},
              private_registry.endpoints, architecture="arm64",  # the demo image is built for this machine only
              instance_types=["c7g.2xlarge"])  # builders of the architecture (validation refuses x86 ones)
    before = cloud.instance_count()
    run, states = run_dag(build_dag)
    assert_failed_in_resolve(cloud, run, states, before, rf"{image}.*no such platform.*linux/arm64", capfd)


# ---- each source end to end, and nowhere a secret ------------------------------------------------


class SecretWatch:
    """Scans every process's argv and environment while a run goes on, for one value."""

    def __init__(self, needle: str) -> None:
        self.needle = needle.encode()
        self.found: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scan, daemon=True)

    def _scan(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").glob("[0-9]*"):
                for name in ("cmdline", "environ"):
                    try:
                        if self.needle in (proc / name).read_bytes():
                            self.found.append(f"{proc.name}/{name}: {(proc / 'cmdline').read_bytes()[:200]!r}")
                    except OSError:
                        continue
            time.sleep(0.01)

    def __enter__(self) -> SecretWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def ssm_traces(cloud: Any, run: Any) -> str:
    """The run's SSM commands (build, quiesce) on its builder: parameters and output, as the API shows
    them to anybody allowed to list commands."""
    ssm = cloud.client("ssm")
    builder = run.get_task_instance("wait_for_builder").xcom_pull(task_ids="wait_for_builder")["instance_id"]
    commands = [c for c in ssm.list_commands()["Commands"] if c.get("Comment", "").endswith(run.run_id)]
    assert len(commands) == 2, commands
    texts = []
    for command in commands:
        texts.append(json.dumps(command["Parameters"]))
        invocation = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=builder)
        texts += [invocation.get("StandardOutputContent", ""), invocation.get("StandardErrorContent", "")]
    return "\n".join(texts)


def xcom_values(run: Any) -> str:
    return "\n".join(json.dumps(ti.xcom_pull(task_ids=ti.task_id), default=str) for ti in run.get_task_instances())


@needs_data_plane
@pytest.mark.parametrize("source", ["secretsmanager", "ssm_secure_parameter"])
def test_private_images_are_cached_by_their_resolved_digests_and_the_secret_is_nowhere(
        cloud, build_dag, private_registry, private_registry_secret, ecr_registry, source, capfd):
    if source == "secretsmanager":
        credential = {"source": "secretsmanager", "secret_arn": private_registry_secret()}
    else:
        name = "/ml-cache/registry/puller"
        cloud.client("ssm").put_parameter(Name=name, Type="SecureString", Overwrite=True,
                                          Value=f"{private_registry.username}:{private_registry.password}")
        credential = {"source": "ssm_secure_parameter", "parameter_name": name}
    images = [unpinned(private_registry.image), unpinned(ecr_registry.image)]
    configure(cloud, images, {private_registry.host: credential, "*.dkr.ecr.*.amazonaws.com": {"source": "ecr"}},
              {**private_registry.endpoints, **ecr_registry.endpoints})
    with SecretWatch(private_registry.password) as watch:
        run, states = run_dag(build_dag)
    output = capfd.readouterr().out
    assert str(run.state) == "success", states

    resolved = run.get_task_instance("resolve_images").xcom_pull(task_ids="resolve_images")
    assert [(i["ref"], i["authenticated"]) for i in resolved["images"]] == [(images[0], source), (images[1], "ecr")]
    expected = [private_registry.image.split("@")[1], ecr_registry.image.split("@")[1]]
    assert [i["digest"] for i in resolved["images"]] == expected
    metadata = json.loads(cloud.parameter("/ml-container-cache/snapshot-metadata"))
    assert [(i["ref"], i["digest"]) for i in metadata["images"]] == list(zip(images, expected, strict=True))
    assert metadata["volume_size_gib"] == resolved["volume_size_gib"]

    assert watch.found == [], "the registry password was on a command line or in an environment"
    traces = (("task logs", output), ("XCom", xcom_values(run)), ("SSM commands", ssm_traces(cloud, run)))
    for where, text in traces:
        assert private_registry.password not in text, f"the registry password is in the {where}"
