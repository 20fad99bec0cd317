"""Issue 10's late failures, refused by the settings with the key and the value: no private subnet,
an architecture the instance types do not have, an image list too long to report, an ECR allow-list
entry without an account, unknown trigger keys, a host spelled twice."""

from pathlib import Path

import pytest
from test_settings_resolve import REGION, resolve, with_config

from ml_cache.images import InvalidInputs
from ml_cache.settings import load_config, resolve_build_settings, resolve_janitor_settings, resolve_rollout_settings
from ml_cache.settings.fields import instance_architecture
from ml_cache.settings.models import DEFAULT_ARM64_INSTANCE_TYPES


def repo_config():
    return load_config(str(Path(__file__).resolve().parents[4] / "plugins/ml_cache/defaults/ml_container_cache.yaml"))


def test_the_repo_config_refuses_a_build_until_private_subnets_are_set():
    config = repo_config()
    assert config["aws"]["subnet_ids"] == []
    with pytest.raises(InvalidInputs, match=r"aws\.subnet_ids is empty: set the private subnet ids the builder runs "
                                            r"in .*default VPC with a public IP"):
        resolve_build_settings(config, {}, region=REGION)
    del config["aws"]["subnet_ids"]
    with pytest.raises(InvalidInputs, match=r"aws\.subnet_ids is empty"):
        resolve_build_settings(config, {}, region=REGION)


def test_a_rollout_needs_no_builder_subnet():
    assert resolve_rollout_settings(repo_config(), {}, region=REGION).aws.subnet_ids == []


@pytest.mark.parametrize(("instance_type", "architecture"), [
    ("c7g.2xlarge", "arm64"), ("m6gd.large", "arm64"), ("c6gn.xlarge", "arm64"), ("g5g.xlarge", "arm64"),
    ("x2gd.medium", "arm64"), ("r8g.large", "arm64"), ("im4gn.large", "arm64"), ("is4gen.large", "arm64"),
    ("a1.large", "arm64"), ("hpc7g.4xlarge", "arm64"),
    ("c6i.2xlarge", "x86_64"), ("g4dn.xlarge", "x86_64"), ("g5.xlarge", "x86_64"), ("m7i-flex.large", "x86_64"),
    ("p5.48xlarge", "x86_64"), ("inf2.xlarge", "x86_64"), ("c5.2xlarge", "x86_64"), ("m5zn.large", "x86_64"),
])
def test_the_family_name_says_the_architecture(instance_type, architecture):
    assert instance_architecture(instance_type) == architecture


def test_instance_types_of_the_other_architecture_are_refused(config):
    with pytest.raises(InvalidInputs, match=r"build: instance_types \['c7g\.2xlarge'\] are not x86_64 types \(their "
                                            r"family names say arm64\)"):
        resolve(config, instance_types=["c6i.2xlarge", "c7g.2xlarge"])
    with pytest.raises(InvalidInputs, match=r"instance_types \['c6i\.2xlarge'\] are not arm64 types"):
        resolve(config, architecture="arm64", instance_types=["c6i.2xlarge"])


def test_arm64_without_instance_types_gets_graviton_defaults(config):
    assert resolve(config, architecture="arm64").build.instance_types == DEFAULT_ARM64_INSTANCE_TYPES


def test_an_image_list_too_long_for_the_report_is_refused(config):
    images = [f"nvcr.io/nvidia/pytorch-{i}:24.08-py3" for i in range(120)]
    with pytest.raises(InvalidInputs, match=r"build: images: the builder's report for these 120 images can take "
                                            r"[0-9,]+ characters, more than the 24,000"):
        resolve(config, images=images)


def test_an_ecr_entry_for_any_account_is_refused_with_the_fix(config):
    config["build"]["allowed_registries"].append("*.dkr.ecr.*.amazonaws.com")
    with pytest.raises(InvalidInputs, match=r"allowed_registries entry '\*\.dkr\.ecr\.\*\.amazonaws\.com' allows the "
                                            r"ECR registries of any AWS account: name the account, e\.g\. "
                                            r"'123456789012\.dkr\.ecr\.\*\.amazonaws\.com'"):
        resolve(config)


