"""The process helper: start with a log and pid file, readiness, stop by PID (group), nothing else touched."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devstack import process

IGNORES_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('up', flush=True); time.sleep(600)")


def test_start_writes_the_log_and_the_pid_file(tmp_path: Path) -> None:
    child = process.start([sys.executable, "-c", "print('hello', flush=True)"], tmp_path / "logs" / "a.log",
                          pid_file=tmp_path / "pids" / "a.pid")
    assert child.wait(timeout=30) == 0
    assert (tmp_path / "logs" / "a.log").read_text() == "hello\n"
    assert int((tmp_path / "pids" / "a.pid").read_text()) == child.pid
    assert os.getpgid(os.getpid()) != child.pid  # its own session and group


def test_wait_ready_returns_once_ready_and_reports_an_early_exit(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    child = process.start([sys.executable, "-c", f"import time, pathlib; time.sleep(0.3); "
                           f"pathlib.Path({str(marker)!r}).touch(); time.sleep(600)"], tmp_path / "b.log")
    try:
        process.wait_ready(child, marker.exists, what="sleeper", timeout=30, interval=0.05)
        assert child.poll() is None
    finally:
        process.stop(child)
    failing = process.start([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "c.log")
    with pytest.raises(process.NotReady, match=r"failing exited \(3\)"):
        process.wait_ready(failing, lambda: False, what="failing", timeout=30)


def test_wait_ready_stops_a_process_that_never_gets_ready(tmp_path: Path) -> None:
    child = process.start([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "d.log")
    with pytest.raises(process.NotReady, match="slow did not answer"):
        process.wait_ready(child, lambda: False, what="slow", timeout=0.5, interval=0.05)
    assert child.poll() is not None


def test_stop_by_recorded_pid_reaches_the_group_and_nothing_else(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    grandchild_file = tmp_path / "grandchild.pid"
    script = f"sleep 600 & echo $! > {grandchild_file}; wait"
    pid_file = tmp_path / "e.pid"
    child = process.start(["bash", "-c", script], tmp_path / "e.log", pid_file=pid_file)
    try:
        deadline = time.monotonic() + 10
        while not (grandchild_file.exists() and grandchild_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        grandchild = int(grandchild_file.read_text())
        assert process.recorded(pid_file) == child.pid
        assert process.stop_recorded(pid_file, timeout=10) is True
        assert child.wait(timeout=10) is not None
        assert not process.alive(grandchild)
        assert not pid_file.exists()
        assert bystander.poll() is None and process.alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()


def test_a_process_that_ignores_term_is_killed(tmp_path: Path) -> None:
    child = process.start([sys.executable, "-c", IGNORES_TERM], tmp_path / "f.log")
    process.wait_ready(child, lambda: "up" in (tmp_path / "f.log").read_text(), what="stubborn", timeout=30,
                       interval=0.05)
    started = time.monotonic()
    assert process.stop(child, timeout=0.5) is True
    assert child.returncode == -9
    assert time.monotonic() - started < 10
    assert process.stop(child) is False  # nothing left to stop


def test_a_stale_pid_file_is_not_trusted(tmp_path: Path) -> None:
    pid_file = tmp_path / "g.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # a live process, but not the one the file was written for:
    os.utime(pid_file, (0, 0))  # the file is from 1970, this process started after it (a reused PID)
    assert process.recorded(pid_file) is None
    assert process.stop_recorded(pid_file) is False
    assert not pid_file.exists()
    assert process.recorded(tmp_path / "missing.pid") is None


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401 if self.path == "/auth" else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def test_answers_probes_http_with_the_accepted_statuses() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert process.answers(url + "/") is True
        assert process.answers(url + "/auth") is False
        assert process.answers(url + "/auth", (200, 401)) is True
    finally:
        server.shutdown()
        server.server_close()
    assert process.answers(url + "/") is False



def test_free_port_block_gives_a_base_whose_neighbours_are_free() -> None:
    import socket

    base = process.free_port_block((2, 3, 4))
    for port in (base, base + 2, base + 3, base + 4):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
