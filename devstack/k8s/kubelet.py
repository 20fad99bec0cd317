"""Scheduler and kubelet of the stand-in: bind pods to nodes, then run them with the node's containerd.

The scheduler thread binds Pending pods (nodeName, nodeSelector, tolerations vs taints) or
records FailedScheduling. Each bound pod gets a thread that does what kubelet does, with real
timestamps: look the image up in the NODE's containerd ("already present on machine") or pull it
for real through devstack.k8s.image_pull (Pulling/Pulled), create and start the container with
`ctr`, then record its exit. Conditions carry whole-second lastTransitionTime like the real API;
events carry eventTime in microseconds, which is what start-up stages are measured from.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from devstack import nodes as local_nodes
from devstack.k8s import image_pull
from devstack.k8s import nodes as node_objects
from devstack.k8s.models import Store, now, rfc3339

log = logging.getLogger(__name__)
IDLE_SECONDS = 1.0  # a pending pod is looked at again this often (nodes may have become Ready)


def normalize_image(image: str) -> str:
    """What CRI turns a pod's image into: docker.io/library/ prefixes and a :latest tag."""
    name, digest = ([*image.split("@", 1), ""])[:2]
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if ":" not in name.rsplit("/", 1)[-1] and not digest:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def registry_host(image: str) -> str:
    return normalize_image(image).split("/", 1)[0]


