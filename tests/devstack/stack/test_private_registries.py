"""`make run`'s private registries, started against the in-process local cloud: what the DAG config
names is really served, with the credential sources it names."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import boto3
import pytest
import requests

from devstack import process, registries
from devstack.demo_images import default_cache_dir
from devstack.stack import private_registries
from devstack.stack.layout import Layout
from tests.conftest import registry_tools_missing

MISSING = registry_tools_missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"



def test_private_registries_serve_the_refs_with_the_credentials_the_config_names(devstack_server,
                                                                                   tmp_path: Path) -> None:
    layout = Layout(home=tmp_path, cloud_port=devstack_server.port, registry_port=process.free_port_block((1, 2, 3)),
                    airflow_port=1)
    (tmp_path / "cache").symlink_to(default_cache_dir(), target_is_directory=True)  # the 1 GiB layout, built once
    try:
        started = private_registries.start(layout)
        ecr_host = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
        private_host = f"127.0.0.1:{layout.private_front_port}"
        assert started.endpoints == {ecr_host: f"http://127.0.0.1:{layout.ecr_front_port}",
                                     private_host: f"http://{private_host}"}
        assert started.credentials[ecr_host] == {"source": "ecr"}
        secret_arn = started.credentials[private_host]["secret_arn"]
        assert started.credentials[private_host] == {"source": "secretsmanager", "secret_arn": secret_arn}

        def client(service: str):
            return boto3.client(service, region_name="us-west-2", endpoint_url=devstack_server.endpoint)

        login = json.loads(client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"])
        assert set(login) == {"username", "password"}
        # ECR: a token from GetAuthorizationToken pulls the ecr ref's manifest through the mapped endpoint
        token = client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
        name, digest = started.refs["ecr"].split("@")
        repository = name.split("/", 1)[1].rsplit(":", 1)[0]
        answer = requests.get(f"{started.endpoints[ecr_host]}/v2/{repository}/manifests/{digest}", timeout=10,
                              headers={"Accept": ACCEPT, "Authorization": f"Basic {token}"})
        assert answer.status_code == 200
        assert base64.b64decode(token).decode().startswith("AWS:")
        # the bearer registry: the secret's login gets a token for the private image
        name, digest = started.refs["private"].split("@")
        repository = name.split("/", 1)[1].rsplit(":", 1)[0]
        issued = requests.get(f"http://{private_host}/token", auth=(login["username"], login["password"]), timeout=10,
                              params={"scope": f"repository:{repository}:pull"}).json()
        answer = requests.get(f"http://{private_host}/v2/{repository}/manifests/{digest}", timeout=10,
                              headers={"Accept": ACCEPT, "Authorization": f"Bearer {issued['token']}"})
        assert answer.status_code == 200
        assert sum(layer["size"] for layer in answer.json()["layers"]) > 1024**3 // 2  # the large image
        # the password lives in memory and in Secrets Manager only
        written = [p for p in tmp_path.rglob("*") if p.is_file() and "storage" not in p.parts]
        assert not [p for p in written if login["password"].encode() in p.read_bytes()]
    finally:
        for host in list(registries.endpoints()):
            if host.endswith(f":{layout.private_front_port}") or host == "123456789012.dkr.ecr.us-west-2.amazonaws.com":
                registries.stop(host)
        process.stop_recorded(layout.pid_file("registry-private"), 10)
