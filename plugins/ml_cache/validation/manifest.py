"""The validation pod for one (node, image) of a rollout: its name, labels and manifest.

The manifest comes from the packaged defaults/validation-pod.yaml; values are set on the loaded
object, never formatted into YAML text. No airflow or kubernetes import here.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

MANAGED_BY = "ml-container-cache"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
RUN_ID_LABEL = "ml-cache/run-id"
NODE_ANNOTATION = "ml-cache/node"
IMAGE_ANNOTATION = "ml-cache/image"
NAME_PREFIX = "mlc-validate-"
GPU_TOLERATION_KEY = "nvidia.com/gpu"
# shipped inside the package (importlib.resources: plugins/ and dags/ are all MWAA or an image
# carries); $ML_CACHE_VALIDATION_POD_TEMPLATE overrides it
DEFAULT_TEMPLATE: Traversable = files("ml_cache") / "defaults" / "validation-pod.yaml"
TEMPLATE_ENV = "ML_CACHE_VALIDATION_POD_TEMPLATE"
# the creating client's clock just before the create call: the sub-second origin of the timings
CREATED_AT_ANNOTATION = "ml-cache/created-at"

_LABEL_VALUE_MAX = 63
_DNS1123_LABEL_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")


class ValidationInputError(ValueError):
    """A validation pod cannot be rendered, or a report cannot be judged."""


def label_value(text: str) -> str:
    """Make any text (an Airflow run id) a valid label value: <= 63 chars of [-A-Za-z0-9_.],
    alphanumeric at both ends; a hash suffix keeps shortened values distinct."""
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "-", str(text)).strip("-_.")
    if len(cleaned) > _LABEL_VALUE_MAX or cleaned != str(text):
        digest = hashlib.sha256(str(text).encode()).hexdigest()[:8]
        cleaned = f"{cleaned[:_LABEL_VALUE_MAX - 9].rstrip('-_.')}-{digest}".strip("-_.")
    return cleaned


def validation_pod_name(node_name: str, image: str, run_id: str | None = None) -> str:
    """`mlc-validate-<12 hex>`: DNS-1123, stable for one (node, image, run), so a retried task finds
    its pod instead of creating a second one, and two runs never collide."""
    key = "\n".join([node_name, image, run_id or ""])
    return NAME_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:12]


def validation_pod_manifest(
    *,
    namespace: str,
    image: str,
    node_name: str,
    active_deadline_seconds: int,
    name: str | None = None,
    run_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    toleration_key: str = GPU_TOLERATION_KEY,
    command: list[str] | None = None,
    template_path: str | Path | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """The validation pod for one (node, image), from the packaged defaults/validation-pod.yaml.

    The template is loaded as YAML and fields are set on the object: no value is ever formatted
    into YAML text. `command=None` keeps the image's own entrypoint (the demo images print
    "ready" and exit 0). `created_at` (ISO 8601) travels in an annotation, so whoever reads the
    pod later (another poke, another worker) has the creating client's clock reading.
    """
    if not image or not isinstance(image, str):
        raise ValidationInputError(f"image must be a non-empty string, got {image!r}")
    if not node_name or not isinstance(node_name, str):
        raise ValidationInputError(f"node_name must be a non-empty string, got {node_name!r}")
    if type(active_deadline_seconds) is not int or active_deadline_seconds <= 0:
        raise ValidationInputError(f"active_deadline_seconds must be a positive int, got {active_deadline_seconds!r}")
    if not _DNS1123_LABEL_RE.fullmatch(namespace or ""):
        raise ValidationInputError(f"namespace {namespace!r} is not a DNS-1123 label")
    pod_name = name or validation_pod_name(node_name, image, run_id)
    if not _DNS1123_LABEL_RE.fullmatch(pod_name):
        raise ValidationInputError(f"pod name {pod_name!r} is not a DNS-1123 label")
    if command is not None and (not command or not all(isinstance(arg, str) for arg in command)):
        raise ValidationInputError(f"command must be a non-empty list of strings, got {command!r}")

    chosen = template_path or os.environ.get(TEMPLATE_ENV)
    path = Path(chosen) if chosen else DEFAULT_TEMPLATE
    if not path.is_file():
        raise ValidationInputError(f"validation pod template {path} not found: ship plugins/ml_cache whole "
                                   f"(with defaults/) or point ${TEMPLATE_ENV} at a validation-pod.yaml")
    manifest = yaml.safe_load(path.read_text())
    metadata = manifest["metadata"]
    metadata["name"] = pod_name
    metadata["namespace"] = namespace
    pod_labels = metadata.setdefault("labels", {})
    for key, value in (labels or {}).items():
        pod_labels[key] = label_value(value)
    pod_labels[MANAGED_BY_LABEL] = MANAGED_BY
    if run_id is not None:
        pod_labels[RUN_ID_LABEL] = label_value(run_id)
    # annotations hold the exact values, which labels cannot (length, characters)
    annotations = metadata.setdefault("annotations", {})
    annotations.update({NODE_ANNOTATION: node_name, IMAGE_ANNOTATION: image})
    if created_at is not None:
        annotations[CREATED_AT_ANNOTATION] = created_at

    spec = manifest["spec"]
    spec["nodeName"] = node_name
    spec["activeDeadlineSeconds"] = active_deadline_seconds
    spec["tolerations"] = [{"key": toleration_key, "operator": "Exists", "effect": "NoSchedule"}]
    container = spec["containers"][0]
    container["image"] = image
    container["imagePullPolicy"] = "IfNotPresent"
    if command is not None:
        container["command"] = list(command)
    return manifest


def run_selector(run_id: str) -> str:
    """The label selector of one run's validation pods (what the teardown deletes)."""
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{RUN_ID_LABEL}={label_value(run_id)}"