class Kubelets:
    """The scheduler loop and one worker thread per bound pod."""

    def __init__(self, store: Store, log_dir: Path) -> None:
        self.store = store
        self.log_dir = Path(log_dir)
        self.stopped = threading.Event()
        self.wake = threading.Event()  # set when a pod is created: schedule now rather than poll
        self.workers: dict[str, PodWorker] = {}  # pod uid -> worker
        self.thread = threading.Thread(target=self._loop, name="devstack-k8s-scheduler", daemon=True)
        local_nodes.on_removal(self.drain)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()
        self.thread.join(timeout=10)
        for worker in list(self.workers.values()):
            worker.kill()
        for worker in list(self.workers.values()):
            worker.join(timeout=30)

    def drain(self, node: local_nodes.Node) -> None:
        """A node goes away: its pods' containers are killed and the pods deleted (as an eviction)."""
        with self.store.lock:
            doomed = [key for key, pod in self.store.pods.items() if pod["spec"].get("nodeName") == node.name]
        for namespace, name in doomed:
            self.delete(namespace, name)

    def delete(self, namespace: str, name: str) -> dict[str, Any]:
        with self.store.lock:
            pod = self.store.pods.pop((namespace, name), None)
        if pod is None:
            return {}
        worker = self.workers.pop(pod["metadata"]["uid"], None)
        if worker is not None:
            worker.kill()
        return pod

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                self.schedule_pending()
            except Exception:
                log.exception("scheduling failed")
            self.wake.wait(IDLE_SECONDS)
            self.wake.clear()

    def schedule_pending(self) -> None:
        with self.store.lock:
            pending = [pod for pod in self.store.pods.values() if pod["metadata"]["uid"] not in self.workers
                       and pod["status"].get("phase") == "Pending"]
        for pod in pending:
            node = self._choose_node(pod)
            if node is not None:
                worker = PodWorker(self.store, pod, node, self.log_dir)
                self.workers[pod["metadata"]["uid"]] = worker
                worker.start()

    def _choose_node(self, pod: dict[str, Any]) -> local_nodes.Node | None:
        spec = pod["spec"]
        candidates = local_nodes.all_nodes()
        if spec.get("nodeName"):
            candidates = [n for n in candidates if n.name == spec["nodeName"]]
            # a pod bound by nodeName skips the scheduler; it waits for that node's kubelet
            return candidates[0] if candidates and candidates[0].ready else None
        reasons: dict[str, int] = {}
        for node in sorted(candidates, key=lambda n: n.name):
            reason = node_objects.fits(node, spec)
            if reason is None:
                self._bind(pod, node)
                return node
            reasons[reason] = reasons.get(reason, 0) + 1
        self._unschedulable(pod, len(candidates), reasons)
        return None

    def _bind(self, pod: dict[str, Any], node: local_nodes.Node) -> None:
        with self.store.lock:
            pod["spec"]["nodeName"] = node.name
            set_condition(pod, "PodScheduled", "True")
            self.store.touch(pod)
        meta = pod["metadata"]
        self.store.event(pod, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to {node.name}",
                         component="default-scheduler")

    def _unschedulable(self, pod: dict[str, Any], total: int, reasons: dict[str, int]) -> None:
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        message = f"0/{total} nodes are available: {detail}." if total else "no nodes available to schedule pods"
        with self.store.lock:
            already = next((c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"), None)
            if already and already.get("message") == message:
                return
            set_condition(pod, "PodScheduled", "False", reason="Unschedulable", message=message)
            self.store.touch(pod)
        self.store.event(pod, "FailedScheduling", message, kind="Warning", component="default-scheduler")


def set_condition(pod: dict[str, Any], kind: str, value: str, *, reason: str | None = None,
                  message: str | None = None, moment: datetime | None = None) -> None:
    """Set a pod condition; lastTransitionTime moves only when the status changes (caller holds the lock)."""
    conditions = pod["status"].setdefault("conditions", [])
    current = next((c for c in conditions if c["type"] == kind), None)
    if current is None:
        current = {"type": kind, "lastProbeTime": None}
        conditions.append(current)
    if current.get("status") != value:
        current["lastTransitionTime"] = rfc3339(moment or now())
    current["status"] = value
    for key, item in (("reason", reason), ("message", message)):
        if item:
            current[key] = item
        else:
            current.pop(key, None)


class PodWorker(threading.Thread):
    """Kubelet's work for one pod on one node."""

    def __init__(self, store: Store, pod: dict[str, Any], node: local_nodes.Node, log_dir: Path) -> None:
        super().__init__(name=f"kubelet-{pod['metadata']['name']}", daemon=True)
        self.store, self.pod, self.node = store, pod, node
        self.uid = pod["metadata"]["uid"]
        self.log_path = Path(log_dir) / f"{self.uid}.log"
        self.container_ids: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.killed = threading.Event()

    # --- helpers
    def event(self, reason: str, message: str, container: str | None = None, kind: str = "Normal",
              moment: datetime | None = None) -> None:
        self.store.event(self.pod, reason, message, kind=kind, host=self.node.name, moment=moment,
                         field_path=f"spec.containers{{{container}}}" if container else None)

    def update(self, change: Any) -> None:
        with self.store.lock:
            change(self.pod)
            self.store.touch(self.pod)

    def kill(self) -> None:
        self.killed.set()
        for cid in self.container_ids:
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                self.node.ctr("tasks", "kill", "-s", "SIGKILL", cid, timeout=30)

    # --- lifecycle
    def run(self) -> None:
        try:
            self.run_pod()
        except Exception as error:
            log.exception("pod %s failed in the kubelet", self.pod["metadata"]["name"])
            self.event("Failed", f"Error: {error}", kind="Warning")
        finally:
            for cid in self.container_ids:
                with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                    self.node.ctr("containers", "rm", cid, timeout=60)

    def run_pod(self) -> None:
        containers = self.pod["spec"]["containers"]

        def starting(pod: dict[str, Any]) -> None:
            moment = now()
            pod["status"].update({"hostIP": "127.0.0.1", "podIP": "127.0.0.1",
                                  "podIPs": [{"ip": "127.0.0.1"}], "startTime": rfc3339(moment)})
            if not any(c["type"] == "PodScheduled" and c["status"] == "True" for c in pod["status"]["conditions"]):
                set_condition(pod, "PodScheduled", "True", moment=moment)  # bound by nodeName: kubelet sets it
            for kind in ("PodReadyToStartContainers", "Initialized"):
                set_condition(pod, kind, "True", moment=moment)
            names = ", ".join(c["name"] for c in containers)
            for kind in ("Ready", "ContainersReady"):
                set_condition(pod, kind, "False", reason="ContainersNotReady",
                              message=f"containers with unready status: [{names}]", moment=moment)
            pod["status"]["containerStatuses"] = [
                {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                 "started": False, "state": {"waiting": {"reason": "ContainerCreating"}}} for c in containers]

        self.update(starting)
        for index, container in enumerate(containers):
            if self.killed.is_set() or not self.ensure_image(index, container):
                return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as output:
            for index, container in enumerate(containers):
                if self.killed.is_set() or not self.start_container(index, container, output):
                    return
            self.update(lambda pod: [set_condition(pod, kind, "True") for kind in ("ContainersReady", "Ready")])
            self.wait_containers()

    def ensure_image(self, index: int, container: dict[str, Any]) -> bool:
        image = container["image"]
        ref = normalize_image(image)
        policy = container.get("imagePullPolicy") or ("Always" if ref.endswith(":latest") else "IfNotPresent")
        present = self.image_present(ref)
        if present and policy != "Always":
            self.event("Pulled", f'Container image "{image}" already present on machine', container["name"])
        elif policy == "Never":
            self.pull_failed(index, container, "ErrImageNeverPull",
                             f'Container image "{image}" is not present with pull policy of Never')
            return False
        else:
            self.event("Pulling", f'Pulling image "{image}"', container["name"])
            started = time.monotonic()
            assert self.node.containerd is not None
            returncode, output = image_pull.pull(self.node.containerd.address, registry_host(image), ref)
            seconds = time.monotonic() - started
            if returncode != 0:
                reason = (output.strip().splitlines() or ["pull failed"])[-1]
                self.event("Failed", f'Failed to pull image "{image}": {reason}', container["name"], "Warning")
                self.pull_failed(index, container, "ErrImagePull", reason)
                return False
            self.event("Pulled", f'Successfully pulled image "{image}" in {seconds:.3f}s ({seconds:.3f}s '
                       f"including waiting). Image size: {self.image_size(ref)} bytes.", container["name"])
        digest = self.image_digest(ref)

        def image_id(pod: dict[str, Any]) -> None:
            pod["status"]["containerStatuses"][index]["imageID"] = f"{ref.split('@')[0].rsplit(':', 1)[0]}@{digest}"

        self.update(image_id)
        return True

    def pull_failed(self, index: int, container: dict[str, Any], reason: str, message: str) -> None:
        """Kubelet's events for an image it cannot get; the pod stays Pending (no retries here)."""
        if reason == "ErrImageNeverPull":
            self.event("ErrImageNeverPull", message, container["name"], "Warning")
            backoff = reason
        else:
            self.event("Failed", f"Error: {reason}", container["name"], "Warning")
            self.event("BackOff", f'Back-off pulling image "{container["image"]}"', container["name"])
            self.event("Failed", "Error: ImagePullBackOff", container["name"], "Warning")
            backoff = "ImagePullBackOff"

        if backoff == "ImagePullBackOff":
            message = f'Back-off pulling image "{container["image"]}": {message}'

        def waiting(pod: dict[str, Any]) -> None:
            pod["status"]["containerStatuses"][index]["state"] = {"waiting": {"reason": backoff, "message": message}}

        self.update(waiting)

    def image_names(self) -> dict[str, str]:
        """name -> target digest of every image in the node's containerd (namespace k8s.io)."""
        proc = self.node.ctr("images", "ls", timeout=60)
        found = {}
        for line in proc.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3:
                found[fields[0]] = fields[2]
        return found

    def image_present(self, ref: str) -> bool:
        names = self.image_names()
        if ref in names:
            return True
        if "@" in ref:
            name, digest = ref.split("@", 1)
            repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
            return f"{repo}@{digest}" in names or any(d == digest and n.startswith(repo) for n, d in names.items())
        return False

    def image_digest(self, ref: str) -> str:
        names = self.image_names()
        return names.get(ref) or (ref.split("@", 1)[1] if "@" in ref else "")

    def image_size(self, ref: str) -> int:
        """Config + layers of the manifest for this machine (the bytes a pull brings)."""
        digest = self.image_digest(ref)
        document = json.loads(self.node.ctr("content", "get", digest, timeout=60).stdout or "{}")
        if "manifests" in document:
            arch = node_objects.machine_architecture()
            chosen = next((m for m in document["manifests"] if m.get("platform", {}).get("architecture") == arch),
                          document["manifests"][0])
            document = json.loads(self.node.ctr("content", "get", chosen["digest"], timeout=60).stdout or "{}")
        return int(document.get("config", {}).get("size", 0)) + sum(int(layer["size"])
                                                                      for layer in document.get("layers", []))

    def start_container(self, index: int, container: dict[str, Any], output: Any) -> bool:
        name = container["name"]
        cid = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{self.pod['metadata']['name']}-{name}-{self.uid[:8]}")
        command = [*(container.get("command") or []), *(container.get("args") or [])]
        env = [f"--env={item['name']}={item.get('value', '')}" for item in container.get("env") or []]
        proc = self.node.ctr("containers", "create", *env, normalize_image(container["image"]), cid,
                             *(["--", *command] if command else []),
                             timeout=600)
        if proc.returncode != 0:
            self.event("Failed", f"Error: {proc.stderr.strip()[-300:]}", name, "Warning")
            self.update(lambda pod: pod["status"]["containerStatuses"][index].update(
                state={"waiting": {"reason": "CreateContainerError", "message": proc.stderr.strip()[-300:]}}))
            return False
        self.container_ids.append(cid)
        self.event("Created", f"Created container {name}", name)
        assert self.node.containerd is not None
        process = subprocess.Popen(["ctr", "-a", str(self.node.containerd.address), "-n", "k8s.io",
                                    "tasks", "start", cid], stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        self.processes.append(process)
        started = self.wait_started(cid, process)
        self.event("Started", f"Started container {name}", name, moment=started)

        def running(pod: dict[str, Any]) -> None:
            status = pod["status"]["containerStatuses"][index]
            status.update(state={"running": {"startedAt": rfc3339(started)}}, ready=True, started=True,
                          containerID=f"containerd://{cid}")
            pod["status"]["phase"] = "Running"

        self.update(running)
        return True

    def wait_started(self, cid: str, process: subprocess.Popen[bytes], timeout: float = 30) -> datetime:
        """When containerd reports the task RUNNING (or it already ended): what Started means."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            for line in self.node.ctr("tasks", "ls", timeout=30).stdout.splitlines()[1:]:
                fields = line.split()
                if fields[:1] == [cid] and fields[-1:] in (["RUNNING"], ["STOPPED"]):
                    return now()
            time.sleep(0.005)
        return now()

    def wait_containers(self) -> None:
        codes = []
        for index, process in enumerate(self.processes):
            code = process.wait()
            codes.append(code)
            finished = now()

            def terminated(pod: dict[str, Any], index: int = index, code: int = code,
                           finished: datetime = finished) -> None:
                status = pod["status"]["containerStatuses"][index]
                started_at = status["state"].get("running", {}).get("startedAt", rfc3339(finished))
                status.update(ready=False, started=False, state={"terminated": {
                    "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started_at, "finishedAt": rfc3339(finished),
                    "containerID": status.get("containerID", "")}})

            self.update(terminated)
        phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"

        def done(pod: dict[str, Any]) -> None:
            pod["status"]["phase"] = phase
            for kind in ("Ready", "ContainersReady"):
                set_condition(pod, kind, "False", reason="PodCompleted")

        self.update(done)
