"""The validation pod: name, labels and the manifest from the packaged defaults/validation-pod.yaml."""

from __future__ import annotations

import re

import pytest
import yaml

from ml_cache.validation.manifest import (
    DEFAULT_TEMPLATE,
    TEMPLATE_ENV,
    ValidationInputError,
    label_value,
    validation_pod_manifest,
    validation_pod_name,
)

DNS1123_LABEL_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
LABEL_VALUE_RE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def test_validation_pod_manifest_sets_fields_on_the_template():
    pod = validation_pod_manifest(namespace="ml-cache", image="nvcr.io/nvidia/pytorch:24.08-py3",
                                  node_name="ip-10-0-12-34.us-west-2.compute.internal",
                                  active_deadline_seconds=900, run_id="manual__2026-11-29T02:36:21.123456+00:00")
    assert pod["metadata"]["name"] == validation_pod_name(
        "ip-10-0-12-34.us-west-2.compute.internal", "nvcr.io/nvidia/pytorch:24.08-py3",
        "manual__2026-11-29T02:36:21.123456+00:00")
    assert pod["metadata"]["name"].startswith("mlc-validate-") and len(pod["metadata"]["name"]) == 25
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ml-container-cache"
    # the run id's ':' and '+' are not allowed in a label value: replaced, and a hash keeps it distinct
    assert re.fullmatch(r"manual__2026-11-29T02-36-21\.123456-00-00-[0-9a-f]{8}",
                        pod["metadata"]["labels"]["ml-cache/run-id"])
    assert pod["metadata"]["annotations"]["ml-cache/image"] == "nvcr.io/nvidia/pytorch:24.08-py3"
    spec = pod["spec"]
    assert spec["nodeName"] == "ip-10-0-12-34.us-west-2.compute.internal" and "nodeSelector" not in spec
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 900
    assert spec["automountServiceAccountToken"] is False
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    container = spec["containers"][0]
    assert container["image"] == "nvcr.io/nvidia/pytorch:24.08-py3"
    assert container["imagePullPolicy"] == "IfNotPresent" and "command" not in container
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_validation_pod_name_differs_per_node_image_and_run():
    names = {validation_pod_name(node, image, run)
             for node in ("a", "b") for image in ("x:1", "y:1") for run in ("r1", "r2")}
    assert len(names) == 8
    assert all(DNS1123_LABEL_RE.fullmatch(name) for name in names)


def test_hostile_values_stay_data():
    nasty = 'evil:1"\nspec: {hostNetwork: true}'
    pod = validation_pod_manifest(namespace="default", image=nasty, node_name="n1", active_deadline_seconds=60,
                                  command=["sh", "-c", "echo $(id) ready"], labels={"team": "a b/c"},
                                  toleration_key="example.com/accelerator")
    assert pod["spec"]["containers"][0]["image"] == nasty and "hostNetwork" not in pod["spec"]
    assert pod["spec"]["containers"][0]["command"] == ["sh", "-c", "echo $(id) ready"]
    assert pod["metadata"]["labels"]["team"].startswith("a-b-c")
    assert pod["spec"]["tolerations"][0]["key"] == "example.com/accelerator"
    for bad in ({"namespace": "Bad_NS"}, {"node_name": ""}, {"active_deadline_seconds": 0},
                {"name": "UPPER"}, {"command": []}):
        kwargs = {"namespace": "default", "image": "x:1", "node_name": "n1", "active_deadline_seconds": 60, **bad}
        with pytest.raises(ValidationInputError):
            validation_pod_manifest(**kwargs)


def test_template_path_override(tmp_path):
    template = yaml.safe_load(DEFAULT_TEMPLATE.read_text())
    template["metadata"]["labels"]["team"] = "vision"
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(template))
    pod = validation_pod_manifest(namespace="default", image="x:1", node_name="n1", active_deadline_seconds=60,
                                  template_path=path)
    assert pod["metadata"]["labels"]["team"] == "vision"


def test_template_from_the_environment_and_a_clear_error_when_missing(tmp_path, monkeypatch):
    kwargs = {"namespace": "default", "image": "x:1", "node_name": "n1", "active_deadline_seconds": 60}
    monkeypatch.setenv(TEMPLATE_ENV, str(tmp_path / "absent.yaml"))
    with pytest.raises(ValidationInputError, match=r"absent\.yaml not found"):
        validation_pod_manifest(**kwargs)
    (tmp_path / "pod.yaml").write_text(DEFAULT_TEMPLATE.read_text())
    monkeypatch.setenv(TEMPLATE_ENV, str(tmp_path / "pod.yaml"))
    assert validation_pod_manifest(**kwargs)["spec"]["nodeName"] == "n1"


@pytest.mark.parametrize(("text", "expected"), [
    ("abc", "abc"),
    ("scheduled__2026-11-29T03:00:00+00:00", "scheduled__2026-11-29T03-00-00-00-00-"),
    ("-x-", "x-"),
    ("a" * 80, "a" * 54 + "-"),
])
def test_label_values(text, expected):
    value = label_value(text)
    assert value.startswith(expected) and len(value) <= 63
    assert LABEL_VALUE_RE.fullmatch(value)


def test_created_at_annotation_and_the_run_selector():
    from ml_cache.validation.manifest import run_selector

    run_id = "manual__2026-11-29T02:36:21.123456+00:00"
    pod = validation_pod_manifest(namespace="default", image="x:1", node_name="n1", active_deadline_seconds=60,
                                  run_id=run_id, created_at="2026-11-29T02:36:22.000123+00:00")
    assert pod["metadata"]["annotations"]["ml-cache/created-at"] == "2026-11-29T02:36:22.000123+00:00"
    labels = pod["metadata"]["labels"]
    selector = dict(term.split("=") for term in run_selector(run_id).split(","))
    assert selector == {"app.kubernetes.io/managed-by": labels["app.kubernetes.io/managed-by"],
                        "ml-cache/run-id": labels["ml-cache/run-id"]}
    without = validation_pod_manifest(namespace="default", image="x:1", node_name="n1", active_deadline_seconds=60)
    assert "ml-cache/created-at" not in without["metadata"]["annotations"]
