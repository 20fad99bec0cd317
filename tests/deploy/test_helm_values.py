"""deploy/helm/values.yaml against the official Airflow chart's values schema, as far as we use it.

No Helm and no cluster here, so the keys and types we set are checked against facts read in the
chart's chart/values.schema.json (apache/airflow, an Airflow 3 chart: `apiServer`, `jwtSecretName`,
`workers.celery`, defaultAirflowTag 3.1.7), written down below as a JSON schema of the part we use.
Ours refuses any key outside it: a key the chart would ignore (a typo) or a key not verified yet.
"""

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator

REPO = Path(__file__).resolve().parents[2]
VALUES_FILE = REPO / "deploy" / "helm" / "values.yaml"

STRING_OR_NULL = {"type": ["string", "null"]}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# Every component's `serviceAccount` (workers, triggerer, dagProcessor, apiServer: the same shape).
SERVICE_ACCOUNT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "automountServiceAccountToken": {"type": "boolean"},
        "create": {"type": "boolean"},
        "name": STRING_OR_NULL,
        "annotations": STRING_MAP,
    },
}
# Chart `env`: items {name, value}, both required, nothing else.
ENV = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
        "required": ["name", "value"],
        "additionalProperties": False,
    },
}
# The chart's executor pattern, verbatim.
EXECUTOR_PATTERN = (r"^(([a-zA-Z_][a-zA-Z0-9_]*.)*[A-Z][a-zA-Z0-9]+Executor)"
                    r"(,(([a-zA-Z_][a-zA-Z0-9_]*.)*[A-Z][a-zA-Z0-9]+Executor))*$")
CHART_FACTS = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,  # ours: only keys whose place and type were read in the chart
    "properties": {
        "airflowVersion": {"type": "string"},
        "defaultAirflowTag": {"type": "string"},
        "executor": {"type": "string", "pattern": EXECUTOR_PATTERN},
        "images": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "airflow": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "repository": STRING_OR_NULL,
                        "tag": STRING_OR_NULL,
                        "digest": STRING_OR_NULL,
                        "pullPolicy": {"type": "string", "enum": ["Always", "Never", "IfNotPresent"]},
                    },
                },
            },
        },
        "env": ENV,
        "volumes": {"type": "array", "items": {"type": "object"}},
        "volumeMounts": {"type": "array", "items": {"type": "object"}},
        "triggerer": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"enabled": {"type": "boolean"}, "serviceAccount": SERVICE_ACCOUNT},
        },
        "workers": {"type": "object", "additionalProperties": False, "properties": {"serviceAccount": SERVICE_ACCOUNT}},
        "dagProcessor": {"type": "object", "additionalProperties": False,
                         "properties": {"serviceAccount": SERVICE_ACCOUNT}},
        "apiServer": {"type": "object", "additionalProperties": False,
                      "properties": {"serviceAccount": SERVICE_ACCOUNT}},
        "postgresql": {"type": "object", "additionalProperties": False, "properties": {"enabled": {"type": "boolean"}}},
        "data": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"metadataSecretName": STRING_OR_NULL, "resultBackendSecretName": STRING_OR_NULL,
                           "brokerUrlSecretName": STRING_OR_NULL},
        },
        "fernetKeySecretName": STRING_OR_NULL,
        "jwtSecretName": STRING_OR_NULL,
        "apiSecretKeySecretName": STRING_OR_NULL,
        "config": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": {"type": ["boolean", "integer", "number", "string"]},
            },
        },
    },
}
# Chart keys that carry a secret's value (fernetKey, jwtSecret, apiSecretKey, webserverSecretKey,
# data.metadataConnection.pass, data.brokerUrl, postgresql.auth): none may be in the file.
SECRET_VALUE_KEYS = {"fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey", "metadataConnection",
                     "resultBackendConnection", "brokerUrl", "auth", "pass", "password"}


