"""Our SSM Command document: it carries the builder's files, and takes the spec only as data.

SSM runs runCommand with `sh`; the bootstrap writes each shipped file byte for byte through a
quoted heredoc into a private directory and runs the script with bash. The heredocs carry each file
as base64 of its gzip: in plain text the files no longer fit SSM's 64 KB document limit. The spec never appears
in this text: SSM hands it over as the environment variable SSM_spec (interpolationType ENV_VAR).

Who owns the document: the DAG registers it, not Terraform. Its content is the builder script of the
DAG version that runs; a Terraform-owned document would need a `terraform apply` for every DAG deploy
and would drift from the DAG in between. What keeps it safe instead: IAM lets Airflow create, update
and delete only this document name (terraform/modules/airflow-policy), and every SendCommand pins the
DocumentVersion registered here and its DocumentHash (Sha256, as SSM computed it for that version,
whose content was checked to be ours): SSM refuses to run a version whose content changed since
(deleted and re-created under the same number).
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
from pathlib import Path

from ml_cache.hooks.ssm import CacheSsmHook

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
SSM_DOCUMENT_LIMIT = 64 * 1024
BASE64_LINE = 1024
# file name -> its heredoc delimiter; the first file is the script that runs
PAYLOAD = {
    "build_cache.sh": "ML_CACHE_SCRIPT_EOF",
    "build_cache_helpers.py": "ML_CACHE_HELPERS_EOF",
    "build_cache_secrets.py": "ML_CACHE_SECRETS_EOF",
    "build_cache_prefetch.py": "ML_CACHE_PREFETCH_EOF",
    "build_cache_apply.py": "ML_CACHE_APPLY_EOF",
    "build_spec.schema.json": "ML_CACHE_SCHEMA_EOF",
}
BOOTSTRAP_HEAD = [
    "set -eu",
    'dir="$(mktemp -d /tmp/ml-cache-build.XXXXXX)"',
    "trap 'rm -rf \"$dir\"' EXIT",
]
BOOTSTRAP_TAIL = ['bash "$dir/build_cache.sh"']
STEP_NAME = "buildCache"  # also names the CloudWatch log streams of its output (ml_cache.build_progress)


def shipped_files() -> dict[str, str]:
    """The files the builder needs, as shipped beside this module."""
    return {name: (SCRIPTS_DIR / name).read_text(encoding="utf-8") for name in PAYLOAD}


def _heredoc(name: str, text: str) -> list[str]:
    """The lines that write `name`: base64 of its gzip (mtime 0: the same files give the same document,
    so an unchanged DAG keeps its registered version). The checks hold for the plain text too, so the
    files stay shippable as they are."""
    delimiter = PAYLOAD[name]
    if delimiter in text:
        raise ValueError(f"{name} must not contain its heredoc delimiter {delimiter}")
    if "{{" in text:
        raise ValueError(f"{name} must not contain '{{{{': SSM would read it as a parameter placeholder")
    packed = base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode()
    lines = [packed[i:i + BASE64_LINE] for i in range(0, len(packed), BASE64_LINE)]
    return [f"base64 -d <<'{delimiter}' | gzip -dc > \"$dir/{name}\"", *lines, delimiter]


def build_document(files: dict[str, str] | None = None) -> str:
    """The SSM Command document (schema 2.2) that runs the builder script on its spec."""
    files = files if files is not None else shipped_files()
    if set(files) != set(PAYLOAD):
        raise ValueError(f"the document carries exactly {sorted(PAYLOAD)}, got {sorted(files)}")
    run_command = [*BOOTSTRAP_HEAD]
    for name in PAYLOAD:
        run_command += _heredoc(name, files[name])
    document = {
        "schemaVersion": "2.2",
        "description": "Pull container images into containerd on the data volume and verify them "
                       "(ml-container-cache builder).",
        "parameters": {
            "spec": {
                "type": "String",
                "description": "Base64 of the JSON build spec; delivered as the environment variable SSM_spec.",
                "allowedPattern": "^[A-Za-z0-9+/=]{1,65536}$",
                "interpolationType": "ENV_VAR",
            },
            "executionTimeout": {
                "type": "String",
                "default": "3600",
                "description": "Seconds the build may run.",
                "allowedPattern": "^[1-9][0-9]{0,5}$",
            },
        },
        "mainSteps": [{
            "action": "aws:runShellScript",
            "name": STEP_NAME,
            "inputs": {
                "timeoutSeconds": "{{ executionTimeout }}",
                "runCommand": [*run_command, *BOOTSTRAP_TAIL],
            },
        }],
    }
    content = json.dumps(document, sort_keys=True, separators=(",", ":"))  # compact: the 64 KB limit counts every byte
    if len(content.encode()) > SSM_DOCUMENT_LIMIT:
        raise ValueError(f"SSM document would be {len(content.encode())} bytes, over the 64 KB limit")
    return content


def document_digest(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def _registered(hook: CacheSsmHook, name: str, version: str) -> dict[str, str]:
    """What SendCommand pins: the version and the hash SSM holds for it (our content's, checked)."""
    described = hook.conn.describe_document(Name=name, DocumentVersion=version)["Document"]
    if described.get("HashType", "Sha256") != "Sha256" or not described.get("Hash"):
        raise ValueError(f"SSM document {name} version {version} has no Sha256 hash to pin "
                         f"({described.get('HashType')}): delete it so the next run re-creates it")
    return {"name": name, "version": version, "sha256": described["Hash"]}


def _version_holding(hook: CacheSsmHook, name: str, content: str) -> str:
    """The version of `name` whose content is `content` (SSM refused to store it twice)."""
    for version in hook.list_document_versions(name):
        if json.loads(hook.get_document_content(name, version["DocumentVersion"])) == json.loads(content):
            return version["DocumentVersion"]
    raise ValueError(f"SSM says a version of {name} holds the builder script, but none does")


def register_document(hook: CacheSsmHook, name: str, tags: dict[str, str]) -> dict[str, str]:
    """Make `name`'s default version hold the current files; returns the version to run and its hash."""
    content = build_document()
    existing = hook.describe_document(name)
    if existing is None:
        created = hook.create_document(name, content, tags)
        return _registered(hook, name, created["DocumentVersion"])
    default_version = existing["DefaultVersion"]
    if json.loads(hook.get_document_content(name, default_version)) == json.loads(content):
        return _registered(hook, name, default_version)
    try:
        version = hook.update_document(name, content)["DocumentVersion"]
    except hook.conn.exceptions.DuplicateDocumentContent:  # an older version holds it (a DAG rolled back)
        version = _version_holding(hook, name, content)
    hook.set_default_document_version(name, version)
    return _registered(hook, name, version)
