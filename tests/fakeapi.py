"""The one fake Kubernetes API server every test that needs a cluster shares.

It is a test double, used because there is no kube-apiserver on this machine (nor kind or k3s). It is a
real HTTPS server on 127.0.0.1 (``http.server`` in threads, TLS with a CA and certificate made by
``webhook.certs``) that answers the way kube-apiserver does for what spreadguard uses, so the real
``kubernetes`` client code runs on the other side (kubeconfig loading, TLS, bearer-token auth, request
building, watch streaming, error paths):

- discovery: ``/api``, ``/apis`` (``groups``) and ``/apis/<group>/<version>`` (``resources``; 404 otherwise);
- ``list`` of any stored resource, cluster-wide or per namespace, paged by ``limit``/``continue`` from one
  snapshot; items without ``kind``/``apiVersion`` as the API server sends them; ``410 Gone`` for a continue
  token whose snapshot ``expire()`` dropped;
- ``?watch=1`` streams (chunked JSON lines: ADDED / MODIFIED / DELETED / BOOKMARK, ``ERROR 410`` when the
  resourceVersion was compacted by ``expire()``);
- ``get`` / ``create`` (409 AlreadyExists) / ``update`` (409 on a stale resourceVersion) / ``patch`` (JSON
  patch, JSON merge, strategic merge with list merge keys) of single objects;
- ``metav1.Status`` bodies for errors: 401 without the token, 403 for ``forbidden`` (verb, plural) pairs and,
  when ``rbac`` is set, for what those roles do not allow (kube-apiserver's RBAC rule matching), 404;
  ``hang_up`` plurals whose requests get no answer at all; one-shot ``before`` hooks that run inside a request
  (another writer winning a race);
- ``stop_serving()`` / ``serve(port)``: the API server goes away (every connection cut) and comes back.

Every request is recorded (``requests``). Objects are keyed by (apiVersion, plural, namespace, name).
"""

from __future__ import annotations

import atexit
import base64
import copy
import functools
import json
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

TOKEN = "fake-api-token"
TEAM_TAINT = "spreadguard.io/team"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
CLUSTER_SCOPED = {
    "nodes",
    "namespaces",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
}


@dataclass(frozen=True)
class TLS:
    ca: Path
    cert: Path
    key: Path


@functools.cache
def tls() -> TLS:
    """A CA and a serving certificate for 127.0.0.1, made once per test process."""
    from webhook.certs import files as certs

    directory = Path(tempfile.mkdtemp(prefix="spreadguard-fakeapi-"))
    atexit.register(shutil.rmtree, directory, True)
    made = certs.ensure_certs(directory)
    return TLS(made.ca_path, made.cert_path, made.key_path)


def status(code: int, reason: str, message: str, name: str = "", kind: str = "") -> dict:
    """A ``metav1.Status`` as kube-apiserver sends it with an error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "kind": kind},
        "code": code,
    }


def strategic_merge(target: Any, patch: Any, list_keys: dict[str, str]) -> Any:
    """Strategic merge patch, enough for these objects: maps merge, ``null`` deletes, lists named in
    ``list_keys`` merge by that key (``webhooks`` by ``name``), other lists are replaced."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif key in list_keys and isinstance(value, list) and isinstance(out.get(key), list):
            merge_key = list_keys[key]
            items = out[key]
            for item in value:
                match = next((i for i, old in enumerate(items) if old.get(merge_key) == item.get(merge_key)), None)
                if match is None:
                    items.append(copy.deepcopy(item))
                else:
                    items[match] = strategic_merge(items[match], item, list_keys)
        else:
            out[key] = strategic_merge(out.get(key), value, list_keys) if isinstance(value, dict) else value
    return out


