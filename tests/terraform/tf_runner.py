"""Run the terraform CLI on a throw-away copy of terraform/, initialised from the provider mirror.

Copies keep `.terraform/`, lock files and state out of the repository, and let tests run in
parallel with someone else's `terraform` in the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
CONFIG_FILE = REPO / "plugins" / "ml_cache" / "defaults" / "ml_container_cache.yaml"
PLUGIN_DIR = Path(os.environ.get("ML_CACHE_TF_PLUGIN_DIR", "/opt/tf-plugins"))
PROVIDER_GLOB = "registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*"
_IGNORED = shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "terraform.tfstate*", "*.tfplan")


def terraform_binary() -> str | None:
    return shutil.which("terraform")


def provider_mirror_present() -> bool:
    return any(PLUGIN_DIR.glob(PROVIDER_GLOB))


def skip_reason() -> str | None:
    """Why Terraform tests cannot run here, or None."""
    if terraform_binary() is None:
        return "terraform is not installed"
    if not provider_mirror_present():
        return f"no hashicorp/aws provider in the mirror {PLUGIN_DIR}"
    return None


def copy_tree(destination: Path) -> Path:
    """Copy terraform/ (without local state) and the DAG config the examples read; return the copy."""
    target = destination / "terraform"
    shutil.copytree(TERRAFORM_DIR, target, ignore=_IGNORED)
    packaged = destination / CONFIG_FILE.relative_to(REPO)
    packaged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(CONFIG_FILE, packaged)
    return target


@dataclass
class Terraform:
    """terraform in one working directory, with a private data dir and no user CLI config."""

    workdir: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            TF_CLI_CONFIG_FILE=os.devnull,
            TF_DATA_DIR=str(self.workdir / ".terraform"),
            CHECKPOINT_DISABLE="1",
        )
        for name in ("TF_LOG", "TF_WORKSPACE"):
            env.pop(name, None)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        command, *rest = args
        completed = subprocess.run(
            [terraform_binary() or "terraform", command, "-no-color", *rest],
            cwd=self.workdir, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"terraform {' '.join(args)} failed ({completed.returncode}):\n"
                f"{completed.stdout[-6000:]}\n{completed.stderr[-6000:]}"
            )
        return completed

    def init(self) -> None:
        self.run("init", "-backend=false", f"-plugin-dir={PLUGIN_DIR}", "-input=false")

    def apply(self, *args: str) -> float:
        """Apply and return the wall time in seconds."""
        started = time.monotonic()
        self.run("apply", "-auto-approve", "-input=false", *args)
        return time.monotonic() - started

    def destroy(self, *args: str) -> float:
        started = time.monotonic()
        self.run("destroy", "-auto-approve", "-input=false", *args)
        return time.monotonic() - started

    def outputs(self) -> dict[str, object]:
        raw = json.loads(self.run("output", "-json").stdout)
        return {name: item["value"] for name, item in raw.items()}
