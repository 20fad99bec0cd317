"""GPU nodes of EKS node groups: real EC2 instances of the local cloud with their own containerd.

A reconciler thread keeps each node group at its desired size (capped by
DEVSTACK_MAX_NODES_PER_GROUP, default 2) with nodes built from the group's launch template
version: a moto EC2 instance tagged as EKS tags it, whose /dev/xvdb data volume is a copy of the
template's snapshot (the sandbox does the copy, the loop device and the by-id link), mounted at
the node's containerd root by terraform/templates/mount-containerd-cache.sh (the real node's
mount logic), then the node's own containerd. The instance launches from EKS's copy of that version
(moto_ext/eks/launch_template_copy.py); the node keeps the source template id and version (its
labels). An update (moto_ext/eks.py) sets a target version:
new nodes first, then the old ones are drained and terminated; `converged()` tells the update
when it may turn Successful.

Off unless DEVSTACK_NODES=1 (or `enable()`): other tests and the build DAG expect no instances
but their builders.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack import sandbox, volumes
from devstack.containerd import Containerd
from devstack.moto_ext.eks import launch_template_copy

log = logging.getLogger(__name__)

MOUNT_SCRIPT = sandbox.REPO_ROOT / "terraform" / "templates" / "mount-containerd-cache.sh"
CACHE_DEVICE = "/dev/xvdb"
DEFAULT_IMAGE_ID = "ami-12c6146b"  # moto's default AMI, when the launch template names none
TICK_SECONDS = 0.3
IDLE_SECONDS = 2.0  # while nodes are off: only look whether they were turned on

_lock = threading.RLock()
_nodes: dict[str, Node] = {}  # instance id -> node
_enabled: bool | None = None  # None: follow DEVSTACK_NODES
_reconciler: Reconciler | None = None
_removal_hooks: list[Callable[[Node], None]] = []  # the kubelet drains a node's pods here


@dataclass
class Node:
    """One node: its instance, where it sits, which template version built it (the source, not EKS's
    copy the instance launched from), its containerd."""

    instance_id: str
    name: str
    account: str
    region: str
    cluster: str
    nodegroup: str
    template_id: str
    template_version: str
    instance_type: str
    zone: str
    root: Path
    labels: dict[str, str]
    taints: list[dict[str, str]]
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ready_at: datetime | None = None
    boot_seconds: float | None = None
    error: str | None = None
    containerd: Containerd | None = None
    mount_log: str = ""

    @property
    def ready(self) -> bool:
        return self.ready_at is not None and self.error is None

    def ctr(self, *args: str, timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
        """`ctr` against this node's containerd, namespace k8s.io (where kubelet's images live)."""
        if self.containerd is None:
            raise RuntimeError(f"node {self.name} has no containerd")
        return self.containerd.ctr(*args, timeout=timeout)

    def describe(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "name": self.name, "cluster": self.cluster,
                "nodegroup": self.nodegroup, "launch_template": {"id": self.template_id,
                                                                 "version": self.template_version},
                "instance_type": self.instance_type, "zone": self.zone, "ready": self.ready,
                "boot_seconds": self.boot_seconds, "error": self.error,
                "containerd_socket": str(self.containerd.address) if self.containerd else None}


def enabled() -> bool:
    if _enabled is not None:
        return _enabled
    return os.environ.get("DEVSTACK_NODES", "0").lower() in ("1", "true", "yes")


def enable(value: bool | None = True) -> None:
    """Turn nodes on/off in this process (None: follow DEVSTACK_NODES again)."""
    global _enabled
    _enabled = value


def max_nodes_per_group() -> int:
    return int(os.environ.get("DEVSTACK_MAX_NODES_PER_GROUP", "2"))


def update_timeout_seconds() -> float:
    """How long an update may wait for its nodes before it ends Failed (NodeCreationFailure)."""
    return float(os.environ.get("DEVSTACK_NODEGROUP_UPDATE_TIMEOUT_SECONDS", "600"))


def on_removal(hook: Callable[[Node], None]) -> None:
    """Register a callback run before a node goes away (the kubelet stops its pods)."""
    if hook not in _removal_hooks:
        _removal_hooks.append(hook)


def all_nodes() -> list[Node]:
    with _lock:
        return list(_nodes.values())


def get(name_or_instance: str) -> Node | None:
    with _lock:
        return _nodes.get(name_or_instance) or next((n for n in _nodes.values() if n.name == name_or_instance), None)


def nodes_of(account: str, region: str, cluster: str, nodegroup: str) -> list[Node]:
    return [n for n in all_nodes() if (n.account, n.region, n.cluster, n.nodegroup)
            == (account, region, cluster, nodegroup)]


def target_launch_template(group: Any) -> dict[str, str]:
    """The version nodes should run: an update's target while one rolls, else the group's own."""
    return dict(getattr(group, "devstack_target_launch_template", None) or group.launch_template or {})


def converged(account: str, region: str, cluster: str, nodegroup: str, version: str | None) -> bool:
    """All nodes of the group run `version` and are Ready, as many as it wants (True when nodes are off)."""
    if not enabled():
        return True
    group = _find_group(account, region, cluster, nodegroup)
    if group is None:
        return True
    members = nodes_of(account, region, cluster, nodegroup)
    wanted = desired_size(group)
    fresh = [n for n in members if version is None or n.template_version == str(version)]
    return len(members) == len(fresh) == wanted and all(n.ready for n in fresh)


def desired_size(group: Any) -> int:
    return max(0, min(int((group.scaling_config or {}).get("desiredSize", 0)), max_nodes_per_group()))


# --- reconciler ---------------------------------------------------------------------------------

class Reconciler(threading.Thread):
    """Keeps node groups and nodes in step until stopped."""

    def __init__(self) -> None:
        super().__init__(name="devstack-nodes", daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                if enabled():
                    reconcile_once()
            except Exception:
                log.exception("node reconcile failed")
            self.stopped.wait(TICK_SECONDS if enabled() else IDLE_SECONDS)


def start() -> None:
    """Start the reconciler thread (once per process; a second call is a no-op)."""
    global _reconciler
    with _lock:
        if _reconciler is not None and _reconciler.is_alive():
            return
        _reconciler = Reconciler()
        _reconciler.start()


def stop(home: Path | None = None) -> None:
    """Stop the reconciler and remove every node (containerd stopped, instance terminated).

    With `home`, only that home's nodes go (moto's backends are process-wide, so another local
    cloud in this process keeps its nodes); the reconciler stops when `home` is the current one.
    """
    global _reconciler
    base = Path(home).resolve() if home is not None else None
    if base is None or base == sandbox.home():  # new nodes would land in this home: no more of them
        with _lock:
            reconciler, _reconciler = _reconciler, None
        if reconciler is not None:
            reconciler.stopped.set()
            reconciler.join(timeout=120)
    for node in all_nodes():
        if base is None or node.root == base / "instances" / node.instance_id:
            remove_node(node)


def reconcile_once() -> None:
    groups = {key: group for key, group in _all_groups()}
    for node in all_nodes():
        if (node.account, node.region, node.cluster, node.nodegroup) not in groups:
            remove_node(node)  # node group (or cluster) deleted
    for (account, region, cluster, name), group in groups.items():
        _reconcile_group(account, region, cluster, name, group)


def _reconcile_group(account: str, region: str, cluster: str, name: str, group: Any) -> None:
    template = target_launch_template(group)
    if not template.get("id") and not template.get("name"):
        version = None
    else:
        version = _resolve_version(account, region, template)
    members = nodes_of(account, region, cluster, name)
    fresh = [n for n in members if version is None or n.template_version == version]
    stale = [n for n in members if n not in fresh]
    wanted = desired_size(group)
    if len(fresh) < wanted:
        create_node(account, region, cluster, group, template, index=len(members))
        return  # one at a time: the next tick sees it
    for node in fresh[wanted:]:
        remove_node(node)
    if all(n.ready for n in fresh[:wanted]):
        for node in stale:
            remove_node(node)


def _all_groups() -> list[tuple[tuple[str, str, str, str], Any]]:
    from moto.eks.models import eks_backends

    found = []
    for account in list(dict.keys(eks_backends)):
        regions = dict.__getitem__(eks_backends, account)
        for region in list(dict.keys(regions)):
            backend = dict.__getitem__(regions, region)
            for cluster in list(backend.clusters.values()):
                for group in list(cluster.nodegroups.values()):
                    found.append(((account, region, cluster.name, group.nodegroup_name), group))
    return found


def _find_group(account: str, region: str, cluster: str, nodegroup: str) -> Any:
    return dict(_all_groups()).get((account, region, cluster, nodegroup))


def _ec2(account: str, region: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account][region]


def _template_arg(template: dict[str, str], version: str | None = None) -> dict[str, str]:
    arg = {"LaunchTemplateId": template["id"]} if template.get("id") else {"LaunchTemplateName": template["name"]}
    if version or template.get("version"):
        arg["Version"] = str(version or template["version"])
    return arg


def _resolve_version(account: str, region: str, template: dict[str, str]) -> str:
    return str(_ec2(account, region)._get_template_from_args(_template_arg(template)).number)


# --- one node -----------------------------------------------------------------------------------

def create_node(account: str, region: str, cluster: str, group: Any, template: dict[str, str],
                index: int = 0) -> Node:
    """Launch the instance, mount its cache volume with the node's script, start its containerd."""
    started = time.monotonic()
    ec2 = _ec2(account, region)
    data: dict[str, Any] = {}
    version = template_id = ""
    kwargs: dict[str, Any] = {}
    if template.get("id") or template.get("name"):
        template_version = launch_template_copy.source_version(ec2, template)
        data, version = template_version.data, str(template_version.number)
        template_id = template_version.template.id
        copy = launch_template_copy.copy_of(ec2, group, template_version)  # EKS launches from its copy
        kwargs["launch_template"] = _template_arg({"id": copy.template.id}, str(copy.number))
    subnet_id = group.subnets[index % len(group.subnets)] if group.subnets else None
    instance_type = data.get("InstanceType") or (group.instance_types or ["m5.large"])[0]
    tags = {"eks:cluster-name": cluster, "eks:nodegroup-name": group.nodegroup_name,
            f"kubernetes.io/cluster/{cluster}": "owned",
            "Name": f"{cluster}-{group.nodegroup_name}-Node"}
    reservation = ec2.run_instances(
        data.get("ImageId") or DEFAULT_IMAGE_ID, 1, None, [],
        instance_type=instance_type, is_instance_type_default=False, region_name=region,
        subnet_id=subnet_id, tags={"instance": tags}, **kwargs,
    )
    instance = reservation.instances[0]
    box = sandbox.get(instance.id)
    node = Node(
        instance_id=instance.id, name=instance.private_dns_name, account=account, region=region, cluster=cluster,
        nodegroup=group.nodegroup_name, template_id=template_id, template_version=version,
        instance_type=instance_type, zone=instance.placement.zone or "", root=box.root if box else Path(),
        labels=dict(group.labels or {}), taints=[dict(t) for t in (group.taints or [])],
    )
    with _lock:
        _nodes[node.instance_id] = node
    try:
        if box is None:
            raise RuntimeError("no sandbox for the instance")
        if volumes.data_plane_missing() is not None:
            raise RuntimeError(f"no data plane: {volumes.data_plane_missing()}")
        if any(v.loop_device for v in box.volumes):
            node.mount_log = mount_cache_volume(box)
        node.containerd = _containerd(box).start()
        node.ready_at = datetime.now(UTC)
        node.boot_seconds = round(time.monotonic() - started, 3)
        log.info("node %s (%s, %s v%s) Ready in %.2fs", node.name, node.instance_id, node.nodegroup,
                 node.template_version, node.boot_seconds)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        node.error = str(error)
        log.warning("node %s failed to boot: %s", node.instance_id, error)
    return node


