"""Command documents: the built-in AWS-RunShellScript, parsing, and SendCommand parameters made into steps.

ENV_VAR parameters reach the script only as SSM_* environment variables: data, never script text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from devstack.agent.models import PluginRun

DEFAULT_EXECUTION_TIMEOUT = 3600

RUN_SHELL_SCRIPT = {
    "schemaVersion": "2.2",
    "description": "Built-in AWS-RunShellScript",
    "parameters": {
        "commands": {"type": "StringList"},
        "workingDirectory": {"type": "String", "default": ""},
        "executionTimeout": {"type": "String", "default": str(DEFAULT_EXECUTION_TIMEOUT)},
    },
    "mainSteps": [
        {
            "action": "aws:runShellScript",
            "name": "runShellScript",
            "inputs": {
                "runCommand": "{{ commands }}",
                "workingDirectory": "{{ workingDirectory }}",
                "timeoutSeconds": "{{ executionTimeout }}",
            },
        }
    ],
}
BUILTIN_DOCUMENTS = {"AWS-RunShellScript": RUN_SHELL_SCRIPT}

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


class InvalidParameters(ValueError):
    """The parameters do not fit the document (SSM answers InvalidParameters)."""


class InvalidDocument(ValueError):
    """The document cannot run here (not schema 2.x or no runShellScript step)."""


def plan(document_name: str, content: dict[str, Any], parameters: dict[str, Any], cmd_dir: Path
         ) -> tuple[list[PluginRun], dict[str, str]]:
    """Turn a 2.x Command document + SendCommand parameters into steps and SSM_* env vars.

    ENV_VAR parameters go to the environment only (data, never script text); other `{{ name }}`
    placeholders are substituted in runCommand, workingDirectory and timeoutSeconds.
    """
    if not str(content.get("schemaVersion", "")).startswith("2."):
        raise InvalidDocument(f"{document_name}: only schema 2.x Command documents can run here")
    declared: dict[str, dict[str, Any]] = content.get("parameters") or {}
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise InvalidParameters(f"document {document_name} does not support parameters: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    env: dict[str, str] = {}
    for name, spec in declared.items():
        if name in parameters:
            value = parameters[name]
        elif "default" in spec:
            value = spec["default"]
        else:
            raise InvalidParameters(f"document {document_name} requires parameter {name}")
        value = _normalise(value, spec.get("type", "String"))
        if spec.get("allowedPattern") and isinstance(value, str) and not re.fullmatch(spec["allowedPattern"], value):
            raise InvalidParameters(f"parameter {name} does not match its allowedPattern")
        if spec.get("interpolationType") == "ENV_VAR":
            env[f"SSM_{name}"] = value if isinstance(value, str) else json.dumps(value)
        else:
            values[name] = value
    plugins = []
    for index, step in enumerate(content.get("mainSteps") or []):
        if step.get("action") != "aws:runShellScript":
            continue
        inputs = step.get("inputs") or {}
        name = step.get("name") or f"step{index}"
        lines = _substitute(inputs.get("runCommand", []), values)
        script = "\n".join(lines if isinstance(lines, list) else [str(lines)]) + "\n"
        timeout = _substitute(inputs.get("timeoutSeconds", DEFAULT_EXECUTION_TIMEOUT), values)
        workdir = _substitute(inputs.get("workingDirectory", ""), values)
        try:
            timeout_seconds = float(timeout)
        except (TypeError, ValueError) as error:
            raise InvalidParameters(f"timeoutSeconds {timeout!r} is not a number") from error
        plugins.append(PluginRun(
            name=name, script=script, timeout_seconds=timeout_seconds, working_directory=str(workdir or ""),
            stdout_path=cmd_dir / f"{index}-stdout", stderr_path=cmd_dir / f"{index}-stderr",
        ))
    if not plugins:
        raise InvalidDocument(f"{document_name} has no aws:runShellScript step")
    return plugins, env


def parse_document(text: str) -> dict[str, Any]:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return yaml.safe_load(text)


def _normalise(value: Any, param_type: str) -> Any:
    """SendCommand sends every value as a list of strings; String parameters take the first."""
    if param_type == "StringList":
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if isinstance(value, list):
        return str(value[0]) if len(value) == 1 else "\n".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _substitute(template: Any, values: dict[str, Any]) -> Any:
    """`{{ name }}` -> value; a list element that is exactly one StringList placeholder expands."""
    if isinstance(template, list):
        out: list[str] = []
        for item in template:
            replaced = _substitute(item, values)
            out.extend(replaced if isinstance(replaced, list) else [replaced])
        return out
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template.strip())
    if whole and whole.group(1) in values:
        return values[whole.group(1)]

    def replace(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            return match.group(0)
        value = values[match.group(1)]
        return "\n".join(value) if isinstance(value, list) else str(value)

    return _PLACEHOLDER.sub(replace, template)


