"""RunBuilderScriptOperator sends the product's spec as one base64 parameter, and fails naming the cause."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.exceptions import TaskDeferred

from ml_cache.images import InvalidInputs
from ml_cache.operators.build_script import RunBuilderScriptOperator

HELPERS = Path(__file__).resolve().parents[4] / "plugins" / "ml_cache" / "scripts" / "build_cache_helpers.py"
ARGS = {"images": ["nvcr.io/nvidia/pytorch:24.05-py3"], "platform": "linux/amd64", "pull_parallelism": 2,
        "registry_credentials": {"nvcr.io": {"ssm_secure_parameter": "/ml-cache/ngc"}},
        "timeout_seconds": 3600, "poll_seconds": 15}
BUILDER = {"instance_id": "i-0123456789abcdef0", "data_volume_id": "vol-0123456789abcdef0"}


class FakeSsm:
    def __init__(self, invocation: dict[str, Any] | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.invocation = invocation or {}
        self.conn = SimpleNamespace(send_command=self.send_command)

    def send_command(self, **request: Any) -> dict[str, Any]:
        self.sent.append(request)
        return {"Command": {"CommandId": "cmd-1"}}

    def get_command_invocation(self, command_id: str, instance_id: str) -> dict[str, Any]:
        return self.invocation


def operator(hook: FakeSsm, args: dict[str, Any] = ARGS, action: str = "build") -> RunBuilderScriptOperator:
    op = RunBuilderScriptOperator(task_id="run_build_script", action=action, builder=BUILDER,
                                  document={"name": "doc", "version": "3"}, **args)
    op.__dict__["hook"] = hook  # the cached_property's slot: no AWS connection needed
    return op


def test_sends_the_spec_the_builder_parses(tmp_path: Path) -> None:
    hook = FakeSsm()
    with pytest.raises(TaskDeferred):
        operator(hook).execute({"ti": SimpleNamespace(run_id="manual__1")})
    request = hook.sent[0]
    assert (request["DocumentName"], request["DocumentVersion"]) == ("doc", "3")
    assert request["Parameters"]["executionTimeout"] == ["3600"]
    (encoded,) = request["Parameters"]["spec"]
    (tmp_path / "spec.json").write_bytes(base64.b64decode(encoded))
    assert json.loads((tmp_path / "spec.json").read_text())["volume_id"] == BUILDER["data_volume_id"]
    proc = subprocess.run(["python3", str(HELPERS), "parse-spec", str(tmp_path / "spec.json")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "parallel=2" in proc.stdout and "credential=nvcr.io /ml-cache/ngc" in proc.stdout


def test_a_spec_the_schema_refuses_is_never_sent() -> None:
    hook = FakeSsm()
    with pytest.raises(InvalidInputs, match=r"spec\['parallel'\]: 99"):
        operator(hook, {**ARGS, "pull_parallelism": 99}).execute({"ti": SimpleNamespace(run_id="r")})
    assert hook.sent == []


def test_failure_quotes_the_scripts_stderr() -> None:
    hook = FakeSsm({"Status": "Failed", "ResponseCode": 1, "StandardErrorContent": "x\nERROR: pull failed: nvcr.io/a"})
    with pytest.raises(RuntimeError, match=r"ended Failed \(exit code 1, command cmd-1\)[\s\S]*pull failed: nvcr.io/a"):
        operator(hook).execute_complete({}, {"status": "failure", "command_id": "cmd-1"})
