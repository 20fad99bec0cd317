"""Inputs that used to fail after a builder ran are refused before any EC2 call, naming the key and the
value, at the first try (no retry cures them): the production retries are on (load_dag)."""

from __future__ import annotations

import pytest
import yaml

from tests.dags.conftest import assert_failed_with, run_dag


def assert_refused(cloud, run, states, task_id, cause, capfd, launched_before):
    """FAILED at `task_id` at its first try naming `cause`; no instance launched, the parameter kept."""
    assert_failed_with(run, states, task_id, cause, capfd, retried=False)
    assert states["launch_builder"] == "upstream_failed"
    assert cloud.instance_count() == launched_before
    assert cloud.parameter() == cloud.previous_snapshot


def test_an_unknown_trigger_key_is_refused_naming_the_closest(cloud, build_dag, capfd):
    before = cloud.instance_count()
    run, states = run_dag(build_dag, image=["busybox:1"])
    assert_refused(cloud, run, states, "validate_inputs",
                   r"unknown parameter\(s\) \['image'\]: 'image' \(did you mean 'images'\?\)", capfd, before)


def test_an_unknown_key_is_refused_even_when_the_conf_does_not_reach_the_params(cloud, build_dag, capfd,
                                                                                monkeypatch):
    """With core.dag_run_conf_overrides_params off, `image` never reaches the params: the raw conf is read."""
    monkeypatch.setenv("AIRFLOW__CORE__DAG_RUN_CONF_OVERRIDES_PARAMS", "False")
    before = cloud.instance_count()
    run, states = run_dag(build_dag, image=["busybox:1"])
    assert_refused(cloud, run, states, "validate_inputs", r"'image' \(did you mean 'images'\?\)", capfd, before)


def test_no_private_subnet_no_builder(cloud, build_dag, capfd):
    config = yaml.safe_load(cloud.config_path.read_text())
    config["aws"]["subnet_ids"] = []
    cloud.config_path.write_text(yaml.safe_dump(config))
    before = cloud.instance_count()
    run, states = run_dag(build_dag)
    assert_refused(cloud, run, states, "validate_inputs",
                   r"aws\.subnet_ids is empty: set the private subnet ids the builder runs in", capfd, before)


def test_an_image_list_too_long_for_the_report_is_refused(cloud, build_dag, capfd):
    images = [f"{cloud.registry or '127.0.0.1:1'}/ml-cache-demo/image-{i}:1.0" for i in range(90)]
    before = cloud.instance_count()
    run, states = run_dag(build_dag, images=images)
    assert_refused(cloud, run, states, "validate_inputs",
                   r"images: the builder's report for these 90 images can take [0-9,]+ characters, more than the "
                   r"24,000", capfd, before)


def test_arm64_with_x86_instance_types_is_refused(cloud, build_dag, capfd):
    before = cloud.instance_count()
    run, states = run_dag(build_dag, architecture="arm64", instance_types=["c6i.2xlarge"])
    assert_refused(cloud, run, states, "validate_inputs", r"instance_types \['c6i\.2xlarge'\] are not arm64 types",
                   capfd, before)


def test_an_unsupported_digest_algorithm_is_refused(cloud, build_dag, capfd):
    before = cloud.instance_count()
    run, states = run_dag(build_dag, images=[f"{cloud.registry or '127.0.0.1:1'}/ml-cache-demo/small@sha1:{'0' * 40}"])
    assert_refused(cloud, run, states, "validate_inputs", r"digest algorithm 'sha1' is not one containerd accepts",
                   capfd, before)


def test_an_ecr_allow_list_entry_for_any_account_is_refused(cloud, build_dag, capfd):
    config = yaml.safe_load(cloud.config_path.read_text())
    config["build"]["allowed_registries"].append("*.dkr.ecr.*.amazonaws.com")
    cloud.config_path.write_text(yaml.safe_dump(config))
    before = cloud.instance_count()
    run, states = run_dag(build_dag)
    assert_refused(cloud, run, states, "validate_inputs", r"allows the ECR registries of any AWS account: name the "
                   r"account, e\.g\. '123456789012\.dkr\.ecr\.\*\.amazonaws\.com'", capfd, before)


def test_a_zone_the_region_does_not_have_fails_the_preflight(cloud, build_dag, capfd):
    """us-west-2z has the region's form, so only EC2 can refuse it: resolve_ami's read-only preflight."""
    if cloud.registry is None:
        pytest.skip("resolve_images needs the loopback registry (data plane) to reach resolve_ami")
    cloud.write_config(fsr_availability_zones=["us-west-2a", "us-west-2z"])
    before = cloud.instance_count()
    run, states = run_dag(build_dag)
    assert_refused(cloud, run, states, "resolve_ami", r"fsr_availability_zones \['us-west-2z'\] do not exist in "
                   r"us-west-2", capfd, before)
    assert states["validate_inputs"] == "success"
