"""`make run` / `make up` / `make down`: the local cloud, Airflow, and one build shown end to end.

    python -m devstack.demo run    # up, trigger ml_container_cache_build, watch it, print the outcome, down
    python -m devstack.demo up     # local cloud + Airflow UI on http://localhost:8080, left running
    python -m devstack.demo down   # stop what up/run started (by PID), unmount, detach loop devices

Every service listens on 127.0.0.1 and is started detached with a PID file under the devstack
home, so `down` (or the next `run`, after an interrupted one) stops exactly those processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "ml_container_cache_build"
ROLLOUT_DAG_ID = "ml_container_cache_rollout"
BASELINE_NODE_GROUP = "ml-container-cache-gpu-uncached"
REGION = "us-west-2"
SERVICES = ("airflow", "cloud", "registry")  # stop order
TERRAFORM_APPLY = REPO / "terraform" / "examples" / "local-cloud" / "apply.sh"
KEPT_ACROSS_RUNS = {"cache"}  # built demo image layouts; everything else belongs to one run


@dataclass(frozen=True)
class Layout:
    """Where things live and listen; ports overridable for a second stack (tests)."""

    home: Path
    cloud_port: int
    registry_port: int
    airflow_port: int

    @classmethod
    def from_env(cls) -> Layout:
        home = Path(os.environ.get("DEVSTACK_HOME", REPO / ".devstack")).resolve()
        return cls(
            home=home,
            cloud_port=int(os.environ.get("DEVSTACK_PORT", "4566")),
            registry_port=int(os.environ.get("DEVSTACK_REGISTRY_PORT", "5000")),
            airflow_port=int(os.environ.get("AIRFLOW_PORT", "8080")),
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.cloud_port}"

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def config_path(self) -> Path:
        return self.home / "ml_container_cache.yaml"

    def pid_file(self, name: str) -> Path:
        return self.home / "pids" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- processes ---------------------------------------------------------------------------------

def spawn(layout: Layout, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start a detached service, remember its PID."""
    layout.pid_file(name).parent.mkdir(parents=True, exist_ok=True)
    layout.log_file(name).parent.mkdir(parents=True, exist_ok=True)
    with layout.log_file(name).open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})}, cwd=REPO, start_new_session=True)
    layout.pid_file(name).write_text(str(process.pid))
    return process.pid


def group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process is left in the process group."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(-pgid, os.WNOHANG)  # reap our own children, or they linger as zombies
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def stop(layout: Layout, name: str, timeout: float = 30) -> None:
    """SIGTERM the process group we started (its PID is the group id), SIGKILL if it lingers."""
    pid_file = layout.pid_file(name)
    if not pid_file.exists():
        return
    pgid = int(pid_file.read_text().strip())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def wait_for(url: str, what: str, timeout: float, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code in ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} did not answer at {url} within {timeout:.0f} s")


# -- up / down ----------------------------------------------------------------------------------

def preflight() -> None:
    from devstack.volumes import data_plane_missing

    reason = data_plane_missing()
    if reason:
        raise SystemExit(f"The local cloud cannot run here: {reason}. Run as root after `make system-deps`.")


def start_registry(layout: Layout) -> dict[str, str]:
    from devstack.demo_images import seed_registry
    from devstack.registry import Registry

    registry = Registry(layout.home / "registry" / "storage", layout.registry_port,
                        work_dir=layout.home / "registry")
    registry.start()
    layout.pid_file("registry").parent.mkdir(parents=True, exist_ok=True)
    layout.pid_file("registry").write_text(str(registry.pid))
    timings: dict[str, float] = {}
    refs = seed_registry(layout.registry, layout.home / "cache", timings=timings)
    say(f"registry {layout.registry} seeded: {json.dumps(timings)}")
    return refs


def start_cloud(layout: Layout) -> None:
    spawn(layout, "cloud", [sys.executable, "-m", "devstack", "serve", "--port", str(layout.cloud_port),
                            "--home", str(layout.home), "--plain-http-registry", layout.registry],
          # Terraform attaches AWS managed policies (SSM core, ECR read-only) to the builder role
          {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
           "DEVSTACK_NODES": "1"})  # node groups get real nodes (restored volume, containerd, kubelet)
    wait_for(f"{layout.endpoint}/_devstack/faults", "the local cloud", 60)


