"""The stack's services as pid-file processes: status and down touch only what this home started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devstack import process
from devstack.stack import services
from devstack.stack.layout import Layout


def layout_in(home: Path) -> Layout:
    return Layout(home=home, cloud_port=1, registry_port=2, airflow_port=3)


def test_down_with_nothing_running_touches_nothing(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        assert services.down(layout_in(tmp_path / "home")) is False
        assert process.alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()


def test_down_stops_each_recorded_service_and_removes_its_pid_file(tmp_path: Path) -> None:
    layout = layout_in(tmp_path / "home")
    children = {name: process.start([sys.executable, "-c", "import time; time.sleep(600)"], layout.log_file(name),
                                    pid_file=layout.pid_file(name)) for name in ("airflow", "registry")}
    assert services.status(layout)["running"] is False  # no cloud among them
    assert services.down(layout) is True
    for name, child in children.items():
        assert child.poll() is not None, name
        assert not layout.pid_file(name).exists()


def test_status_of_a_home_without_a_cloud(tmp_path: Path) -> None:
    status = services.status(layout_in(tmp_path / "home"))
    assert status == {"home": str(tmp_path / "home"), "pid": None, "endpoint": None, "running": False}


def test_layout_from_env_takes_overrides(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DEVSTACK_PORT", "4999")
    monkeypatch.setenv("DEVSTACK_HOME", str(tmp_path / "env-home"))
    assert Layout.from_env().cloud_port == 4999
    assert Layout.from_env().home == (tmp_path / "env-home").resolve()
    layout = Layout.from_env(tmp_path / "given", 5111)
    assert (layout.home, layout.endpoint) == ((tmp_path / "given").resolve(), "http://127.0.0.1:5111")
    assert layout.pid_file("cloud") == layout.home / "pids" / "cloud.pid"