def mount_cache_volume(box: sandbox.Sandbox) -> str:
    """Run the node's real mount script with its paths pointed into the sandbox; return its log."""
    env = box.environment()
    etc = box.root / "etc"
    script_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CACHE_")},
        "CACHE_BY_ID_DIR": str(box.device_dir),
        "CACHE_MOUNT_POINT": env["ML_CACHE_CONTAINERD_ROOT"],
        "CACHE_SYSTEMD_DIR": str(etc / "systemd" / "system"),
        "CACHE_FSTAB": str(etc / "fstab"),
        "CACHE_DEVICE_WAIT_SECONDS": "10",
        "CACHE_MANAGE_SYSTEMD": "0",
    }
    etc.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["bash", str(MOUNT_SCRIPT)], env=script_env, capture_output=True, text=True,
                          timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"mount-containerd-cache.sh failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stderr


def _containerd(box: sandbox.Sandbox) -> Containerd:
    env = box.environment()
    return Containerd(Path(env["ML_CACHE_CONTAINERD_ROOT"]), Path(env["ML_CACHE_CONTAINERD_STATE"]),
                      Path(env["ML_CACHE_CONTAINERD_SOCKET"]), Path(env["ML_CACHE_CONTAINERD_CONFIG"]),
                      log_path=box.root / "containerd.log")


def remove_node(node: Node) -> None:
    """Drain (hooks), stop containerd, terminate the instance (unmount, detach), delete the volume copy."""
    with _lock:
        if _nodes.pop(node.instance_id, None) is None:
            return
    for hook in list(_removal_hooks):
        try:
            hook(node)
        except Exception:
            log.exception("drain hook failed for %s", node.name)
    if node.containerd is not None:
        try:
            node.containerd.stop()
        except (OSError, subprocess.SubprocessError) as error:
            log.warning("stopping containerd of %s: %s", node.name, error)
    box = sandbox.get(node.instance_id)
    try:
        _ec2(node.account, node.region).terminate_instances([node.instance_id])
    except Exception as error:  # the backend may be gone after a moto reset
        log.warning("terminate %s: %s", node.instance_id, error)
        sandbox.teardown(node.instance_id)
    if box is not None:
        for volume in box.volumes:
            volume.path.unlink(missing_ok=True)
