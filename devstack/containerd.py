"""A private containerd: own root, state and sockets, started and stopped by PID.

Several of these (builder, restored "nodes", other helpers' tests) run next to each other and next
to any system containerd, so nothing here uses a default path or stops a process by name.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from devstack import process

CONFIG_TEMPLATE = """\
# Written by devstack/containerd.py: a private containerd for the local cloud.
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{address}"

[ttrpc]
  address = "{address}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"""


def write_config(root: Path, state: Path, address: Path, config_path: Path, *, extra_toml: str = "") -> Path:
    """Write a containerd 1.6 config (version 2) that shares nothing with any other containerd.

    `extra_toml` is appended verbatim (e.g. plugin settings a caller needs).
    """
    for directory in (Path(root), Path(state), Path(address).parent, Path(config_path).parent):
        directory.mkdir(parents=True, exist_ok=True)
    if len(str(address)) > 98:  # containerd refuses > 104 and adds ".ttrpc"
        raise ValueError(f"socket path too long for a unix socket (max 98 chars): {address}")
    Path(config_path).write_text(
        CONFIG_TEMPLATE.format(root=Path(root).resolve(), state=Path(state).resolve(), address=address)
        + extra_toml
    )
    return Path(config_path)


class Containerd:
    """A containerd child process on its own socket; use as a context manager."""

    def __init__(self, root: Path, state: Path, address: Path, config_path: Path | None = None,
                 log_path: Path | None = None) -> None:
        self.root = Path(root)
        self.state = Path(state)
        self.address = Path(address)
        self.config_path = Path(config_path) if config_path else self.state.parent / "containerd.toml"
        self.log_path = Path(log_path) if log_path else self.state.parent / "containerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 30) -> Containerd:
        """Launch containerd and wait until its socket answers `ctr version`."""
        write_config(self.root, self.state, self.address, self.config_path)
        self.process = process.start(["containerd", "--config", str(self.config_path)], self.log_path)
        process.wait_ready(self.process, self.answers, what=f"containerd on {self.address}", timeout=timeout,
                           log_path=self.log_path)
        return self

    def answers(self) -> bool:
        """True when the socket answers `ctr version`."""
        probe = subprocess.run(["ctr", "-a", str(self.address), "version"], capture_output=True, check=False,
                               timeout=10)
        return probe.returncode == 0

    def stop(self, timeout: float = 20, *, kill_tasks: bool = True) -> None:
        """SIGTERM our containerd (and only it: shims keep their own groups), SIGKILL if it lingers.

        With `kill_tasks`, running containers are force-deleted first: their shims outlive
        containerd and would keep mounts under `root` busy.
        """
        if self.process is None or self.process.poll() is not None:
            return
        if kill_tasks:
            self.kill_tasks()
        process.stop(self.process, timeout, group=False)

    def kill_tasks(self) -> list[str]:
        """Force-delete every running task in every namespace; return "namespace/id" of each."""
        killed = []
        namespaces = self.ctr("namespaces", "ls", "-q", timeout=30).stdout.split()
        for namespace in namespaces:
            for task in self.ctr("tasks", "ls", "-q", namespace=namespace, timeout=30).stdout.split():
                self.ctr("tasks", "delete", "--force", task, namespace=namespace, timeout=30)
                killed.append(f"{namespace}/{task}")
        return killed

    def ctr(self, *args: str, namespace: str = "k8s.io", check: bool = False,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run `ctr -a SOCK -n NAMESPACE ARGS...` against this containerd."""
        return subprocess.run(
            ["ctr", "-a", str(self.address), "-n", namespace, *args],
            capture_output=True, text=True, check=check, timeout=timeout,
        )

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
