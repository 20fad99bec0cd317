"""A loopback OCI registry (Debian's `docker-registry`, distribution 2.8) tracked by PID."""

from __future__ import annotations

import subprocess
from pathlib import Path

from devstack import process

CONFIG_TEMPLATE = """\
# Written by devstack/registry.py: a loopback registry for the local cloud.
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {address}
{auth}"""

AUTH_TEMPLATE = """\
auth:
  htpasswd:
    realm: ml-cache-demo
    path: {htpasswd}
"""


class Registry:
    """`docker-registry serve` on 127.0.0.1:<port>, storage under `storage_dir`.

    `htpasswd` (a bcrypt htpasswd file) turns on basic auth for credential tests.
    """

    def __init__(self, storage_dir: Path, port: int = 0, *, htpasswd: Path | None = None,
                 work_dir: Path | None = None, pid_file: Path | None = None) -> None:
        self.storage_dir = Path(storage_dir)
        self.port = port or process.free_port()
        self.htpasswd = Path(htpasswd) if htpasswd else None
        self.work_dir = Path(work_dir) if work_dir else self.storage_dir.parent
        self.config_path = self.work_dir / f"registry-{self.port}.yml"
        self.log_path = self.work_dir / f"registry-{self.port}.log"
        self.pid_file = pid_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def write_config(self) -> Path:
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        auth = AUTH_TEMPLATE.format(htpasswd=self.htpasswd.resolve()) if self.htpasswd else ""
        self.config_path.write_text(
            CONFIG_TEMPLATE.format(storage=self.storage_dir.resolve(), address=self.address, auth=auth)
        )
        return self.config_path

    def start(self, timeout: float = 30) -> Registry:
        """Start the registry and wait until `GET /v2/` answers (200, or 401 with auth)."""
        self.write_config()
        self.process = process.start(["docker-registry", "serve", str(self.config_path)], self.log_path,
                                     pid_file=self.pid_file)
        process.wait_ready(self.process, self.answers, what=f"docker-registry on {self.address}", timeout=timeout,
                           interval=0.1, log_path=self.log_path)
        return self

    def answers(self) -> bool:
        """True when the registry's API root responds."""
        return process.answers(f"http://{self.address}/v2/", (200, 401))

    def stop(self, timeout: float = 10) -> None:
        """Stop our registry only (by PID), SIGKILL if it lingers."""
        if self.process is not None:
            process.stop(self.process, timeout)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
