"""The SSM document carries the builder's files byte for byte; the spec reaches them only as data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ml_cache.builder_spec import build_spec, encode_spec
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.ssm_document import (
    BOOTSTRAP_TAIL,
    PAYLOAD,
    SSM_DOCUMENT_LIMIT,
    build_document,
    document_digest,
    register_document,
    shipped_files,
)
from tests.devstack.conftest import cloud  # noqa: F401 - the session's local cloud

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


@pytest.fixture
def ssm_hook(cloud, monkeypatch) -> CacheSsmHook:  # noqa: F811
    """Our hook on `aws_default`, pointing at the local cloud's SSM."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(
        {"conn_type": "aws", "login": "testing", "password": "testing",
         "extra": {"region_name": "us-west-2", "endpoint_url": cloud.endpoint}}))
    return CacheSsmHook(aws_conn_id="aws_default")


def test_register_document_creates_reuses_and_updates_and_pins_the_hash(ssm_hook: CacheSsmHook) -> None:
    ssm, name = ssm_hook.conn, f"ml-cache-doc-{uuid.uuid4().hex[:8]}"
    current = build_document()
    created = register_document(ssm_hook, name, {"ml-cache:pipeline": "p"})
    assert created == {"name": name, "version": "1", "sha256": document_digest(current)}
    assert ssm.describe_document(Name=name, DocumentVersion="1")["Document"]["Hash"] == created["sha256"]
    assert register_document(ssm_hook, name, {}) == created  # unchanged: no new version
    assert len(ssm.list_document_versions(Name=name)["DocumentVersions"]) == 1

    other = json.dumps({"schemaVersion": "2.2", "mainSteps": [{"action": "aws:runShellScript", "name": "x",
                                                               "inputs": {"runCommand": ["true"]}}]})
    ssm.update_document(Name=name, Content=other, DocumentVersion="$LATEST", DocumentFormat="JSON")
    ssm.update_document_default_version(Name=name, DocumentVersion="2")
    # A DAG deploy rolled back to these files: SSM refuses to store them twice, version 1 holds them.
    assert register_document(ssm_hook, name, {}) == created
    assert ssm.describe_document(Name=name)["Document"]["DefaultVersion"] == "1"

    ssm.update_document_default_version(Name=name, DocumentVersion="2")
    ssm.delete_document(Name=name, DocumentVersion="1")  # the janitor pruned it
    updated = register_document(ssm_hook, name, {})
    assert updated == {"name": name, "version": "3", "sha256": document_digest(current)}
    assert ssm.describe_document(Name=name)["Document"]["DefaultVersion"] == "3"
    ssm.delete_document(Name=name)
