"""Where the stack lives and listens: one devstack home, loopback ports, pid and log files."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.sandbox import REPO_ROOT, default_home

REPO = REPO_ROOT
REGION = "us-west-2"


@dataclass(frozen=True)
class Layout:
    """Home and ports, from the environment; ports overridable for a second stack (tests)."""

    home: Path
    cloud_port: int
    registry_port: int
    airflow_port: int

    @classmethod
    def from_env(cls, home: Path | None = None, cloud_port: int | None = None) -> Layout:
        return cls(
            home=Path(home).resolve() if home else default_home(),
            cloud_port=cloud_port or int(os.environ.get("DEVSTACK_PORT", "4566")),
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
    def private_backend(self) -> str:
        """The docker-registry holding private content, reached only by the fronts (and seeding pushes)."""
        return f"127.0.0.1:{self.registry_port + 1}"

    @property
    def ecr_front_port(self) -> int:
        return self.registry_port + 2

    @property
    def private_front_port(self) -> int:
        """The Docker Hub/NGC-style registry (bearer tokens); its host is 127.0.0.1:<this port>."""
        return self.registry_port + 3

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def postgres_port(self) -> int:
        """The Celery flavour's metadata database (devstack/stack/airflow_celery.py)."""
        return self.airflow_port + 2

    @property
    def redis_port(self) -> int:
        """The Celery flavour's broker."""
        return self.airflow_port + 3

    @property
    def config_path(self) -> Path:
        return self.home / "ml_container_cache.yaml"

    @property
    def push_queue_url_file(self) -> Path:
        """Build on push: the queue Terraform made (provision writes it; Airflow gets ML_CACHE_PUSH_QUEUE_URL)."""
        return self.home / "terraform" / "ecr_push_queue_url"

    def pid_file(self, name: str) -> Path:
        return self.home / "pids" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
