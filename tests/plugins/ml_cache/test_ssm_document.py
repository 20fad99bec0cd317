"""The SSM document carries the builder's files byte for byte; the spec reaches them only as data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml_cache.builder_spec import build_spec, encode_spec
from ml_cache.ssm_document import (
    BOOTSTRAP_TAIL,
    PAYLOAD,
    SSM_DOCUMENT_LIMIT,
    build_document,
    document_digest,
    register_document,
    shipped_files,
)

VOL = "vol-0123456789abcdef0"


def run_command(document: str) -> list[str]:
    return json.loads(document)["mainSteps"][0]["inputs"]["runCommand"]


def run_like_ssm(lines: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """SSM writes runCommand's lines to a file and runs it with sh."""
    (tmp_path / "_script.sh").write_text("\n".join(lines) + "\n")
    return subprocess.run(["sh", str(tmp_path / "_script.sh")], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60, check=False)


def test_document_passes_the_spec_as_an_environment_variable() -> None:
    document = json.loads(build_document())
    assert document["parameters"]["spec"]["interpolationType"] == "ENV_VAR"
    commands = "\n".join(run_command(build_document()))
    assert "{{ spec }}" not in commands and "{{spec}}" not in commands
    assert "{{" not in commands.replace("{{ executionTimeout }}", "")


def test_document_stays_under_the_ssm_size_limit() -> None:
    size = len(build_document().encode())
    assert size <= SSM_DOCUMENT_LIMIT, f"SSM document is {size} bytes, over the {SSM_DOCUMENT_LIMIT} limit"
    print(f"SSM document: {size} bytes of {SSM_DOCUMENT_LIMIT}")


def test_bootstrap_writes_every_file_byte_for_byte(tmp_path: Path) -> None:
    lines = run_command(build_document())
    assert lines[-len(BOOTSTRAP_TAIL):] == BOOTSTRAP_TAIL
    copy_out = [*lines[:-len(BOOTSTRAP_TAIL)], f'cp "$dir"/* "{tmp_path}/"']
    proc = run_like_ssm(copy_out, tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name, text in shipped_files().items():
        assert (tmp_path / name).read_text() == text, name


def test_the_document_runs_the_script_with_its_helpers_on_a_product_spec(tmp_path: Path) -> None:
    """No root needed: the run stops at the missing data volume, after the spec passed the builder's parser."""
    env = {"ML_CACHE_DEVICE_DIR": str(tmp_path), "ML_CACHE_DEVICE_WAIT_SECONDS": "0",
           "ML_CACHE_CONTAINERD_SERVICE": "process", "ML_CACHE_CONTAINERD_PIDFILE": str(tmp_path / "pid")}
    spec = build_spec("build", images=[f"nvcr.io/nvidia/pytorch:24.05-py3@sha256:{'a' * 64}"], platform="linux/amd64",
                      volume_id=VOL, parallel=3, registry_credentials={"nvcr.io": {"source": "anonymous"}},
                      registry_endpoints={"nvcr.io": "http://127.0.0.1:5000"})
    lines = run_command(build_document())
    proc = run_like_ssm(lines, tmp_path, SSM_spec=encode_spec(spec), **env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"data volume {VOL} not attached" in proc.stderr, proc.stderr

    spec["images"].append("nvcr.io/x:1;id")
    proc = run_like_ssm(lines, tmp_path, SSM_spec=encode_spec(spec), **env)
    assert proc.returncode == 1
    assert "invalid spec: spec['images'][1]: 'nvcr.io/x:1;id' is not an image reference pinned by digest" in proc.stderr


def test_the_documents_secrets_helper_refuses_a_failed_fetch_naming_host_and_source(tmp_path: Path) -> None:
    """The shipped credentials helper runs from the document too; a fetch that fails stops the run
    before the data volume is looked at."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text("#!/bin/sh\necho 'An error occurred (AccessDeniedException)' >&2\nexit 254\n")
    (bin_dir / "aws").chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)  # not a pyenv shim: that would put a real aws first
    arn = "arn:aws:secretsmanager:us-west-2:123456789012:secret:ngc-AbCdEf"
    spec = build_spec("build", images=[f"nvcr.io/nvidia/pytorch:24.05-py3@sha256:{'a' * 64}"], platform="linux/amd64",
                      volume_id=VOL, parallel=3,
                      registry_credentials={"nvcr.io": {"source": "secretsmanager", "secret_arn": arn}})
    proc = run_like_ssm(run_command(build_document()), tmp_path, SSM_spec=encode_spec(spec),
                        PATH=f"{bin_dir}:{os.environ['PATH']}", ML_CACHE_DEVICE_DIR=str(tmp_path))
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"cannot use the credentials for nvcr.io from secretsmanager {arn}: An error occurred" in proc.stderr
    assert "not attached" not in proc.stderr


@pytest.mark.parametrize("name", list(PAYLOAD))
def test_no_file_can_end_its_heredoc_early(name: str) -> None:
    files = shipped_files()
    files[name] = f"echo hi\n{PAYLOAD[name]}\nrm -rf /\n"
    with pytest.raises(ValueError, match=f"{name} must not contain its heredoc delimiter"):
        build_document(files)


def test_files_must_not_hold_ssm_placeholders_and_must_all_be_there() -> None:
    files = shipped_files()
    files["build_cache.sh"] += "echo {{ spec }}\n"
    with pytest.raises(ValueError, match="parameter placeholder"):
        build_document(files)
    with pytest.raises(ValueError, match="exactly"):
        build_document({"build_cache.sh": "echo hi\n"})


class FakeSsm:
    """The document calls register_document makes, against one stored document."""

    def __init__(self, stored: str | None) -> None:
        self.versions = [stored] if stored is not None else []
        self.default = "1" if stored is not None else None
        self.calls: list[str] = []

    def describe_document(self, name: str) -> dict | None:
        return {"DefaultVersion": self.default} if self.versions else None

    def create_document(self, name: str, content: str, tags: dict) -> dict:
        self.calls.append("create")
        self.versions, self.default = [content], "1"
        return {"DocumentVersion": "1"}

    def get_document_content(self, name: str, version: str) -> str:
        return self.versions[int(version) - 1]

    def update_document(self, name: str, content: str) -> dict:
        self.calls.append("update")
        self.versions.append(content)
        return {"DocumentVersion": str(len(self.versions))}

    def set_default_document_version(self, name: str, version: str) -> None:
        self.calls.append(f"default {version}")
        self.default = version


def test_register_document_creates_reuses_and_updates() -> None:
    current = build_document()
    created = FakeSsm(None)
    assert register_document(created, "doc", {}) == {"name": "doc", "version": "1", "sha256": document_digest(current)}
    unchanged = FakeSsm(json.dumps(json.loads(current)))  # same content, other formatting
    assert register_document(unchanged, "doc", {})["version"] == "1" and unchanged.calls == []
    changed = FakeSsm(json.dumps({"schemaVersion": "2.2", "mainSteps": []}))
    assert register_document(changed, "doc", {})["version"] == "2"
    assert changed.calls == ["update", "default 2"]
