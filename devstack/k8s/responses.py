"""Request handlers of the stand-in: the core/v1 subset the kubernetes Python client uses.

GET /version /api /apis; nodes (list with labelSelector, get; register and delete the nodes of a
kubelet outside the local cloud, as a test playing the kubelet does); pods (create, list with label
and field selectors, get, delete, log, status read and replace); events (create, list with field
selectors); namespaces (created on use).
"""

from __future__ import annotations

import copy
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from devstack import nodes as local_nodes
from devstack.k8s import nodes as node_objects
from devstack.k8s.kubelet import Kubelets
from devstack.k8s.models import ApiError, Store, matches_fields, matches_labels, now, rfc3339

VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-devstack", "gitCommit": "", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}
CORE_RESOURCES = [
    {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node",
     "verbs": ["create", "delete", "get", "list"]},
    {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
     "verbs": ["create", "delete", "get", "list"]},
    {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
    {"name": "pods/status", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get", "update"]},
    {"name": "events", "singularName": "event", "namespaced": True, "kind": "Event", "verbs": ["create", "list"]},
    {"name": "namespaces", "singularName": "namespace", "namespaced": False, "kind": "Namespace",
     "verbs": ["get", "list"]},
]


class Api:
    """Request routing over the store and the kubelets; no HTTP in here."""

    def __init__(self, store: Store, kubelets: Kubelets) -> None:
        self.store = store
        self.kubelets = kubelets

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        try:
            return 200, self.route(method, parts, query, body)
        except ApiError as error:
            return error.code, error.body

    def route(self, method: str, parts: list[str], query: dict[str, str], body: Any) -> Any:
        if parts == ["version"]:
            return VERSION
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
        if parts[:2] != ["api", "v1"]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rest = parts[2:]
        if rest == []:
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": CORE_RESOURCES}
        if rest[0] == "nodes":
            return self.nodes(method, rest[1:], query, body)
        if rest == ["pods"] and method == "GET":
            return self.list_pods(None, query)
        if rest == ["events"] and method == "GET":
            return self.list_events(None, query)
        if rest[0] == "namespaces":
            return self.namespaced(method, rest[1:], query, body)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def namespaced(self, method: str, rest: list[str], query: dict[str, str], body: Any) -> Any:
        if not rest:
            items = [copy.deepcopy(ns) for ns in self.store.namespaces.values()]
            return {"kind": "NamespaceList", "apiVersion": "v1", "metadata": self._list_meta(), "items": items}
        namespace = rest[0]
        if len(rest) == 1 and method == "GET":
            return copy.deepcopy(self.store.ensure_namespace(namespace))
        self.store.ensure_namespace(namespace)
        resource, name, sub = ([*rest[1:], None, None])[:3]
        if resource == "pods":
            if name is None:
                if method == "POST":
                    return self.create_pod(namespace, body)
                if method == "GET":
                    return self.list_pods(namespace, query)
            elif sub is None and method == "GET":
                return self.store.pod(namespace, name)
            elif sub is None and method == "DELETE":
                return self.delete_pod(namespace, name)
            elif sub == "log" and method == "GET":
                return Text(self.pod_log(namespace, name))
            elif sub == "status" and method == "GET":
                return self.store.pod(namespace, name)
            elif sub == "status" and method == "PUT":
                return self.replace_pod_status(namespace, name, body)
        if resource == "events" and name is None and method == "GET":
            return self.list_events(namespace, query)
        if resource == "events" and name is None and method == "POST":
            return self.create_event(namespace, body)
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource "
                       f"({method} {'/'.join(rest)})")

    def _list_meta(self) -> dict[str, str]:
        return {"resourceVersion": self.store.next_version()}

    # --- nodes
    def nodes(self, method: str, rest: list[str], query: dict[str, str], body: Any) -> Any:
        if not rest and method == "GET":
            return self.list_nodes(query)
        if not rest and method == "POST":
            return self.register_node(body)
        if len(rest) == 1 and method == "GET":
            return self.get_node(rest[0])
        if len(rest) == 1 and method == "DELETE":
            return self.delete_node(rest[0])
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource "
                       f"({method} nodes/{'/'.join(rest)})")

    def list_nodes(self, query: dict[str, str]) -> dict[str, Any]:
        items = [node_objects.node_object(n, self.store.next_version()) for n in local_nodes.all_nodes()]
        with self.store.lock:
            items += [copy.deepcopy(n) for n in self.store.nodes.values()]
        items = [n for n in items if matches_labels(n["metadata"]["labels"], query.get("labelSelector"))
                 and matches_fields(n, query.get("fieldSelector"))]
        return {"kind": "NodeList", "apiVersion": "v1", "metadata": self._list_meta(), "items": items}

    def get_node(self, name: str) -> dict[str, Any]:
        node = next((n for n in local_nodes.all_nodes() if n.name == name), None)
        if node is not None:
            return node_objects.node_object(node, self.store.next_version())
        with self.store.lock:
            if name in self.store.nodes:
                return copy.deepcopy(self.store.nodes[name])
        raise ApiError(404, "NotFound", f'nodes "{name}" not found', name=name, kind="nodes")

    def register_node(self, body: Any) -> dict[str, Any]:
        """A kubelet registering its Node; the stand-in's kubelet runs no pod bound to it."""
        return self.store.register_node(body, taken={n.name for n in local_nodes.all_nodes()})

    def delete_node(self, name: str) -> dict[str, Any]:
        """Only registered nodes: the local cloud's own go with their node group (EKS)."""
        if any(n.name == name for n in local_nodes.all_nodes()):
            raise ApiError(405, "MethodNotAllowed", f'node "{name}" belongs to a node group of the local cloud: '
                           "scale or delete the node group", name=name, kind="nodes")
        with self.store.lock:
            node = self.store.nodes.pop(name, None)
        if node is None:
            raise ApiError(404, "NotFound", f'nodes "{name}" not found', name=name, kind="nodes")
        return node

    # --- pods
    def create_pod(self, namespace: str, body: Any) -> dict[str, Any]:
        pod = self.store.create_pod(namespace, body)
        self.kubelets.wake.set()
        return pod

    def list_pods(self, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        items = self.store.list_pods(namespace, query.get("labelSelector"), query.get("fieldSelector"))
        return {"kind": "PodList", "apiVersion": "v1", "metadata": self._list_meta(), "items": items}

    def delete_pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod = self.kubelets.delete(namespace, name)
        if not pod:
            raise ApiError(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        pod = copy.deepcopy(pod)
        pod["metadata"]["deletionTimestamp"] = rfc3339(now())
        pod["metadata"]["deletionGracePeriodSeconds"] = 0
        return pod

    def replace_pod_status(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        return self.store.replace_pod_status(namespace, name, body)

    def pod_log(self, namespace: str, name: str) -> str:
        pod = self.store.pod(namespace, name)
        worker = self.kubelets.workers.get(pod["metadata"]["uid"])
        if worker is None or not worker.log_path.exists():
            raise ApiError(400, "BadRequest", f'container in pod "{name}" is waiting to start', name=name,
                           kind="pods")
        return worker.log_path.read_text(errors="replace")

    # --- events
    def create_event(self, namespace: str, body: Any) -> dict[str, Any]:
        return self.store.create_event(namespace, body)

    def list_events(self, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        items = self.store.list_events(namespace, query.get("labelSelector"), query.get("fieldSelector"))
        return {"kind": "EventList", "apiVersion": "v1", "metadata": self._list_meta(), "items": items}


class Text(str):
    """A plain-text answer (pod logs)."""


class Handler(BaseHTTPRequestHandler):
    api: Api  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError as error:
            code, answer = 400, ApiError(400, "BadRequest", f"invalid JSON: {error}").body
        else:
            if query.get("watch") in ("true", "1"):
                code, answer = 405, ApiError(405, "MethodNotAllowed", "watch is not supported by the stand-in").body
            else:
                code, answer = self.api.handle(method, url.path, query, body)
        if isinstance(answer, Text):
            payload, content_type = answer.encode(), "text/plain"
        else:
            payload, content_type = json.dumps(answer).encode(), "application/json"
        if method == "POST" and code == 200:
            code = 201
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_PATCH(self) -> None:
        self._answer("PATCH")


def make_server(api: Api, port: int = 0) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server
