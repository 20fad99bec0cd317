"""A Kubernetes API stand-in for the local cloud's GPU nodes (devstack.nodes).

`start(home)` serves the core/v1 subset our DAGs use on 127.0.0.1 (DEVSTACK_K8S_PORT or an
ephemeral port) and writes $home/kubeconfig for the kubernetes client; `stop()` kills the pods'
containers and closes the server. Small and honest: a stand-in for that subset, not a Kubernetes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

from devstack.k8s.kubelet import Kubelets
from devstack.k8s.models import Store
from devstack.k8s.responses import Api, make_server

KUBECONFIG_TEMPLATE = """\
apiVersion: v1
kind: Config
clusters:
- name: devstack
  cluster:
    server: {url}
contexts:
- name: devstack
  context:
    cluster: devstack
    user: devstack
    namespace: default
current-context: devstack
users:
- name: devstack
  user:
    token: devstack
"""


@dataclass
class ApiServer:
    url: str
    kubeconfig: Path
    store: Store
    kubelets: Kubelets
    server: ThreadingHTTPServer
    thread: threading.Thread

    def stop(self) -> None:
        self.kubelets.stop()
        self.server.shutdown()
        self.server.server_close()


_current: ApiServer | None = None
_lock = threading.Lock()


def start(home: Path, port: int | None = None) -> ApiServer:
    """Serve the API and write $home/kubeconfig (server http://127.0.0.1:PORT, no TLS)."""
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
        store = Store()
        kubelets = Kubelets(store, Path(home) / "k8s" / "logs")
        chosen = port if port is not None else int(os.environ.get("DEVSTACK_K8S_PORT") or 0)
        server = make_server(Api(store, kubelets), chosen)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, name="devstack-k8s-api", daemon=True)
        thread.start()
        kubelets.start()
        kubeconfig = Path(home) / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG_TEMPLATE.format(url=url))
        _current = ApiServer(url, kubeconfig, store, kubelets, server, thread)
        return _current


def stop(home: Path | None = None) -> None:
    """Stop the API server (only if it was started for `home`, when given)."""
    global _current
    with _lock:
        if _current is None or (home is not None and _current.kubeconfig != Path(home) / "kubeconfig"):
            return
        current, _current = _current, None
    current.stop()


def current() -> ApiServer | None:
    return _current


def url() -> str | None:
    return _current.url if _current else None
