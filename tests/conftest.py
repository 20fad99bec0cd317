"""Session-wide test environment: a private AIRFLOW_HOME with SQLite, set before airflow is imported."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ml-cache-airflow-"))

os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
# Never reach a real AWS account from tests: fake credentials unless a test sets its own endpoint.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-west-2")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A plain moto server on 127.0.0.1 (not `mock_aws`: aiobotocore, the triggers' client, is not intercepted)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def devstack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The local cloud (devstack server) in this process on 127.0.0.1, shared by the tests that need it."""
    from devstack import server

    handle = server.start(port=0, home=tmp_path_factory.mktemp("devstack-home"),
                          plain_http_registries=("127.0.0.1:5999",))
    yield handle
    handle.stop()


@dataclass
class AwsEndpoint:
    """An Airflow AWS connection (set as AIRFLOW_CONN_<ID>) and boto3 clients on the same endpoint."""

    conn_id: str
    endpoint: str
    region: str

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def set_faults(self, **faults: Any) -> None:
        """Switch local cloud faults on (`POST /_devstack/faults`, see devstack/faults.py)."""
        import requests

        requests.post(f"{self.endpoint}/_devstack/faults", json=faults, timeout=10).raise_for_status()

    def reset_faults(self) -> None:
        import requests

        requests.delete(f"{self.endpoint}/_devstack/faults", timeout=10).raise_for_status()


