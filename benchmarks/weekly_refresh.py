"""Benchmark: the weekly refresh, side by side: an unchanged week decides "up to date" in seconds, and a
one-image change pulls only that image's new blobs while a fresh build pulls the whole set.

Real parts only (root, Debian packages): the local cloud in this process (moto + our extension, builder
"instances" running the real build script on loop-mounted XFS), a loopback registry seeded with a set of
three demo images, and the build DAG run with `dag.test()` through the `aws_default` connection.

    sudo .venv/bin/python benchmarks/weekly_refresh.py [--layer-mib 16]

Four runs of `ml_container_cache_build`: (1) a first build, fresh; (2) the next week, nothing changed:
up to date, timed from the run's start to the end of its `up_to_date` task; (3) one image re-pushed
under the same tag with one layer more (its other layers unchanged): incremental from the published
snapshot; (4) the same set built fresh (`incremental: false`, `force_rebuild`). Prints a table, then one
line with both figures. Not a test: the numbers depend on the machine (loopback registry, no network).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins"))

import boto3  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402

from devstack import volumes  # noqa: E402
from devstack.demo_images import OCI_INDEX, OCI_MANIFEST, DemoImage, seed_registry  # noqa: E402
from devstack.registry import Registry  # noqa: E402

REGION = "us-west-2"
DAG_ID = "ml_container_cache_build"
TAG = "1.0"
UP_TO_DATE_GOAL_SECONDS = 30
PULL_RATIO_GOAL = 1.1


def image_set(layer_mib: int) -> tuple[dict[str, DemoImage], DemoImage]:
    """Three images sharing the busybox base layer, and `trainer` as re-pushed: one layer more on top."""
    images = {"tools": DemoImage("bench-tools", tag=TAG),
              "encoder": DemoImage("bench-encoder", tag=TAG, data_layers=3, data_layer_mib=layer_mib, seed=9101),
              "trainer": DemoImage("bench-trainer", tag=TAG, data_layers=3, data_layer_mib=layer_mib, seed=9102)}
    changed = DemoImage("bench-trainer", tag=TAG, data_layers=4, data_layer_mib=layer_mib, seed=9102)
    return images, changed


def manifest_blobs(registry: str, repository: str) -> dict[str, int]:
    """digest -> size of what a pull of REPOSITORY:TAG stores: the manifest, its config and its layers."""
    answer = requests.get(f"http://{registry}/v2/{repository}/manifests/{TAG}", timeout=30,
                          headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
    answer.raise_for_status()
    manifest = answer.json()
    if manifest.get("mediaType") != OCI_MANIFEST:
        raise RuntimeError(f"{repository}:{TAG} is {manifest.get('mediaType')}, expected a single-platform manifest")
    blobs = {answer.headers["Docker-Content-Digest"]: len(answer.content),
             manifest["config"]["digest"]: manifest["config"]["size"]}
    blobs.update({layer["digest"]: layer["size"] for layer in manifest["layers"]})
    return blobs


def airflow_environment(home: Path) -> None:
    """A private AIRFLOW_HOME with SQLite, set before airflow is imported (as the DAG tests do)."""
    os.environ.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
    })


@dataclass
class Cloud:
    """The local cloud as the DAG sees it: the endpoint, the registry, the config file."""

    endpoint: str
    registry: str
    config_path: Path

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint)  # keys: the environment's

    def prepare(self, refs: list[str]) -> None:
        """The connection, the builder's instance profile and the DAG's config file (fast polls)."""
        connection = {"conn_type": "aws", "login": "testing", "password": "testing",
                      "extra": {"region_name": REGION, "endpoint_url": self.endpoint}}
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(connection)
        os.environ["ML_CACHE_CONFIG"] = str(self.config_path)
        self.client("iam").create_instance_profile(InstanceProfileName="ml-container-cache-builder")
        config = yaml.safe_load((REPO / "plugins/ml_cache/defaults/ml_container_cache.yaml").read_text())
        subnet = self.client("ec2").describe_subnets()["Subnets"][0]["SubnetId"]
        config["aws"].update({"region": REGION, "subnet_ids": [subnet],
                              "registry_endpoints": {self.registry: f"http://{self.registry}"}})
        config["build"].update({"images": refs, "allowed_registries": [self.registry],
                                "instance_types": ["c6i.2xlarge"], "volume_size_gib": 2,
                                "fsr_availability_zones": [f"{REGION}a", f"{REGION}b"]})
        config["timeouts"] = {"poll_seconds": 1, "agent_online_seconds": 30, "build_seconds": 900,
                              "snapshot_seconds": 300, "fsr_seconds": 120}
        self.config_path.write_text(yaml.safe_dump(config))

    def published_metadata(self) -> dict[str, Any]:
        value = self.client("ssm").get_parameter(Name="/ml-container-cache/snapshot-metadata")["Parameter"]["Value"]
        return json.loads(value)

    def instances_launched(self) -> int:
        return sum(len(r["Instances"]) for r in self.client("ec2").describe_instances()["Reservations"])

    def retire_fsr(self, snapshot_id: str) -> None:
        """FSR off on a superseded snapshot, as the rollout does once the new one is validated (the
        pipeline allows FSR on the live snapshot and one rollback target: lifecycle.fsr_max_snapshots)."""
        from ml_cache.fsr_lifecycle import retire_fsr
        from ml_cache.hooks.ec2 import CacheEc2Hook

        retire_fsr(CacheEc2Hook(aws_conn_id="aws_default"), snapshot_id)
        time.sleep(2)  # the local cloud's `disabling` lasts 1 s; the quota guard counts it


@contextlib.contextmanager
def output_to(log_path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (the task logs dag.test prints) to a file meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_build(dag: Any, log_path: Path, label: str, **conf: Any) -> dict[str, Any]:
    """One dag.test() run: its wall time, state, task instances by id."""
    print(f"{label} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    with output_to(log_path):
        run = dag.test(run_conf=conf or None)
    wall = time.monotonic() - started
    tasks = {ti.task_id: ti for ti in run.get_task_instances()}
    if str(run.state) != "success":
        failed = sorted(task_id for task_id, ti in tasks.items() if str(ti.state) == "failed")
        raise RuntimeError(f"{label}: the run ended {run.state} (failed tasks: {failed}); task logs in {log_path}")
    return {"run": run, "wall_seconds": wall, "tasks": tasks}


def load_dag() -> Any:
    """The build DAG from the DAGs folder, its retries at once (dag.test would wait out retry_delay)."""
    from datetime import timedelta

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[DAG_ID]
    for task in dag.tasks:
        task.retry_delay = timedelta(0)
    return dag


def build_row(label: str, result: dict[str, Any], metadata: dict[str, Any], set_bytes: int,
              changed_bytes: int | None) -> dict[str, Any]:
    """What a build pulled against its whole set and against the changed blobs, and what its snapshot stores."""
    build, snapshot = metadata["build"], metadata["cost"]["snapshot"]
    pulled = build["bytes_pulled"]
    return {"run": label, "mode": build["mode"], "wall_seconds": round(result["wall_seconds"], 1),
            "bytes_pulled": pulled, "set_ratio": pulled / set_bytes,
            "changed_ratio": pulled / changed_bytes if changed_bytes else None,
            "snapshot_incremental_bytes": snapshot["incremental_bytes"], "snapshot_full_bytes": snapshot["full_bytes"]}


def set_blobs(registry: str, images: list[DemoImage]) -> dict[str, int]:
    """The blobs a fresh pull of the set stores, each once (the base layer is shared)."""
    blobs: dict[str, int] = {}
    for image in images:
        blobs.update(manifest_blobs(registry, image.repository))
    return blobs


def mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def print_report(decision: dict[str, Any], rows: list[dict[str, Any]], changed: dict[str, Any]) -> None:
    print(f"image set: {', '.join(changed['set'])} ({mib(changed['set_bytes'])}); {changed['image']} re-pushed "
          f"under the same tag with one layer more: {changed['blobs']} new blobs (manifest, config, layer), "
          f"{mib(changed['bytes'])}")
    print(f"unchanged week: {decision['outcome']!r}, {decision['instances_launched']} instance(s) launched; "
          f"run start -> end of up_to_date {decision['decided_seconds']:.1f} s (the task's own figure "
          f"{decision['task_decided_in_seconds']} s); the whole dag.test() {decision['wall_seconds']:.1f} s")
    print(f"{'build':<26} {'mode':<12} {'wall s':>7} {'pulled':>11} {'x changed blobs':>16} {'x its set':>10} "
          f"{'snapshot new / full':>24}")
    for row in rows:
        changed_ratio = "-" if row["changed_ratio"] is None else f"{row['changed_ratio']:.3f}"
        stored = f"{mib(row['snapshot_incremental_bytes'])} / {mib(row['snapshot_full_bytes'])}"
        print(f"{row['run']:<26} {row['mode']:<12} {row['wall_seconds']:>7.1f} {mib(row['bytes_pulled']):>11} "
              f"{changed_ratio:>16} {row['set_ratio']:>10.3f} {stored:>24}")
    _, incremental, fresh = rows
    print(f"incremental gain: the fresh build of the same set pulled "
          f"{fresh['bytes_pulled'] / max(incremental['bytes_pulled'], 1):.1f}x the bytes and its snapshot stores "
          f"{fresh['snapshot_incremental_bytes'] / max(incremental['snapshot_incremental_bytes'], 1):.1f}x "
          f"the new blocks")
    print(f"up-to-date decision: {decision['decided_seconds']:.1f} s (goal < {UP_TO_DATE_GOAL_SECONDS} s); "
          f"one-image change pulled {incremental['changed_ratio']:.2f}x its changed layers "
          f"(goal <= {PULL_RATIO_GOAL})")


def benchmark(base: Path, layer_mib: int, log_path: Path) -> None:
    from devstack import server

    images, changed_image = image_set(layer_mib)
    with Registry(base / "registry") as registry:
        pinned = seed_registry(registry.address, base / "layouts", images=images)
        refs = [ref.partition("@")[0] for ref in pinned.values()]  # by tag: the re-push moves it
        with server.start(port=0, home=base / "devstack", plain_http_registries=[registry.address]) as handle:
            cloud = Cloud(handle.endpoint, registry.address, base / "ml_container_cache.yaml")
            cloud.prepare(refs)
            from airflow.utils.db import resetdb

            with output_to(log_path):
                resetdb()
                dag = load_dag()
            first = run_build(dag, log_path, "week 1: first build")
            first_meta = cloud.published_metadata()
            first_set = sum(set_blobs(registry.address, list(images.values())).values())

            launched = cloud.instances_launched()
            unchanged = run_build(dag, log_path, "week 2: nothing changed")
            ti = unchanged["tasks"]["up_to_date"]
            if str(ti.state) != "success":
                raise RuntimeError(f"week 2 built instead of deciding up to date ({ti.state}); logs in {log_path}")
            summary = ti.xcom_pull(task_ids="up_to_date")
            decision = {"outcome": summary["outcome"], "instances_launched": cloud.instances_launched() - launched,
                        "decided_seconds": (ti.end_date - unchanged["run"].start_date).total_seconds(),
                        "task_decided_in_seconds": summary["decided_in_seconds"],
                        "wall_seconds": unchanged["wall_seconds"]}

            before = manifest_blobs(registry.address, changed_image.repository)
            seed_registry(registry.address, base / "layouts", images={"trainer": changed_image})
            new_blobs = {digest: size for digest, size in manifest_blobs(registry.address, changed_image.repository)
                         .items() if digest not in before}
            changed_bytes = sum(new_blobs.values())
            incremental = run_build(dag, log_path, "week 3: one image changed")
            incremental_meta = cloud.published_metadata()

            with output_to(log_path):
                cloud.retire_fsr(first_meta["snapshot_id"])
            unchanged_images = [image for key, image in images.items() if key != "trainer"]
            new_set = sum(set_blobs(registry.address, [*unchanged_images, changed_image]).values())
            fresh = run_build(dag, log_path, "the same set, built fresh", force_rebuild=True, incremental=False)
            fresh_meta = cloud.published_metadata()
    rows = [build_row("week 1: first build", first, first_meta, first_set, None),
            build_row("week 3: one image changed", incremental, incremental_meta, new_set, changed_bytes),
            build_row("same set, built fresh", fresh, fresh_meta, new_set, changed_bytes)]
    print_report(decision, rows, {"set": [image.repository for image in images.values()], "set_bytes": new_set,
                                  "image": changed_image.repository, "bytes": changed_bytes, "blobs": len(new_blobs)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer-mib", type=int, default=16, help="size of each data layer (default 16)")
    args = parser.parse_args()
    missing = volumes.data_plane_missing()
    if missing:
        print(f"cannot run: {missing} (the builders run the real build script: root and the Debian packages "
              f"`make run` installs)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="mlc-weekly-", dir="/tmp"))
    log_path = Path(f"{base}.log")  # the runs' task logs: kept when something failed
    airflow_environment(base / "airflow")
    try:
        benchmark(base, args.layer_mib, log_path)
    except BaseException:
        print(f"task logs: {log_path}", file=sys.stderr)
        raise
    else:
        log_path.unlink(missing_ok=True)
    finally:
        volumes.cleanup_under(base)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
