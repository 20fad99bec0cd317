"""The SSM document runs our static script; the spec reaches it only as data."""

from __future__ import annotations

import base64
import json

import pytest

from ml_cache.operators.build_script import SSM_DOCUMENT_LIMIT, build_document, build_spec, encode_spec

HOSTILE = "registry.example.com/x:1;$(touch /tmp/pwned)`id`'\"\n"


def test_document_passes_the_spec_as_an_environment_variable():
    document = json.loads(build_document())
    spec = document["parameters"]["spec"]
    assert spec["interpolationType"] == "ENV_VAR"
    commands = "\n".join(document["mainSteps"][0]["inputs"]["runCommand"])
    assert "{{ spec }}" not in commands and "{{spec}}" not in commands
    assert len(build_document().encode()) <= SSM_DOCUMENT_LIMIT


def test_spec_is_one_base64_token_whatever_the_refs_contain():
    settings = {"images": [HOSTILE], "platform": "linux/amd64", "pull_parallelism": 3}
    encoded = encode_spec(build_spec("build", settings, {"data_volume_id": "vol-1"}))
    assert set(encoded) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    assert json.loads(base64.b64decode(encoded))["images"] == [HOSTILE]


def test_the_script_cannot_end_the_heredoc_early():
    with pytest.raises(ValueError, match="delimiter"):
        build_document("echo hi\nML_CACHE_SCRIPT_EOF\nrm -rf /\n")
