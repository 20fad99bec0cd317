"""The local cloud's HTTP endpoint: moto's server + the pinned extension + the local agent.

One werkzeug server on 127.0.0.1 answers the AWS APIs (what boto3/aiobotocore talk to with
endpoint_url=http://127.0.0.1:PORT) and the devstack routes (/_devstack/faults, /_devstack/state,
/_devstack/registries: the private registry fronts, which run in this process to check ECR tokens).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from devstack import billing, clock, faults, k8s, nodes, registries, sandbox
from devstack import moto_ext as _moto_ext
from devstack.agent import models as agent_state
from devstack.agent import runner

log = logging.getLogger(__name__)
HOST = "127.0.0.1"


class DevstackApp:
    """WSGI app: devstack routes first, everything else to moto."""

    def __init__(self, moto_app: Any) -> None:
        self.moto_app = moto_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/_devstack/"):
            return self.moto_app(environ, start_response)
        status, body = self.devstack_route(environ["REQUEST_METHOD"], path, environ)
        payload = json.dumps(body, indent=2, default=str).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    @staticmethod
    def json_body(environ: dict[str, Any]) -> dict[str, Any]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}")
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        return body

    def devstack_route(self, method: str, path: str, environ: dict[str, Any]) -> tuple[str, Any]:
        if path == "/_devstack/faults":
            if method == "GET":
                return "200 OK", faults.as_dict()
            if method == "DELETE":
                return "200 OK", faults.reset()
            if method in ("POST", "PUT", "PATCH"):
                try:
                    return "200 OK", faults.update(self.json_body(environ))
                except ValueError as error:
                    return "400 Bad Request", {"error": str(error)}
            return "405 Method Not Allowed", {"error": f"{method} not allowed"}
        if path == "/_devstack/registries":
            try:
                return registries.route(method, self.json_body(environ) if method == "POST" else None)
            except ValueError as error:
                return "400 Bad Request", {"error": str(error)}
        if path == "/_devstack/clock":
            return clock_route(method, environ)
        if path == "/_devstack/billing" and method == "GET":
            return "200 OK", billing.report()
        if path == "/_devstack/state" and method == "GET":
            return "200 OK", state()
        return "404 Not Found", {"error": f"no devstack route {path}"}


def clock_route(method: str, environ: dict[str, Any]) -> tuple[str, Any]:
    """GET shows {"now", "offset_seconds"}; POST {"advance_seconds": N} moves it forward. Nothing moves it
    back: FSR records, launch times and tokens stamped on it would be in the future."""
    if method == "GET":
        return "200 OK", clock.as_dict()
    if method == "POST":
        try:
            return "200 OK", clock.advance(DevstackApp.json_body(environ).get("advance_seconds"))
        except ValueError as error:
            return "400 Bad Request", {"error": str(error)}
    return "405 Method Not Allowed", {"error": f"{method} not allowed"}


def instances() -> list[dict[str, Any]]:
    """Every EC2 instance moto holds (all accounts and regions touched so far)."""
    from moto.ec2.models import ec2_backends

    found = []
    for account in list(dict.keys(ec2_backends)):
        account_backends = dict.__getitem__(ec2_backends, account)
        for region in list(dict.keys(account_backends)):
            for instance in dict.__getitem__(account_backends, region).all_instances():
                found.append({"instance_id": instance.id, "state": instance.state, "account": account,
                              "region": region, "instance_type": instance.instance_type,
                              "sandbox": sandbox.get(instance.id) is not None})
    return found


def state() -> dict[str, Any]:
    """Instances, their sandboxes, and the commands the agent is running."""
    return {
        "home": str(sandbox.home()),
        "instances": instances(),
        "sandboxes": [box.describe() for box in sandbox.all_sandboxes()],
        "running_commands": [agent_state.describe(inv) for inv in agent_state.running()],
        "faults": faults.as_dict(),
        "kubernetes": {"url": k8s.url(), "kubeconfig": str(sandbox.home() / "kubeconfig") if k8s.url() else None},
        "nodes": [node.describe() for node in nodes.all_nodes()],
        "registries": registries.route("GET", None)[1],
    }


class DevstackRequestHandler(MotoRequestHandler):
    """Answers carry the simulated clock's time in their `Date` header (http.server writes it)."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        return super().date_time_string(clock.time() if timestamp is None else timestamp)


class DevstackServer(ThreadedMotoServer):
    """ThreadedMotoServer whose WSGI app is wrapped by DevstackApp."""

    def _server_entry(self) -> None:
        app = DevstackApp(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=DevstackRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


@dataclass
class Handle:
    """A running local cloud. `.stop()` terminates every sandbox first."""

    endpoint: str
    port: int
    home: Path
    server: DevstackServer

    def stop(self) -> None:
        k8s.stop(self.home)  # kills pods' containers first
        nodes.stop(self.home)  # then nodes: containerd stopped, instances terminated, volume copies deleted
        shutdown_sandboxes(self.home)
        registries.stop_all()
        self.server.stop()

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def shutdown_sandboxes(home: Path | None = None) -> None:
    """Stop commands and tear down sandboxes (those under `home`, when given)."""
    for box in sandbox.all_sandboxes():
        if home is None or str(box.root).startswith(str(Path(home).resolve()) + "/"):
            runner.terminate_instance(box.instance_id)
    sandbox.teardown_all(home)
    sandbox.forget_all(home)


def start(port: int = 0, home: Path | None = None, plain_http_registries: tuple[str, ...] | list[str] = (),
          *, log_requests: bool = False) -> Handle:
    """Start the local cloud in this process on 127.0.0.1 (port 0 = ephemeral)."""
    _moto_ext.install()
    logging.getLogger("werkzeug").setLevel(logging.INFO if log_requests else logging.WARNING)
    home_path = sandbox.configure(home, plain_http_registries)
    server = DevstackServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    _, bound_port = server.get_host_and_port()
    endpoint = f"http://{HOST}:{bound_port}"
    sandbox.set_endpoint(endpoint)
    k8s.start(home_path)
    nodes.start()
    return Handle(endpoint=endpoint, port=bound_port, home=home_path, server=server)


def serve(port: int = 4566, home: Path | None = None, plain_http_registries: tuple[str, ...] | list[str] = ()
          ) -> None:
    """Run in the foreground until SIGINT/SIGTERM, then tear every sandbox down."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    handle = start(port, home, plain_http_registries, log_requests=True)
    (handle.home / "logs").mkdir(parents=True, exist_ok=True)
    stopped = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"devstack listening on {handle.endpoint} (home {handle.home})", flush=True)
    try:
        stopped.wait()
    finally:
        handle.stop()