def test_an_ecr_credential_pattern_widens_nothing_and_is_accepted(config):
    config["build"]["allowed_registries"].append("123456789012.dkr.ecr.us-west-2.amazonaws.com")
    image = "123456789012.dkr.ecr.us-west-2.amazonaws.com/ml/train:1"
    ecr = {"*.dkr.ecr.*.amazonaws.com": {"source": "ecr"}}
    settings = resolve(with_config(config, "aws", registry_credentials=ecr), images=[image])
    assert settings.build.images == [image]
    with pytest.raises(InvalidInputs, match=r"registry '210987654321\.dkr\.ecr\.us-west-2\.amazonaws\.com' is not in "
                                            r"allowed_registries"):
        resolve(config, images=["210987654321.dkr.ecr.us-west-2.amazonaws.com/ml/train:1"])


def test_an_upper_case_host_is_normalised_and_both_spellings_are_refused(config):
    assert resolve(config, images=["NVCR.io/nvidia/pytorch:1"]).build.images == ["nvcr.io/nvidia/pytorch:1"]
    with pytest.raises(InvalidInputs, match=r"duplicate image 'NVCR\.io/nvidia/pytorch:1': same as "
                                            r"'nvcr\.io/nvidia/pytorch:1'"):
        resolve(config, images=["nvcr.io/nvidia/pytorch:1", "NVCR.io/nvidia/pytorch:1"])


@pytest.mark.parametrize(("digest", "why"), [
    ("sha512:" + "0" * 128, r"image 'nvcr\.io/nvidia/pytorch@sha512:0+' is pinned by sha512: the pipeline verifies "
                            r"and publishes sha256 digests, pin it by sha256"),
    ("sha384:" + "0" * 96, r"is pinned by sha384"),
    ("sha1:" + "0" * 40, r"digest algorithm 'sha1' is not one containerd accepts"),
    ("sha256:" + "A" * 64, r"sha256 digest is 64 lower-case hex characters, got 64 with upper case"),
])
def test_digests_containerd_refuses_fail_in_the_settings(config, digest, why):
    with pytest.raises(InvalidInputs, match=why):
        resolve(config, images=[f"nvcr.io/nvidia/pytorch@{digest}"])


@pytest.mark.parametrize(("resolver", "key", "closest"), [
    (resolve_build_settings, "image", "images"),
    (resolve_build_settings, "instance_type", "instance_types"),
    (resolve_rollout_settings, "snapshot", "snapshot_id"),
])
def test_an_unknown_trigger_key_names_the_closest(config, resolver, key, closest):
    """The raw conf is checked, not only the params: with core.dag_run_conf_overrides_params off, its keys
    never reach the params."""
    with pytest.raises(InvalidInputs, match=rf"unknown parameter\(s\) \['{key}'\]: '{key}' \(did you mean "
                                            rf"'{closest}'\?\); the form has \["):
        resolver(config, {}, region=REGION, conf={key: ["x"]})
    with pytest.raises(InvalidInputs, match=rf"'{key}' \(did you mean '{closest}'\?\)"):
        resolver(config, {key: ["x"]}, region=REGION)


def test_a_key_like_nothing_is_named_without_a_guess(config):
    with pytest.raises(InvalidInputs, match=r"unknown parameter\(s\) \['zzz'\]: 'zzz'; the form has"):
        resolve_build_settings(config, {}, region=REGION, conf={"zzz": 1})
    with pytest.raises(InvalidInputs, match=r"'dryrun' \(did you mean 'dry_run'\?\)"):
        resolve_janitor_settings(config, {"dryrun": True}, region=REGION)


def test_the_allow_list_cannot_come_through_the_conf(config):
    with pytest.raises(InvalidInputs, match="allowed_registries cannot be overridden per run"):
        resolve_build_settings(config, {}, region=REGION, conf={"allowed_registries": ["*"]})
