"""The kubelet stand-in's pulls: through the registry fronts, with a node's credentials, no secret on any argv.

Real parts: containerd (root), the registry fronts and their docker-registry backend, the local cloud's ECR.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import volumes
from devstack.containerd import Containerd
from devstack.k8s import image_pull

MISSING = volumes.data_plane_missing()
pytestmark = [pytest.mark.root, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]


@pytest.fixture
def node_containerd() -> Iterator[Containerd]:
    """A node's containerd (own root, state, socket), stopped by PID after the test."""
    base = Path(tempfile.mkdtemp(prefix="mlc-ip-", dir="/tmp"))
    try:
        with Containerd(base / "root", base / "state", base / "c.sock", base / "config.toml") as running:
            yield running
    finally:
        volumes.cleanup_under(base)
        shutil.rmtree(base, ignore_errors=True)


def _argv_of_every_process() -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def _pull_watching_argv(containerd: Containerd, host: str, ref: str) -> tuple[int, str, list[str]]:
    """Pull while another thread records the argv of every process on the machine."""
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.extend(_argv_of_every_process())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        code, output = image_pull.pull(containerd.address, host, ref, timeout=120)
    finally:
        done.set()
        watcher.join()
    return code, output, seen


def test_a_private_image_is_pulled_with_the_node_credential_never_on_argv(node_containerd, private_registry) -> None:
    code, output, argvs = _pull_watching_argv(node_containerd, private_registry.host, private_registry.image)
    assert code == 0, output
    assert private_registry.image in node_containerd.ctr("images", "ls", "-q").stdout.split()
    assert any("images pull" in argv and "--user ml-cache-puller" in argv for argv in argvs)  # the watch saw ctr
    assert not [argv for argv in argvs if private_registry.password in argv]
    assert private_registry.password not in output


def test_an_ecr_image_is_pulled_with_a_token_from_get_authorization_token(node_containerd, ecr_registry) -> None:
    code, output, argvs = _pull_watching_argv(node_containerd, ecr_registry.host, ecr_registry.image)
    assert code == 0, output
    assert ecr_registry.image in node_containerd.ctr("images", "ls", "-q").stdout.split()
    assert any("--hosts-dir" in argv and "--user AWS" in argv for argv in argvs)


def test_a_pull_refused_by_the_registry_fails_with_its_reason(node_containerd, ecr_registry, registry_faults) -> None:
    registry_faults(ecr_token_seconds=0)  # the node's token is expired when it is used
    code, output = image_pull.pull(node_containerd.address, ecr_registry.host, ecr_registry.image, timeout=120)
    assert code != 0
    assert "403" in output or "Forbidden" in output, output
    assert ecr_registry.image not in node_containerd.ctr("images", "ls", "-q").stdout.split()


def test_a_password_prompt_is_answered_through_the_terminal() -> None:
    script = 'stty -echo; printf "Password: "; read -r answer; stty echo; echo; echo "got ${#answer} chars"'
    code, output = image_pull.run_with_password(["bash", "-c", script], "s3cret-value", timeout=20)
    assert code == 0 and "got 12 chars" in output and "s3cret-value" not in output