def aws(layout: Layout, service: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=layout.endpoint,
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106 (local cloud)


def terraform_missing() -> str | None:
    """Why the Terraform configuration cannot be applied here, or None."""
    if not shutil.which("terraform"):
        return "terraform is not installed"
    if not Path(os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins")).is_dir():
        return "no AWS provider mirror (TF_PLUGIN_DIR, default /opt/tf-plugins)"
    return None


def provision_with_terraform(layout: Layout) -> dict[str, Any]:
    """terraform/examples/local-cloud applied into the local cloud; its `ml_cache_config` output."""
    output = layout.home / "terraform" / "ml_cache_config.yaml"
    env = {**os.environ, "ML_CACHE_TF_STATE": str(layout.home / "terraform" / "terraform.tfstate"),
           "TF_DATA_DIR": str(layout.home / "terraform" / "data")}
    started = time.monotonic()
    result = subprocess.run(["bash", str(TERRAFORM_APPLY), layout.endpoint, str(output)], env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"terraform apply into the local cloud failed:\n{result.stderr[-3000:]}")
    say(f"terraform applied into the local cloud in {time.monotonic() - started:.1f} s")
    return yaml.safe_load(output.read_text())


def provision_by_hand(layout: Layout) -> dict[str, Any]:
    """Without terraform: the few resources the build needs (profile, parameter), default subnets."""
    iam, ec2, ssm = aws(layout, "iam"), aws(layout, "ec2"), aws(layout, "ssm")
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_instance_profile(InstanceProfileName="ml-container-cache-builder")
    subnets = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])
    with contextlib.suppress(ssm.exceptions.ParameterAlreadyExists):
        ssm.put_parameter(Name="/ml-container-cache/snapshot-id", Value="none", Type="String")
    config = yaml.safe_load((REPO / "config" / "ml_container_cache.yaml").read_text())
    config["aws"].update({"region": REGION, "subnet_ids": [s["SubnetId"] for s in subnets[:1]]})
    config["build"]["fsr_availability_zones"] = sorted({s["AvailabilityZone"] for s in subnets})[:3]
    config.pop("rollout")  # no cluster without Terraform: nothing to roll out to
    return config


def provision(layout: Layout) -> dict[str, Any]:
    reason = terraform_missing()
    if reason is None:
        return provision_with_terraform(layout)
    say(f"not applying Terraform ({reason}): creating the builder's resources directly")
    return provision_by_hand(layout)


def add_baseline_node_group(layout: Layout, rollout: dict[str, Any]) -> None:
    """A node group of the same instance type from the template's first version (no cache):
    the uncached start-up of each image, measured beside the cached one."""
    eks = aws(layout, "eks")
    gpu = eks.describe_nodegroup(clusterName=rollout["cluster_name"],
                                 nodegroupName=rollout["node_group_name"])["nodegroup"]
    optional = {key: gpu[key] for key in ("instanceTypes", "taints") if gpu.get(key)}
    eks.create_nodegroup(
        clusterName=rollout["cluster_name"], nodegroupName=BASELINE_NODE_GROUP, nodeRole=gpu["nodeRole"],
        subnets=gpu["subnets"][:1], launchTemplate={"id": rollout["launch_template_id"], "version": "1"},
        scalingConfig={"minSize": 1, "maxSize": 1, "desiredSize": 1},
        labels={**gpu.get("labels", {}), "ml-cache/enabled": "false"}, **optional,
    )