def use_aws_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, endpoint: str, region: str) -> AwsEndpoint:
    """Point the Airflow connection `conn_id` at `endpoint` for one test."""
    connection = {"conn_type": "aws", "login": "testing", "password": "testing",
                  "extra": {"region_name": region, "endpoint_url": endpoint}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return AwsEndpoint(conn_id=conn_id, endpoint=endpoint, region=region)


@pytest.fixture
def cloud_conn(devstack_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEndpoint]:
    """A connection to the local cloud in a region no other test enables FSR in; faults reset, FSR disabled after."""
    aws = use_aws_connection(monkeypatch, "ml_cache_local_cloud", devstack_server.endpoint, "ca-central-1")
    aws.reset_faults()
    yield aws
    aws.reset_faults()
    ec2 = aws.client("ec2")
    for item in ec2.describe_fast_snapshot_restores()["FastSnapshotRestores"]:  # free the quota of five
        if item["State"] in ("enabling", "optimizing", "enabled"):
            ec2.disable_fast_snapshot_restores(AvailabilityZones=[item["AvailabilityZone"]],
                                               SourceSnapshotIds=[item["SnapshotId"]])


@dataclass
class Nodegroup:
    cluster: str
    name: str
    template_id: str


@pytest.fixture
def cloud_nodegroup(cloud_conn: AwsEndpoint) -> Iterator[Nodegroup]:
    """An EKS cluster and node group on launch template version 1 of 2 (the local cloud; no nodes run)."""
    import uuid

    ec2, eks, iam = cloud_conn.client("ec2"), cloud_conn.client("eks"), cloud_conn.client("iam")
    name = f"ml-cache-test-{uuid.uuid4().hex[:12]}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24", AvailabilityZone="ca-central-1a")["Subnet"]
    template_id = ec2.create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"InstanceType": "g5.xlarge"})["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=template_id, LaunchTemplateData={"InstanceType": "g5.2xlarge"})
    eks.create_cluster(name=name, roleArn=role, resourcesVpcConfig={"subnetIds": [subnet["SubnetId"]]})
    eks.create_nodegroup(clusterName=name, nodegroupName="gpu", nodeRole=role, subnets=[subnet["SubnetId"]],
                         launchTemplate={"id": template_id, "version": "1"})
    yield Nodegroup(cluster=name, name="gpu", template_id=template_id)
    eks.delete_nodegroup(clusterName=name, nodegroupName="gpu")  # no later test that runs nodes may see it
    eks.delete_cluster(name=name)


# --- private registries of the local cloud (devstack/registries) -----------------------------------

def registry_tools_missing() -> str | None:
    """Why the registry fixtures cannot run here (docker-registry, skopeo, static busybox), or None."""
    import shutil

    from devstack.volumes import is_static_elf

    for tool in ("docker-registry", "skopeo"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    busybox = shutil.which("busybox")
    return None if busybox and is_static_elf(Path(busybox)) else "static busybox is not installed"


@dataclass
class PrivateRegistry:
    """The Docker Hub/NGC-style registry (bearer token flow) and what a client needs to pull from it."""

    host: str  # 127.0.0.1:PORT, the registry host the refs name (also where it listens)
    endpoint: str  # http://127.0.0.1:PORT
    username: str
    password: str
    image: str  # a private image (needs the user): HOST/private/ml-cache-demo/small:1.0@sha256:...
    public_image: str  # an image any anonymous token pulls: HOST/ml-cache-demo/small:1.0@sha256:...
    endpoints: dict[str, str]  # {host: endpoint}, the shape of the settings' aws.registry_endpoints


@dataclass
class EcrRegistry:
    """An ECR-style registry of the local cloud: host <account>.dkr.ecr.<region>.amazonaws.com served on loopback."""

    account: str
    region: str
    host: str
    endpoint: str  # http://127.0.0.1:PORT, where the host's registry API is reached
    repository: str  # created with moto's ECR CreateRepository
    image: str  # HOST/REPOSITORY:1.0@sha256:...
    endpoints: dict[str, str]  # {host: endpoint}
    cloud_endpoint: str  # the local cloud's AWS endpoint (ECR GetAuthorizationToken, Secrets Manager)


@pytest.fixture(scope="session")
def registry_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a plain docker-registry that only the fronts (and seeding pushes) talk to."""
    reason = registry_tools_missing()
    if reason:
        pytest.skip(f"private registries need {reason}")
    from devstack.registry import Registry

    root = tmp_path_factory.mktemp("registry-backend")
    with Registry(root / "storage", work_dir=root) as backend:
        yield backend.address


def _push_small(backend: str, repository: str) -> str:
    """Push the small demo image to the backend as `repository`:1.0; its manifest digest."""
    from devstack.demo_images import DEMO_IMAGES, build_layout, default_cache_dir, push_layout

    image = DEMO_IMAGES["small"]
    return push_layout(build_layout(image, default_cache_dir()), image, backend, repository)


@pytest.fixture(scope="session")
def private_registry(devstack_server: Any, registry_backend: str) -> Iterator[PrivateRegistry]:
    """The bearer-token registry front (user + random password), a private and a public pushed image."""
    import secrets

    from devstack import registries

    password = secrets.token_urlsafe(24)
    front = registries.start_bearer(registry_backend, {"ml-cache-puller": password})
    private = _push_small(registry_backend, "private/ml-cache-demo/small")
    public = _push_small(registry_backend, "ml-cache-demo/small")
    yield PrivateRegistry(host=front.host, endpoint=front.endpoint, username="ml-cache-puller", password=password,
                          image=f"{front.host}/private/ml-cache-demo/small:1.0@{private}",
                          public_image=f"{front.host}/ml-cache-demo/small:1.0@{public}",
                          endpoints={front.host: front.endpoint})
    registries.stop(front.host)


@pytest.fixture(scope="session")
def ecr_registry(devstack_server: Any, registry_backend: str) -> Iterator[EcrRegistry]:
    """ECR in the local cloud: account 123456789012, us-east-2, a repository created in moto with a pushed image."""
    import boto3

    from devstack import registries

    account, region, repository = "123456789012", "us-east-2", "ml-cache-test/small"
    boto3.client("ecr", region_name=region, endpoint_url=devstack_server.endpoint, aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_repository(repositoryName=repository)
    front = registries.start_ecr(account, region, registry_backend)
    digest = _push_small(registry_backend, repository)
    yield EcrRegistry(account=account, region=region, host=front.host, endpoint=front.endpoint,
                      repository=repository, image=f"{front.host}/{repository}:1.0@{digest}",
                      endpoints={front.host: front.endpoint}, cloud_endpoint=devstack_server.endpoint)
    registries.stop(front.host)


@pytest.fixture
def registry_faults(devstack_server: Any) -> Iterator[Any]:
    """`registry_faults(registry_429_manifests=N, registry_retry_after_seconds=S, ecr_token_seconds=T)`; reset after."""
    import requests

    def apply(**changes: Any) -> dict[str, Any]:
        answer = requests.post(f"{devstack_server.endpoint}/_devstack/faults", json=changes, timeout=10)
        answer.raise_for_status()
        return answer.json()

    yield apply
    requests.delete(f"{devstack_server.endpoint}/_devstack/faults", timeout=10).raise_for_status()


@pytest.fixture(scope="session")
def private_registry_secret(devstack_server: Any, private_registry: PrivateRegistry) -> Any:
    """`private_registry_secret(region="us-west-2") -> ARN`: the registry's login as a Secrets Manager secret
    {"username", "password"} in the local cloud (one per region, created on first use)."""
    import boto3

    arns: dict[str, str] = {}

    def arn(region: str = "us-west-2") -> str:
        if region not in arns:
            client = boto3.client("secretsmanager", region_name=region, endpoint_url=devstack_server.endpoint,
                                  aws_access_key_id="testing", aws_secret_access_key="testing")
            arns[region] = client.create_secret(
                Name=f"ml-cache-test/registry/{private_registry.host.replace(':', '-')}",
                SecretString=json.dumps({"username": private_registry.username,
                                         "password": private_registry.password}))["ARN"]
        return arns[region]

    return arn
