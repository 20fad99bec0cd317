"""The API server's objects and their rules: pods (validated, defaulted), events, namespaces,
resourceVersions and selectors.

Kept in memory (one process, like the rest of the local cloud); the lock guards every change.
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """Whole seconds, as the API's metav1.Time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime) -> str:
    """Microseconds, as the API's metav1.MicroTime (Event.eventTime)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A metav1.Status, what the real API answers errors with."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.body = status(code, reason, message, **details)


def checked_name(kind: str, name: str) -> str:
    """A DNS-subdomain object name, as the API server validates it."""
    if not NAME.match(name) or len(name) > 253:
        raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: metadata.name: Invalid value: {name!r}',
                       name=name, kind=kind)
    return name


def _extra(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in meta.items() if k in ("labels", "annotations")}


class Store:
    """Pods by (namespace, name), events in order, namespaces created on first use, and the nodes
    registered through the API (by a kubelet outside the local cloud; its own nodes are not here)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.namespaces: dict[str, dict[str, Any]] = {}
        self._versions = itertools.count(1000)
        self.ensure_namespace("default")

    def next_version(self) -> str:
        return str(next(self._versions))

    def metadata(self, name: str, namespace: str | None, **extra: Any) -> dict[str, Any]:
        meta = {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": self.next_version(),
                "creationTimestamp": rfc3339(now()), **extra}
        if namespace is not None:
            meta["namespace"] = namespace
        return meta

    def ensure_namespace(self, name: str) -> dict[str, Any]:
        with self.lock:
            if name not in self.namespaces:
                self.namespaces[name] = {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": self.metadata(name, None,
                                                                   labels={"kubernetes.io/metadata.name": name}),
                                         "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
            return self.namespaces[name]

    def touch(self, pod: dict[str, Any]) -> None:
        """Record a change to a pod (new resourceVersion). Caller holds the lock."""
        pod["metadata"]["resourceVersion"] = self.next_version()

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            found = self.pods.get((namespace, name))
            if found is None:
                raise ApiError(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
            return copy.deepcopy(found)

    def create_pod(self, namespace: str, body: Any) -> dict[str, Any]:
        """Validate and default a Pod as the API server does; store it Pending; return a copy."""
        if not isinstance(body, dict) or body.get("kind", "Pod") != "Pod":
            raise ApiError(400, "BadRequest", "the body must be a Pod")
        meta = dict(body.get("metadata") or {})
        name = meta.get("name") or (meta.get("generateName", "") + uuid.uuid4().hex[:5] if meta.get("generateName")
                                    else "")
        spec = copy.deepcopy(body.get("spec") or {})
        problems = []
        if not name or not NAME.match(name) or len(name) > 253:
            problems.append(f"metadata.name: Invalid value: {name!r}")
        containers = spec.get("containers") or []
        if not containers:
            problems.append("spec.containers: Required value")
        for index, container in enumerate(containers):
            if not container.get("name") or not container.get("image"):
                problems.append(f"spec.containers[{index}]: name and image are required")
        if problems:
            raise ApiError(422, "Invalid", f'Pod "{name}" is invalid: {"; ".join(problems)}', name=name, kind="Pod")
        for container in containers:
            container.setdefault("imagePullPolicy", "Always" if container["image"].endswith(":latest")
                                 or ":" not in container["image"].rsplit("/", 1)[-1] else "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        with self.lock:
            if (namespace, name) in self.pods:
                raise ApiError(409, "AlreadyExists", f'pods "{name}" already exists', name=name, kind="pods")
            metadata = {k: v for k, v in meta.items() if k in ("labels", "annotations", "generateName")}
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**self.metadata(name, namespace), **metadata},
                   "spec": spec, "status": {"phase": "Pending", "qosClass": "BestEffort", "conditions": []}}
            self.pods[(namespace, name)] = pod
            return copy.deepcopy(pod)

    def register_node(self, body: Any, *, taken: set[str]) -> dict[str, Any]:
        """A Node registered through the API (names in `taken` belong to the local cloud's own nodes)."""
        if not isinstance(body, dict) or body.get("kind", "Node") != "Node":
            raise ApiError(400, "BadRequest", "the body must be a Node")
        meta = body.get("metadata") or {}
        name = checked_name("Node", meta.get("name") or "")
        with self.lock:
            if name in self.nodes or name in taken:
                raise ApiError(409, "AlreadyExists", f'nodes "{name}" already exists', name=name, kind="nodes")
            node = {"apiVersion": "v1", "kind": "Node", "metadata": {**self.metadata(name, None), **_extra(meta)},
                    "spec": copy.deepcopy(body.get("spec") or {}), "status": copy.deepcopy(body.get("status") or {})}
            self.nodes[name] = node
            return copy.deepcopy(node)

    def replace_pod_status(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        """PUT pods/{name}/status: the status as sent, spec and metadata untouched (as the kubelet's writes)."""
        if not isinstance(body, dict) or not isinstance(body.get("status"), dict):
            raise ApiError(400, "BadRequest", "the body must be a Pod with a status")
        with self.lock:
            pod = self.pods.get((namespace, name))
            if pod is None:
                raise ApiError(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if sent and sent != pod["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on pods "{name}": the object has '
                               "been modified; please apply your changes to the latest version and try again",
                               name=name, kind="pods")
            pod["status"] = copy.deepcopy(body["status"])
            self.touch(pod)
            return copy.deepcopy(pod)

    def create_event(self, namespace: str, body: Any) -> dict[str, Any]:
        """An event as a kubelet posts it (core/v1): named by its reporter, about an object of this namespace."""
        if not isinstance(body, dict) or not isinstance(body.get("involvedObject"), dict):
            raise ApiError(422, "Invalid", "Event is invalid: involvedObject: Required value", kind="Event")
        meta = body.get("metadata") or {}
        name = checked_name("Event", meta.get("name") or "")
        if {meta.get("namespace", namespace), body["involvedObject"].get("namespace", namespace)} != {namespace}:
            raise ApiError(422, "Invalid", f'Event "{name}" is invalid: does not match the namespace of the request',
                           name=name, kind="Event")
        with self.lock:
            if any(e["metadata"]["namespace"] == namespace and e["metadata"]["name"] == name for e in self.events):
                raise ApiError(409, "AlreadyExists", f'events "{name}" already exists', name=name, kind="events")
            event = {**copy.deepcopy(body), "apiVersion": "v1", "kind": "Event",
                     "metadata": {**self.metadata(name, namespace), **_extra(meta)}}
            self.events.append(event)
            return copy.deepcopy(event)

    def list_pods(self, namespace: str | None, labels: str | None, fields: str | None) -> list[dict[str, Any]]:
        with self.lock:
            items = [copy.deepcopy(p) for (ns, _), p in self.pods.items() if namespace in (None, ns)]
        return [p for p in items if matches_labels(p["metadata"].get("labels") or {}, labels)
                and matches_fields(p, fields)]

    def list_events(self, namespace: str | None, labels: str | None, fields: str | None) -> list[dict[str, Any]]:
        with self.lock:
            items = [copy.deepcopy(e) for e in self.events if namespace in (None, e["metadata"]["namespace"])]
        return [e for e in items if matches_fields(e, fields)
                and matches_labels(e["metadata"].get("labels") or {}, labels)]

    def event(self, pod: dict[str, Any], reason: str, message: str, *, kind: str = "Normal",
              component: str = "kubelet", host: str | None = None, field_path: str | None = None,
              moment: datetime | None = None) -> dict[str, Any]:
        """A core/v1 Event about a pod, timestamped now (eventTime in microseconds)."""
        moment = moment or now()
        meta = pod["metadata"]
        involved = {"apiVersion": "v1", "kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                    "uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}
        if field_path:
            involved["fieldPath"] = field_path
        source = {"component": component, **({"host": host} if host else {})}
        with self.lock:
            event = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": self.metadata(f"{meta['name']}.{uuid.uuid4().hex[:16]}", meta["namespace"]),
                "involvedObject": involved, "reason": reason, "message": message, "source": source,
                "firstTimestamp": rfc3339(moment), "lastTimestamp": rfc3339(moment), "count": 1, "type": kind,
                "eventTime": micro_time(moment), "reportingComponent": component,
                "reportingInstance": host or "", "action": reason,
            }
            self.events.append(event)
            return event


# --- selectors ----------------------------------------------------------------------------------

def matches_labels(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selectors: k=v, k==v, k!=v, k, !k (comma-separated, all must hold)."""
    for term in filter(None, (part.strip() for part in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def matches_fields(obj: dict[str, Any], selector: str | None) -> bool:
    """Field selectors on dotted paths (spec.nodeName=…, involvedObject.name=…, status.phase!=…)."""
    for term in filter(None, (part.strip() for part in (selector or "").split(","))):
        negate = "!=" in term
        path, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        found: Any = obj
        for key in path.strip().split("."):
            found = found.get(key) if isinstance(found, dict) else None
        equal = str(found if found is not None else "") == value.strip()
        if equal == negate:
            return False
    return True
