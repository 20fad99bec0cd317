"""A per-connection bandwidth cap between two network namespaces, for benchmarks/pull_phase.py.

Why: on AWS one TCP connection to a registry gets far less than the instance's bandwidth, so a puller
that fetches a big layer over one connection is slower than one that opens several. Loopback hides
that. This kernel has no sch_fq, netem or cls_flow, so the cap is htb with one class per client port:
the client namespace's ephemeral ports are one contiguous range of PORTS ports, and a u32 hash table
keyed on the low byte of the destination port sends each server->client TCP packet to its port's class.
Every live connection has its own port, hence its own class, capped at the rate (no sharing).

The namespaces hold only a veth pair with addresses of the RFC 2544 benchmarking range (198.18.0.0/30)
and no route anywhere else: nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devstack import process
from devstack.containerd import Containerd
from devstack.registry import Registry

PORT_BASE = 40000
PORTS = 1024  # client ephemeral ports = htb classes; TIME_WAIT ports are reused (tcp_tw_reuse=1)
SERVER_IP = "198.18.0.1"
CLIENT_IP = "198.18.0.2"
REGISTRY_PORT = 5000


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    return proc


def htb_batch(device: str, rate_mbit: int, *, port_base: int = PORT_BASE, ports: int = PORTS) -> str:
    """`tc -batch` lines: htb root, one class per client port capped at the rate, u32 hash to classes.

    Minor class ids and hash buckets are hex in tc's syntax; packets that are not TCP to one of the
    ports (ARP, ICMP, the handshake's other direction) stay unclassified and go out unshaped.
    """
    lines = [f"qdisc add dev {device} root handle 1: htb default 0"]
    for index in range(ports):
        lines.append(f"class add dev {device} parent 1: classid 1:{index + 1:x} htb rate {rate_mbit}mbit "
                     f"ceil {rate_mbit}mbit burst 128k cburst 128k quantum 60000")
    lines.append(f"filter add dev {device} parent 1: prio 1 handle 100: protocol ip u32 divisor 256")
    # TCP without IP options: the destination port is bytes 22-23 of the packet; hash on its low byte.
    lines.append(f"filter add dev {device} parent 1: prio 1 protocol ip u32 ht 800:: "
                 "match ip protocol 6 0xff hashkey mask 0x000000ff at 20 link 100:")
    for index in range(ports):
        port = port_base + index
        lines.append(f"filter add dev {device} parent 1: prio 1 protocol ip u32 ht 100:{port & 0xFF:x}: "
                     f"match ip dport {port} 0xffff flowid 1:{index + 1:x}")
    return "\n".join(lines) + "\n"


@dataclass
class CappedLink:
    """Server and client namespaces joined by a veth pair; server->client capped per connection.

    Use as a context manager; `down()` removes both namespaces (and so the veth pair).
    """

    rate_mbit: int
    tag: str = ""

    def __post_init__(self) -> None:
        tag = self.tag or str(os.getpid())
        self.server_ns, self.client_ns = f"mlcb-{tag}-s", f"mlcb-{tag}-c"
        self.server_dev, self.client_dev = f"mlcb{tag}s"[:15], f"mlcb{tag}c"[:15]
        self.created: list[str] = []

    def prefix(self, namespace: str) -> list[str]:
        """argv prefix that runs a command in `namespace`'s network (the mount namespace stays ours)."""
        return ["nsenter", f"--net=/run/netns/{namespace}", "--"]

    def client(self, *argv: str) -> list[str]:
        return [*self.prefix(self.client_ns), *argv]

    def server(self, *argv: str) -> list[str]:
        return [*self.prefix(self.server_ns), *argv]

    def up(self) -> CappedLink:
        for namespace in (self.server_ns, self.client_ns):
            _run("ip", "netns", "add", namespace)
            self.created.append(namespace)
        _run("ip", "link", "add", self.server_dev, "netns", self.server_ns, "type", "veth",
             "peer", "name", self.client_dev, "netns", self.client_ns)
        for namespace, device, address in ((self.server_ns, self.server_dev, SERVER_IP),
                                           (self.client_ns, self.client_dev, CLIENT_IP)):
            _run("ip", "-n", namespace, "addr", "add", f"{address}/30", "dev", device)
            _run("ip", "-n", namespace, "link", "set", device, "up")
            _run("ip", "-n", namespace, "link", "set", "lo", "up")
        _run(*self.client("sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={PORT_BASE} {PORT_BASE + PORTS - 1}",
                          "net.ipv4.tcp_tw_reuse=1"))
        with tempfile.NamedTemporaryFile("w", suffix=".tc", delete=False) as batch:
            batch.write(htb_batch(self.server_dev, self.rate_mbit))
        try:
            _run(*self.server("tc", "-batch", batch.name))
        finally:
            os.unlink(batch.name)
        return self

    def down(self) -> None:
        """Delete the namespaces we created (processes in them must be stopped first)."""
        for namespace in reversed(self.created):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False, timeout=30)
        self.created.clear()

    def __enter__(self) -> CappedLink:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def measure(self, seconds: float = 2.0) -> dict[str, float]:
        """Mbit/s of one connection alone and of two at once (their sum), server -> client.

        A throwaway http.server in the server namespace serves a sparse file of `seconds` at the cap.
        """
        size = int(self.rate_mbit * 1e6 / 8 * seconds)
        with tempfile.TemporaryDirectory(prefix="mlcb-cap-") as scratch:
            with open(Path(scratch) / "blob", "wb") as handle:
                handle.truncate(size)
            server = process.start(self.server("python3", "-m", "http.server", "--bind", SERVER_IP,
                                               "--directory", scratch, "8000"), Path(scratch) / "http.log")
            try:
                url = f"http://{SERVER_IP}:8000/blob"
                deadline = time.monotonic() + 10
                while not self._client_gets(f"http://{SERVER_IP}:8000/"):
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("cap check: http.server in the server namespace did not answer")
                    time.sleep(0.1)
                one = self._curl_mbit([url])
                two = self._curl_mbit([url, url])
            finally:
                process.stop(server)
        return {"one_connection_mbit": round(one, 1), "two_connections_mbit": round(two, 1)}

    def _client_gets(self, url: str) -> bool:
        probe = subprocess.run(self.client("curl", "-s", "-o", "/dev/null", "--max-time", "2", url),
                               capture_output=True, check=False, timeout=10)
        return probe.returncode == 0

    def _curl_mbit(self, urls: list[str]) -> float:
        """Sum of the bytes all `urls` delivered (fetched at once) over the wall time, in Mbit/s."""
        started = time.monotonic()
        fetches = [subprocess.Popen(self.client("curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", url),
                                    stdout=subprocess.PIPE, text=True) for url in urls]
        total = 0
        for fetch in fetches:
            out, _ = fetch.communicate(timeout=120)
            if fetch.returncode != 0:
                raise RuntimeError(f"cap check: curl failed ({fetch.returncode})")
            total += int(out.strip() or 0)
        return total * 8 / 1e6 / (time.monotonic() - started)