def write_config(layout: Layout, config: dict[str, Any], refs: dict[str, str]) -> None:
    """The provisioned config, with the demo images, local Kubernetes access and local deadlines."""
    config["build"].update({
        "images": [refs["small"], refs["large"]],
        "allowed_registries": [layout.registry],
        "volume_size_gib": 8,
    })
    config["timeouts"].update({"poll_seconds": 2, "update_seconds": 600, "validation_seconds": 300})
    if "rollout" in config:
        config["rollout"].update({"kubernetes_conn_id": "kubernetes_local", "uncached_baseline": True,
                                  "baseline_node_group_name": BASELINE_NODE_GROUP})
    layout.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def airflow_env(layout: Layout) -> dict[str, str]:
    connection = {"conn_type": "aws", "login": "testing", "password": "testing",
                  "extra": {"region_name": REGION, "endpoint_url": layout.endpoint}}
    return {
        "AIRFLOW_HOME": str(layout.home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(layout.airflow_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{layout.airflow_url}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
        # the local cloud's Kubernetes API stand-in writes this kubeconfig
        "AIRFLOW_CONN_KUBERNETES_LOCAL": json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(layout.home / "kubeconfig")}}),
        "ML_CACHE_CONFIG": str(layout.config_path),
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
        # standalone starts its components as `airflow ...`: the venv's must come first
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def start_airflow(layout: Layout) -> None:
    airflow = str(Path(sys.executable).parent / "airflow")
    spawn(layout, "airflow", [airflow, "standalone"], airflow_env(layout))
    wait_for(f"{layout.airflow_url}/api/v2/version", "Airflow", 240)
    wait_for(f"{layout.airflow_url}/api/v2/dags/{DAG_ID}", f"DAG {DAG_ID}", 180)


def down(layout: Layout) -> None:
    from devstack.volumes import cleanup_under

    for name in SERVICES:
        stop(layout, name)
    if layout.home.exists():
        cleanup_under(layout.home)


def forget(layout: Layout) -> None:
    """The local cloud keeps its state in memory: files of an earlier run (Airflow DB, volumes,
    Terraform state) would only describe resources that no longer exist."""
    from devstack.volumes import mounts

    busy = [m["target"] for m in mounts() if Path(m["target"]).is_relative_to(layout.home)]
    if busy:
        raise SystemExit(f"still mounted under {layout.home}: {busy}; unmount them, then retry")
    for entry in layout.home.iterdir() if layout.home.exists() else []:
        if entry.name not in KEPT_ACROSS_RUNS:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def up(layout: Layout) -> dict[str, str]:
    preflight()
    down(layout)  # a previous, maybe interrupted, run
    forget(layout)
    layout.home.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    refs = start_registry(layout)
    start_cloud(layout)
    config = provision(layout)
    if "rollout" in config:
        add_baseline_node_group(layout, config["rollout"])
    write_config(layout, config, refs)
    say(f"local cloud at {layout.endpoint} ({time.monotonic() - started:.1f} s); starting Airflow")
    start_airflow(layout)
    say(f"Airflow UI: {layout.airflow_url} (config {layout.config_path})")
    return refs


# -- run ----------------------------------------------------------------------------------------