@pytest.fixture(scope="module")
def values():
    return yaml.safe_load(VALUES_FILE.read_text())


def keys_in(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from keys_in(item)


def env_of(values) -> dict[str, str]:
    return {item["name"]: item["value"] for item in values["env"]}


def test_values_use_only_chart_keys_with_the_chart_types(values):
    errors = sorted(error.message for error in Draft7Validator(CHART_FACTS).iter_errors(values))
    assert errors == []


@pytest.mark.parametrize("mistake", [
    {"triggerer": {"enable": True}},  # a typo the chart would ignore: the triggerer's key is `enabled`
    {"executor": "Celery"},  # not an executor class name
    {"images": {"airflow": {"repository": "x", "tag": 3.3}}},  # a number, not a tag string
    {"env": [{"name": "ML_CACHE_CONFIG"}]},  # no value
    {"fernetKey": "c2VjcmV0"},  # a key we have not checked (and a secret)
])
def test_the_facts_refuse_what_the_chart_would_not_take(values, mistake):
    assert list(Draft7Validator(CHART_FACTS).iter_errors({**values, **mistake}))


def test_the_image_is_ours_on_the_pinned_airflow(values):
    pins = (REPO / "requirements.txt").read_text()
    airflow = re.search(r"^apache-airflow==(\S+)$", pins, re.MULTILINE)[1]
    assert values["airflowVersion"] == airflow  # the chart picks its Airflow 3 templates from it
    assert values["images"]["airflow"]["tag"] == airflow
    assert "apache/airflow" not in values["images"]["airflow"]["repository"]  # the stock image lacks ml_cache


def test_celery_like_the_compose_file_and_the_triggerer_runs(values):
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    assert values["executor"] == compose["x-airflow-common"]["environment"]["AIRFLOW__CORE__EXECUTOR"]
    assert values["triggerer"]["enabled"] is True  # the deferrable AWS waits run there


def test_every_component_that_calls_aws_shares_one_service_account(values):
    workers = values["workers"]["serviceAccount"]
    assert workers["create"] is True and workers["name"]
    for component in ("triggerer", "dagProcessor"):
        account = values[component]["serviceAccount"]
        assert account == {"create": False, "name": workers["name"]}, component
    # Terraform's airflow_pod_identity, as the README tells to set it, names this account
    readme = (REPO / "README.md").read_text()
    pod_identity = re.search(r'airflow_pod_identity\s*=\s*\{\s*namespace\s*=\s*"([^"]+)",\s*'
                             r'service_account\s*=\s*"([^"]+)"\s*\}', readme)
    assert pod_identity, "README: the airflow_pod_identity setting of the Helm steps"
    assert pod_identity[2] == workers["name"]
    assert f"--namespace {pod_identity[1]}" in readme


def test_the_dag_config_comes_from_a_mounted_configmap(values):
    path = Path(env_of(values)["ML_CACHE_CONFIG"])
    mount = next(mount for mount in values["volumeMounts"] if path.is_relative_to(mount["mountPath"]))
    assert "subPath" not in mount  # a subPath mount never sees the ConfigMap's updates
    volume = next(volume for volume in values["volumes"] if volume["name"] == mount["name"])
    assert volume["configMap"]["name"]
    assert path.name == "ml_container_cache.yaml"


def test_no_secret_is_in_the_values(values):
    assert not SECRET_VALUE_KEYS & set(keys_in(values))
    # the connection names the region only: credentials come from the pod's role, the endpoint is AWS's
    connection = urlsplit(env_of(values)["AIRFLOW_CONN_AWS_DEFAULT"])
    assert connection.scheme == "aws" and connection.username is None and connection.password is None
    assert set(parse_qs(connection.query)) == {"region_name"}
    # the database URL comes from a Secret the chart only names; no bundled database with a default password
    assert values["data"]["metadataSecretName"] and values["postgresql"]["enabled"] is False
