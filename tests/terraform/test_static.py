"""terraform fmt and validate over every configuration under terraform/ (offline, provider mirror)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tf_runner import Terraform, copy_tree, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

CONFIGURATIONS = [".", "modules/airflow-policy", "modules/registry-read-policy", "examples/aws", "examples/local-cloud"]


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