def api(layout: Layout, method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(method, f"{layout.airflow_url}/api/v2{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()


def watch(layout: Layout, dag_id: str, run_id: str, timeout: float = 1800
          ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Print every task's state changes until the run ends; return the run and its task instances."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api(layout, "GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        tis = api(layout, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        for ti in sorted(tis, key=lambda t: t.get("start_date") or "9"):
            state = ti.get("state") or "none"
            if seen.get(ti["task_id"]) != state and state != "none":
                seen[ti["task_id"]] = state
                say(f"  {ti['task_id']:<30} {state}")
        if run["state"] in ("success", "failed"):
            return run, tis
        time.sleep(2)
    raise SystemExit(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")


def rollout_configured(layout: Layout) -> bool:
    return "rollout" in yaml.safe_load(layout.config_path.read_text())


def trigger_build(layout: Layout) -> str:
    for dag_id in (DAG_ID, ROLLOUT_DAG_ID) if rollout_configured(layout) else (DAG_ID,):
        api(layout, "PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    run = api(layout, "POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
    say(f"triggered {DAG_ID} run {run['dag_run_id']}")
    return run["dag_run_id"]


def rollout_run_id(layout: Layout, timeout: float = 180) -> str:
    """The rollout run the build's Asset event started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api(layout, "GET", f"/dags/{ROLLOUT_DAG_ID}/dagRuns", params={"order_by": "-run_after"})["dag_runs"]
        if runs:
            say(f"{ROLLOUT_DAG_ID} run {runs[0]['dag_run_id']} started by the ml_container_cache event")
            return runs[0]["dag_run_id"]
        time.sleep(2)
    raise SystemExit(f"no {ROLLOUT_DAG_ID} run within {timeout:.0f} s of the build's Asset event")


def seconds(ti: dict[str, Any]) -> float | None:
    return ti.get("duration")


def print_phases(run: dict[str, Any], tis: list[dict[str, Any]]) -> None:
    print()
    print(f"{run['dag_id']} run {run['dag_run_id']}: {run['state'].upper()}")
    print("Phases (task: seconds):")
    for ti in sorted(tis, key=lambda t: t.get("start_date") or "9"):
        duration = seconds(ti)
        shown = f"{duration:8.1f}" if duration is not None else "       -"
        print(f"  {ti['task_id']:<30} {shown}  {ti.get('state')}")
    failed = [ti["task_id"] for ti in tis if ti.get("state") == "failed"]
    if failed:
        print(f"Failed tasks: {failed}")


def print_outcome(layout: Layout, run: dict[str, Any], tis: list[dict[str, Any]]) -> None:
    print_phases(run, tis)
    if run["state"] != "success":
        print(f"Logs under {layout.home / 'airflow' / 'logs'}")
        return
    ssm, ec2 = aws(layout, "ssm"), aws(layout, "ec2")
    parameter = ssm.get_parameter(Name="/ml-container-cache/snapshot-id")["Parameter"]
    metadata = json.loads(ssm.get_parameter(Name="/ml-container-cache/snapshot-metadata")["Parameter"]["Value"])
    snapshot_id = parameter["Value"]
    print(f"Snapshot: {snapshot_id}  (SSM {parameter['Name']} version {parameter['Version']})")
    print(f"Image set: {metadata['image_set']}")
    for image in metadata["images"]:
        print(f"  {image['ref'].split('@')[0]:<55} {image['digest']}  {image.get('bytes') or 0:>12,} bytes")
    restores = ec2.describe_fast_snapshot_restores(Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])
    for entry in sorted(restores["FastSnapshotRestores"], key=lambda e: e["AvailabilityZone"]):
        print(f"  FSR {entry['AvailabilityZone']}: {entry['State']}")


def xcom(layout: Layout, dag_id: str, run_id: str, task_id: str) -> Any:
    entry = api(layout, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                params={"deserialize": "true"})
    value = entry["value"]
    return json.loads(value) if isinstance(value, str) else value


def print_validation(report: dict[str, Any]) -> None:
    """Per node and image: cache hit and start-up stages; the cached vs uncached ratio."""
    sys.path.insert(0, str(REPO / "plugins"))  # the DAGs' package, as Airflow's plugins folder has it
    from ml_cache.validation import report_table

    print()
    print(report_table(report))
    baselines = {b["image"]: b for b in report.get("baselines", [])}
    for image, ratio in sorted(report.get("speedups", {}).items()):
        cached = max(r["total_seconds"] for r in report["results"] if r["image"] == image)
        uncached = baselines[image]["total_seconds"]
        print(f"  {image.split('@')[0]}: cached start {cached:.3f} s vs uncached {uncached:.3f} s "
              f"on the same instance type: {ratio:.0f}x faster")


def run(layout: Layout, keep: bool) -> int:
    started = time.monotonic()
    try:
        up(layout)
        build_run, tis = watch(layout, DAG_ID, trigger_build(layout))
        print_outcome(layout, build_run, tis)
        if build_run["state"] != "success":
            return 1
        if not rollout_configured(layout):
            say("no cluster in the local cloud (Terraform was not applied): no rollout to follow")
            return 0
        rollout_id = rollout_run_id(layout)
        rollout, tis = watch(layout, ROLLOUT_DAG_ID, rollout_id)
        print_phases(rollout, tis)
        if rollout["state"] == "success":
            print_validation(xcom(layout, ROLLOUT_DAG_ID, rollout_id, "validate_nodes"))
        print(f"Total: {time.monotonic() - started:.1f} s")
        return 0 if rollout["state"] == "success" else 1
    finally:
        if keep:
            say(f"left running (KEEP=1): Airflow {layout.airflow_url}; `make down` stops it")
        else:
            down(layout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.demo", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "up", "down"])
    args = parser.parse_args(argv)
    layout = Layout.from_env()
    if args.command == "down":
        down(layout)
        say("local cloud stopped")
        return 0
    if args.command == "up":
        up(layout)
        return 0
    return run(layout, keep=os.environ.get("KEEP") == "1")


if __name__ == "__main__":
    sys.exit(main())