class NetnsRegistry(Registry):
    """docker-registry on SERVER_IP:5000 inside the link's server namespace (readiness probed from the client)."""

    def __init__(self, link: CappedLink, storage_dir: Path, work_dir: Path) -> None:
        super().__init__(storage_dir, REGISTRY_PORT, work_dir=work_dir)
        self.link = link

    @property
    def address(self) -> str:
        return f"{SERVER_IP}:{self.port}"

    def start(self, timeout: float = 30) -> NetnsRegistry:
        self.write_config()
        self.process = process.start(self.link.server("docker-registry", "serve", str(self.config_path)),
                                     self.log_path)
        process.wait_ready(self.process, self.answers, what=f"docker-registry on {self.address}",
                           timeout=timeout, interval=0.1, log_path=self.log_path)
        return self

    def answers(self) -> bool:
        return self.link._client_gets(f"http://{self.address}/v2/")


class NetnsContainerd(Containerd):
    """A devstack Containerd whose process (and so `ctr` pulls it serves) lives in a given network."""

    def __init__(self, prefix: list[str], *args: Path) -> None:
        super().__init__(*args)
        self.prefix = prefix

    def start(self, timeout: float = 30) -> NetnsContainerd:
        from devstack.containerd import write_config

        write_config(self.root, self.state, self.address, self.config_path)
        self.process = process.start([*self.prefix, "containerd", "--config", str(self.config_path)], self.log_path)
        process.wait_ready(self.process, self.answers, what=f"containerd on {self.address}", timeout=timeout,
                           log_path=self.log_path)
        return self


def link_missing() -> str | None:
    """None when namespaces, veth and htb can be set up here, else the reason."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "tc", "nsenter", "curl"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode != 0:
            return f"{tool} not found"
    return None


@contextlib.contextmanager
def nothing() -> object:
    """A stand-in context for loopback mode (no link)."""
    yield None
