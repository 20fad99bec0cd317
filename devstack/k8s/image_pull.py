"""How the kubelet stand-in gets an image a node lacks: as a real node would, through the registry's
endpoint mapping (containerd hosts.toml) and with the node's credentials for that registry.

Credentials (devstack.registries.node_credentials) are an ECR token from GetAuthorizationToken,
as kubelet's ECR credential provider gets one, or the node credential of a token-flow registry.
ctr 1.6 takes a password only from argv or a terminal, and argv is readable by every process: the
password is typed into its prompt through a pseudo-terminal.
"""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
import termios
import time
from pathlib import Path

from devstack import registries, sandbox

OUTPUT_TAIL = 4096


def pull(address: Path, host: str, ref: str, timeout: float = 3600) -> tuple[int, str]:
    """`ctr images pull` of `ref` (registry `host`) into the containerd at `address`; (exit code, output tail)."""
    argv = ["ctr", "-a", str(address), "-n", "k8s.io", "images", "pull"]
    with tempfile.TemporaryDirectory(prefix="kubelet-hosts-") as scratch:
        hosts_dir = registries.write_hosts_dir(Path(scratch), host)
        if hosts_dir is not None:
            argv += ["--hosts-dir", str(hosts_dir)]
        elif host in sandbox.plain_http_registries():
            argv.append("--plain-http")
        credentials = registries.node_credentials(host, sandbox.endpoint())
        if credentials is None:
            proc = subprocess.run([*argv, ref], capture_output=True, text=True, timeout=timeout, check=False)
            return proc.returncode, (proc.stdout + proc.stderr)[-OUTPUT_TAIL:]
        user, password = credentials
        return run_with_password([*argv, "--user", user, ref], password, timeout)


def run_with_password(argv: list[str], password: str, timeout: float) -> tuple[int, str]:
    """Run `argv` on a pseudo-terminal and answer its `Password:` prompt once echo is off."""
    master, slave = os.openpty()
    try:
        child = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    finally:
        os.close(slave)
    output, answered, deadline = bytearray(), False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output = (output + chunk)[-OUTPUT_TAIL:]
            if not answered and b"Password:" in output[-64:]:
                echo_off = time.monotonic() + 5
                while termios.tcgetattr(master)[3] & termios.ECHO and time.monotonic() < echo_off:
                    time.sleep(0.02)
                os.write(master, password.encode() + b"\n")
                answered = True
        else:
            child.kill()
        return child.wait(timeout=30), output.decode(errors="replace")
    finally:
        os.close(master)
