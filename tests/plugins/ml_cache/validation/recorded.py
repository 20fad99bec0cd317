"""Recorded Kubernetes API shapes (fixtures/): a pod and its events, as the API returned them."""

from __future__ import annotations

import json
from pathlib import Path

from ml_cache.validation.report import NodeResult, node_result

FIXTURES = Path(__file__).parent / "fixtures"


def recorded(name: str) -> tuple[dict, list[dict]]:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    return data["pod"], data["events"]


def result(name: str, **kwargs) -> NodeResult:
    pod, events = recorded(name)
    return node_result(pod, events, **kwargs)