def rbac_allows(
    roles: list[tuple[str, list[dict]]], verb: str, group: str, plural: str, namespace: str, name: str
) -> bool:
    """Whether a rule of ``roles`` allows the request, matched as RBAC does (rbac/v1 PolicyRule): the verb, the
    API group and the resource listed (or ``*``), and ``resourceNames`` (when listed) naming the object; a
    ``create`` carries no name when it is authorized, so a rule with resourceNames never allows it. A Role's
    rules hold only in its namespace."""
    for role_namespace, rules in roles:
        if role_namespace and role_namespace != namespace:
            continue
        for rule in rules:
            if not {verb, "*"} & set(rule.get("verbs") or []):
                continue
            if not {group, "*"} & set(rule.get("apiGroups") or []):
                continue
            if not {plural, "*"} & set(rule.get("resources") or []):
                continue
            names = rule.get("resourceNames") or []
            if names and (verb == "create" or name not in names):
                continue
            return True
    return False


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]  # the last value of each parameter
    plural: str
    verb: str  # list | watch | get | create | update | patch | delete | discovery


class FakeKubeAPI:
    """The fake API server (see the module docstring). Thread-safe; ``serve()`` starts it."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.cond = threading.Condition(threading.RLock())
        self.objects: dict[tuple[str, str, str, str], dict] = {}  # (apiVersion, plural, namespace, name)
        self.log: list[tuple[int, str, str, str, dict]] = []  # (rv, apiVersion, plural, type, object)
        self.rv = 1000
        self.compacted = 0  # a watch from a resourceVersion below this gets ERROR 410
        self.epoch = 0  # bumped by expire(): open watches send ERROR 410 and end
        self.snapshots: dict[int, tuple[int, list[dict]]] = {}
        self.requests: list[Request] = []
        self.groups: dict[str, list[str]] = {}  # what /apis advertises: group -> versions
        self.resources: dict[str, list[str]] = {}  # what /apis/<group>/<version> lists: gv -> plurals
        self.forbidden: set[tuple[str, str]] = set()  # (verb, plural) this user may not do
        # (namespace, rules) of the roles bound to this user: "" for a ClusterRole (cluster-wide), else a Role's
        # namespace. None: everything is allowed but ``forbidden``.
        self.rbac: list[tuple[str, list[dict]]] | None = None
        self.hang_up: set[str] = set()  # plurals whose requests get no answer (the server is gone)
        self.before: dict[tuple[str, str], Callable[[FakeKubeAPI], dict | None]] = {}  # one-shot hooks
        self.open_watches = 0
        self.down = True
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()

    # ------------------------------------------------------------------ state, as the cluster would change it

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def put(self, plural: str, obj: dict, silent: bool = False) -> dict:
        """Create or replace ``obj`` (its ``apiVersion`` says where); ``silent``: no watch event (it happened in a
        gap the watch never delivers). Returns the stored copy (with resourceVersion and uid)."""
        with self.cond:
            self.rv += 1
            obj = json.loads(json.dumps(obj))
            meta = obj.setdefault("metadata", {})
            meta["resourceVersion"] = str(self.rv)
            meta.setdefault("uid", f"uid-{self.rv}")
            namespace = "" if plural in CLUSTER_SCOPED else meta.get("namespace", "")
            key = (obj.get("apiVersion", "v1"), plural, namespace, meta["name"])
            kind = "MODIFIED" if key in self.objects else "ADDED"
            self.objects[key] = obj
            if not silent:
                self.log.append((self.rv, key[0], plural, kind, obj))
            self.cond.notify_all()
            return copy.deepcopy(obj)

    def delete(self, plural: str, name: str, namespace: str = "", silent: bool = False) -> None:
        with self.cond:
            self.rv += 1
            key = next(k for k in self.objects if k[1:] == (plural, namespace, name))
            obj = self.objects.pop(key)
            if not silent:
                gone = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
                self.log.append((self.rv, key[0], plural, "DELETED", gone))
            self.cond.notify_all()

    def get(self, plural: str, name: str, namespace: str = "") -> dict | None:
        with self.cond:
            found = next((o for k, o in self.objects.items() if k[1:] == (plural, namespace, name)), None)
            return copy.deepcopy(found)

    def bookmark(self) -> int:
        """A BOOKMARK event on every watched plural: only the resourceVersion moves."""
        with self.cond:
            self.rv += 1
            for api_version, plural in {(k[0], k[1]) for k in self.objects}:
                self.log.append(
                    (self.rv, api_version, plural, "BOOKMARK", {"metadata": {"resourceVersion": str(self.rv)}})
                )
            self.cond.notify_all()
            return self.rv

    def expire(self) -> None:
        """etcd compaction: every resourceVersion so far is gone; open watches get ERROR 410 and continue
        tokens of earlier lists answer 410."""
        with self.cond:
            self.compacted = self.rv
            self.epoch += 1
            self.snapshots.clear()
            self.cond.notify_all()

    # --------------------------------------------------------------------------------- what was asked

    def calls(self, plural: str, verb: str) -> list[dict[str, str]]:
        """The query of every ``verb`` request on ``plural``, in order."""
        with self.cond:
            return [r.query for r in self.requests if r.plural == plural and r.verb == verb]

    def count(self, plural: str, verb: str) -> int:
        return len(self.calls(plural, verb))

    def pages(self, path_suffix: str) -> list[dict[str, str]]:
        """The query of every GET whose path ends with ``path_suffix``."""
        with self.cond:
            return [r.query for r in self.requests if r.method == "GET" and r.path.endswith(path_suffix)]

    def writes(self) -> list[tuple[str, str]]:
        with self.cond:
            return [(r.method, r.path) for r in self.requests if r.method in WRITES]

    # ------------------------------------------------------------------------------------------- serving

    def serve(self, port: int = 0) -> FakeKubeAPI:
        fake = self
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        files = tls()
        context.load_cert_chain(files.cert, files.key)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away mid-stream, or one that refused the certificate

        class Handler(_Handler):
            api = fake
            tls_context = context

        self._server = Server(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        with self.cond:
            self.down = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop_serving(self) -> None:
        """The API goes away: no listener, every open connection (watches, keep-alive) cut."""
        with self.cond:
            self.down = True
            self.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for s in list(self._sockets):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def kubeconfig(self, path: Path, port: int | None = None, token: str | None = None, namespace: str = "") -> Path:
        """A kubeconfig for this server (or for ``port`` before it serves): its CA, a bearer token."""
        context: dict[str, str] = {"cluster": "fake", "user": "test"}
        if namespace:
            context["namespace"] = namespace
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [
                {
                    "name": "fake",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port or self.port}",
                        "certificate-authority": str(tls().ca),
                    },
                }
            ],
            "users": [{"name": "test", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake", "context": context}],
        }
        path.write_text(yaml.safe_dump(cfg))
        return path

    # ------------------------------------------------------------------------------------------ answering

    def items(self, api_version: str, plural: str, namespace: str | None) -> list[dict]:
        with self.cond:
            return [
                o
                for (gv, p, ns, _), o in self.objects.items()
                if gv == api_version and p == plural and (namespace is None or ns == namespace)
            ]

    def discovery(self, path: str) -> tuple[int, dict] | None:
        if path == "/api":
            return 200, {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
            }
        if path == "/apis":
            groups = [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                }
                for g, vs in self.groups.items()
            ]
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "apis":
            gv = f"{parts[1]}/{parts[2]}"
            if gv not in self.resources:
                return 404, status(404, "NotFound", "the server could not find the requested resource")
            return 200, {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": gv,
                "resources": [
                    {
                        "name": r,
                        "singularName": r[:-1],
                        "namespaced": True,
                        "kind": r,
                        "verbs": ["get", "list", "watch"],
                    }
                    for r in self.resources[gv]
                ],
            }
        return None


def parse_path(path: str) -> tuple[str, str | None, str, str | None] | None:
    """(apiVersion, namespace or None, plural, name or None) of a resource path; None when it is not one."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"]:
        gv, rest = "v1", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    if len(rest) >= 3 and rest[0] == "namespaces":
        return gv, rest[1], rest[2], rest[3] if len(rest) > 3 else None
    if len(rest) in (1, 2):
        return gv, None, rest[0], rest[1] if len(rest) > 1 else None
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked watch streams, like the API server
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    api: FakeKubeAPI
    tls_context: ssl.SSLContext

    def setup(self) -> None:
        # the TLS handshake happens here, in the request's thread, not in the accepting one
        self.request = self.tls_context.wrap_socket(self.request, server_side=True)
        super().setup()
        self.api._sockets.add(self.connection)

    def finish(self) -> None:
        self.api._sockets.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        api = self.api
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"  # the client asks for /api/ and /apis/, as kubectl may
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        where = parse_path(path)
        plural = where[2] if where else ""
        if self.command == "GET":
            watching = query.get("watch", "").lower() in ("1", "true")
            verb = "discovery" if where is None else "watch" if watching else "get" if where[3] else "list"
        else:
            verb = VERBS.get(self.command, self.command.lower())
        with api.cond:
            api.requests.append(Request(self.command, path, query, plural, verb))
        if self.headers.get("Authorization") != f"Bearer {api.token}":
            return self._json(401, status(401, "Unauthorized", "Unauthorized"))
        if plural in api.hang_up:
            self.close_connection = True  # no answer at all
            return None
        if where is None:
            found = api.discovery(path)
            return self._json(*(found or (404, status(404, "NotFound", f"{path} not found"))))
        gv, namespace, plural, name = where
        hook = api.before.pop((verb, plural), None)
        if hook is not None:
            forced = hook(api)
            if forced is not None:
                return self._json(forced["code"], forced)
        group = gv.split("/")[0] if "/" in gv else ""
        if (verb, plural) in api.forbidden or (
            api.rbac is not None and not rbac_allows(api.rbac, verb, group, plural, namespace or "", name or "")
        ):
            scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            target = f'{plural} "{name}"' if name else plural
            return self._json(
                403,
                status(
                    403,
                    "Forbidden",
                    f'{target} is forbidden: User "test" cannot {verb} resource "{plural}" '
                    f'in API group "{group}"{scope}',
                    name or "",
                    plural,
                ),
            )
        if verb == "watch":
            return self._watch(gv, plural, namespace, query)
        if verb == "list":
            return self._list(gv, plural, namespace, query)
        with api.cond:
            code, answer = self._object(verb, gv, plural, namespace or "", name, body)
        return self._json(code, answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

    def _object(self, verb: str, gv: str, plural: str, namespace: str, name: str | None, body: Any) -> tuple[int, dict]:
        api = self.api
        if verb == "create":
            name = body["metadata"]["name"]
            if api.get(plural, name, namespace) is not None:
                return 409, status(409, "AlreadyExists", f'{plural} "{name}" already exists', name, plural)
            body["metadata"]["namespace"] = namespace
            body["metadata"].pop("resourceVersion", None)
            return 201, api.put(plural, {**body, "apiVersion": body.get("apiVersion", gv)})
        current = api.get(plural, name or "", namespace)
        if current is None:
            return 404, status(404, "NotFound", f'{plural} "{name}" not found', name or "", plural)
        if verb == "get":
            return 200, current
        if verb == "delete":
            api.delete(plural, current["metadata"]["name"], namespace)
            return 200, current
        conflict = status(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            name or "",
            plural,
        )
        if verb == "update":
            if (body.get("metadata") or {}).get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return 409, conflict
            body["metadata"]["uid"] = current["metadata"]["uid"]
            return 200, api.put(plural, body)
        if verb == "patch":
            import jsonpatch

            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("application/json-patch+json"):
                patched = jsonpatch.apply_patch(current, body)
            elif content_type.startswith("application/strategic-merge-patch+json"):
                patched = strategic_merge(current, body, {"webhooks": "name"})
            else:
                patched = strategic_merge(current, body, {})
            sent = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            if sent is not None and sent != current["metadata"]["resourceVersion"]:
                return 409, conflict
            return 200, api.put(plural, patched)
        return 405, status(405, "MethodNotAllowed", f"{self.command} is not supported here")

    def _list(self, gv: str, plural: str, namespace: str | None, query: dict[str, str]) -> None:
        api = self.api
        limit = int(query.get("limit") or 0)
        with api.cond:
            token = query.get("continue")
            if token:
                snap_id, offset = (int(x) for x in base64.b64decode(token).decode().split(":"))
                if snap_id not in api.snapshots:
                    return self._json(410, status(410, "Expired", "The provided continue parameter is too old"))
                rv, items = api.snapshots[snap_id]
            else:
                rv, offset = api.rv, 0
                items = api.items(gv, plural, namespace)
                snap_id = len(api.snapshots) + api.epoch * 1_000_000 + 1
                api.snapshots[snap_id] = (rv, items)
        end = offset + limit if limit else len(items)
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if end < len(items):
            meta["continue"] = base64.b64encode(f"{snap_id}:{end}".encode()).decode()
        page = []
        for item in items[offset:end]:  # list items carry no kind/apiVersion, as a real API server sends them
            item = copy.deepcopy(item)
            item.pop("kind", None)
            item.pop("apiVersion", None)
            page.append(item)
        self._json(200, {"kind": "List", "apiVersion": gv, "metadata": meta, "items": page})

    def _chunk(self, event: dict) -> None:
        data = (json.dumps(event) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _client_gone(self) -> bool:
        """The client sends nothing while it reads a watch: anything readable (close_notify, EOF) means it left."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable)

    def _watch(self, gv: str, plural: str, namespace: str | None, query: dict[str, str]) -> None:
        api = self.api
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + min(float(query.get("timeoutSeconds") or 30), 30)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        gone = status(410, "Expired", f"too old resource version: {since}")

        def wanted(event: tuple[int, str, str, str, dict]) -> bool:
            rv, event_gv, event_plural, _, obj = event
            ns = (obj.get("metadata") or {}).get("namespace", "")
            return rv > since and event_gv == gv and event_plural == plural and namespace in (None, ns)

        with api.cond:
            api.open_watches += 1
            epoch = api.epoch
        try:
            if since < api.compacted:
                self._chunk({"type": "ERROR", "object": gone})
            else:
                while True:
                    with api.cond:
                        pending = [e for e in api.log if wanted(e)]
                        left = deadline - time.monotonic()
                        if not pending and api.epoch == epoch and not api.down and left > 0:
                            api.cond.wait(min(left, 0.05))
                            if self._client_gone():
                                raise ConnectionResetError("the client closed the watch")
                            continue
                        expired, down = api.epoch != epoch, api.down
                    for rv, _, _, kind, obj in pending:
                        self._chunk({"type": kind, "object": obj})
                        since = rv
                    if expired:
                        self._chunk({"type": "ERROR", "object": gone})
                        break
                    if down:  # cut, no end of stream
                        self.close_connection = True
                        return
                    if time.monotonic() >= deadline:
                        break
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away (stop())
            self.close_connection = True
        finally:
            with api.cond:
                api.open_watches -= 1


# ------------------------------------------------------------------------------------ objects of a fake cluster


def node(
    name: str,
    pool: str = "h100",
    team: str | None = "vision",
    gpus: int = 8,
    unschedulable: bool = False,
    heartbeat: str = "2025-01-01T00:00:00Z",
    zone: str = "z1",
    taints: tuple[dict, ...] = (),
    **labels: str,
) -> dict:
    """A Node as the API server sends it: team taint (``team``), other ``taints``, zone and pool labels."""
    taints = ([{"key": TEAM_TAINT, "value": team, "effect": "NoSchedule"}] if team else []) + list(taints)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "pool": pool, "topology.kubernetes.io/zone": zone, **labels},
        },
        "spec": {"taints": taints, **({"unschedulable": True} if unschedulable else {})},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "96", "memory": "1Ti"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastHeartbeatTime": heartbeat,
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                }
            ],
            "nodeInfo": {"kubeletVersion": "v1.31.0"},
        },
    }


def namespace(name: str, **labels: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }
