"""SendCommand's DocumentHash in the local cloud (moto_ext/ssm): SSM runs only the content the caller expects.

https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_SendCommand.html: DocumentHash is the
hash SSM computed when the document (version) was created, DocumentHashType Sha256 or the deprecated Sha1.
moto ignores both; the build DAG relies on them (ml_cache.ssm_document), so the local cloud enforces them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError


def _content(marker: str) -> str:
    return json.dumps({"schemaVersion": "2.2", "description": marker, "mainSteps": [
        {"action": "aws:runShellScript", "name": "run", "inputs": {"runCommand": [f"echo {marker}"]}}]})


@pytest.fixture
def document(ssm: Any) -> Any:
    name = f"hash-test-{uuid.uuid4().hex[:8]}"
    ssm.create_document(Name=name, Content=_content("first"), DocumentType="Command", DocumentFormat="JSON")
    yield name
    ssm.delete_document(Name=name)


def _send(ssm: Any, name: str, digest: str, hash_type: str = "Sha256") -> dict[str, Any]:
    return ssm.send_command(InstanceIds=[], DocumentName=name, DocumentVersion="1",
                            DocumentHash=digest, DocumentHashType=hash_type)


def test_the_hash_ssm_reports_is_the_one_it_checks(ssm: Any, document: str) -> None:
    described = ssm.describe_document(Name=document, DocumentVersion="1")["Document"]
    assert described["HashType"] == "Sha256"
    assert described["Hash"] == hashlib.sha256(_content("first").encode()).hexdigest()
    assert _send(ssm, document, described["Hash"])["Command"]["DocumentName"] == document
    sha1 = hashlib.sha1(_content("first").encode()).hexdigest()  # noqa: S324 - the deprecated type SSM still takes
    assert _send(ssm, document, sha1, "Sha1")["Command"]["DocumentName"] == document


def test_other_content_under_the_same_name_and_version_is_refused(ssm: Any, document: str) -> None:
    expected = ssm.describe_document(Name=document, DocumentVersion="1")["Document"]["Hash"]
    ssm.delete_document(Name=document)  # someone replaces version 1 with other content
    ssm.create_document(Name=document, Content=_content("second"), DocumentType="Command", DocumentFormat="JSON")
    with pytest.raises(ClientError) as refused:
        _send(ssm, document, expected)
    assert refused.value.response["Error"]["Code"] == "InvalidDocument"
    assert f"does not match the Sha256 hash {expected}" in refused.value.response["Error"]["Message"]
    assert [c for c in ssm.list_commands()["Commands"] if c["DocumentName"] == document] == []


def test_without_a_hash_any_content_runs(ssm: Any, document: str) -> None:
    command = ssm.send_command(InstanceIds=[], DocumentName=document, DocumentVersion="1")["Command"]
    assert command["DocumentName"] == document
