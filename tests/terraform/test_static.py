"""terraform fmt and validate over every configuration under terraform/ (offline, provider mirror)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tf_runner import Terraform, copy_tree, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

CONFIGURATIONS = [".", "modules/airflow-policy", "modules/registry-read-policy", "modules/ecr-push-events", "examples/aws", "examples/local-cloud"]


def test_fmt_is_clean(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    result = Terraform(tree).run("fmt", "-check", "-recursive", "-diff", check=False)
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}"


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_validate(tmp_path: Path, configuration: str) -> None:
    tree = copy_tree(tmp_path)
    terraform = Terraform(tree / configuration)
    terraform.init()
    result = terraform.run("validate", "-json", check=False)
    assert result.returncode == 0, result.stdout
    assert '"valid": true' in result.stdout


def test_terraform_tests_pass(tmp_path: Path) -> None:
    """terraform/tests/*.tftest.hcl (mocked provider): no node template, node group or var.tags can carry
    ml-cache:role, nodes get no SSM policy, aws-node its CNI policy through Pod Identity."""
    tree = copy_tree(tmp_path)
    terraform = Terraform(tree)
    terraform.init()
    result = terraform.run("test", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


def _code(path: Path) -> str:
    """A .tf file without its comment lines."""
    return "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))


def test_only_the_airflow_policy_names_the_role_tag() -> None:
    """The key IAM trusts appears in the main locals (handed to the policy module) and in the policy module:
    no resource of the configuration sets it."""
    root = Path(__file__).resolve().parents[2] / "terraform"
    files = [path for path in root.rglob("*.tf") if ".terraform" not in path.parts]
    naming = sorted(str(path.relative_to(root)) for path in files if "ml-cache:role" in _code(path))
    assert naming == ["main.tf", "modules/airflow-policy/variables.tf"]
    using = sorted(str(path.relative_to(root)) for path in files if "local.role_tag_key" in _code(path))
    assert using == ["airflow_iam.tf"]
