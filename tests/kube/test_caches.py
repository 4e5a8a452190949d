"""The node and namespace caches (webhook/caches.py) against a test double of the Kubernetes API.

There is no kube-apiserver on this machine, so ``FakeApi`` stands in for one: a real HTTP server on
127.0.0.1 (``http.server.ThreadingHTTPServer``) serving ``GET /api/v1/nodes`` and ``/api/v1/namespaces``
the way kube-apiserver does: lists paged by ``limit``/``continue`` from one snapshot, and ``?watch=1``
streams (chunked JSON lines: ADDED / MODIFIED / DELETED / BOOKMARK, and ERROR 410 when the requested
resourceVersion is compacted away). The cache reaches it through a generated kubeconfig, so the real
``kubernetes`` client code (configuration, REST, ``watch.Watch``) runs. Every wait is a bounded poll on a
condition; each test finishes in a few seconds.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import REPO, free_port

from webhook.engine.decide import evaluate
from webhook.engine.placement import classify, classify_records, node_from_api
from webhook.engine.policy import load_policies
from webhook.engine.target import Context
from webhook.kube.informer import CacheConfigError, ClusterCache, node_record

POLICIES = load_policies(REPO / "policies")
TEAM = "spreadguard.io/team"
TOKEN = "test-token"
FAST = {
    "min_rebuild_seconds": 0.05,
    "backoff_base": 0.05,
    "backoff_cap": 0.4,
    "watch_seconds": 5,
    "request_timeout": (2.0, 5.0),
}


# ---------------------------------------------------------------------------------------------- the API double


class FakeApi:
    """Nodes and namespaces with resourceVersions, an event log, list snapshots and open watches."""

    RESOURCES = ("nodes", "namespaces")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.objects: dict[str, dict[str, dict]] = {r: {} for r in self.RESOURCES}
        self.log: list[tuple[int, str, str, dict]] = []  # (resourceVersion, resource, type, object)
        self.rv = 1000
        self.compacted = 0  # a watch from a resourceVersion below this gets ERROR 410
        self.epoch = 0  # bumped by expire(): open watches send ERROR 410 and end
        self.snapshots: dict[int, tuple[int, list[dict]]] = {}
        self.calls: list[tuple[str, str, dict[str, str]]] = []  # (resource, "list" | "watch", query)
        self.open_watches = 0
        self.down = True
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()

    # ---- state changes, as the cluster would make them

    def put(self, resource: str, obj: dict, silent: bool = False) -> None:
        """Create or replace ``obj``; ``silent``: no watch event (it happened during a compacted gap)."""
        with self.cond:
            self.rv += 1
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = str(self.rv)
            name = obj["metadata"]["name"]
            kind = "MODIFIED" if name in self.objects[resource] else "ADDED"
            self.objects[resource][name] = obj
            if not silent:
                self.log.append((self.rv, resource, kind, obj))
            self.cond.notify_all()

    def delete(self, resource: str, name: str, silent: bool = False) -> None:
        with self.cond:
            self.rv += 1
            obj = self.objects[resource].pop(name)
            if not silent:
                self.log.append(
                    (
                        self.rv,
                        resource,
                        "DELETED",
                        {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}},
                    )
                )
            self.cond.notify_all()

    def bookmark(self) -> int:
        with self.cond:
            self.rv += 1
            for r in self.RESOURCES:
                self.log.append(
                    (
                        self.rv,
                        r,
                        "BOOKMARK",
                        {
                            "kind": "Node" if r == "nodes" else "Namespace",
                            "metadata": {"resourceVersion": str(self.rv)},
                        },
                    )
                )
            self.cond.notify_all()
            return self.rv

    def expire(self) -> None:
        """etcd compaction: every resourceVersion so far is gone; open watches get ERROR 410."""
        with self.cond:
            self.compacted = self.rv
            self.epoch += 1
            self.cond.notify_all()

    def count(self, resource: str, verb: str) -> int:
        with self.cond:
            return sum(1 for r, v, _ in self.calls if r == resource and v == verb)

    # ---- serving

    def serve(self, port: int = 0) -> FakeApi:
        fake = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away mid-stream (stop(), tests cutting connections)

        class Handler(_Handler):
            api = fake

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked watch streams, like the API server
    api: FakeApi

    def setup(self) -> None:
        super().setup()
        self.api._sockets.add(self.connection)

    def finish(self) -> None:
        self.api._sockets.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> dict:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        resource = url.path.removeprefix("/api/v1/")
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._json(401, self._status(401, "Unauthorized", "Unauthorized"))
        if resource not in FakeApi.RESOURCES:
            return self._json(404, self._status(404, "NotFound", f"{url.path} not found"))
        watching = query.get("watch", "").lower() in ("1", "true")
        with self.api.cond:
            self.api.calls.append((resource, "watch" if watching else "list", query))
        if watching:
            return self._watch(resource, query)
        return self._list(resource, query)

    def _list(self, resource: str, query: dict[str, str]) -> None:
        api = self.api
        limit = int(query.get("limit") or 0)
        with api.cond:
            token = query.get("continue")
            if token:
                snap_id, offset = (int(x) for x in token.split(":"))
                if snap_id not in api.snapshots:
                    return self._json(410, self._status(410, "Expired", "the continue token has expired"))
                rv, items = api.snapshots[snap_id]
            else:
                rv, offset = api.rv, 0
                items = [api.objects[resource][k] for k in sorted(api.objects[resource])]
                snap_id = len(api.snapshots) + 1
                api.snapshots[snap_id] = (rv, items)
        end = offset + limit if limit else len(items)
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if end < len(items):
            meta["continue"] = f"{snap_id}:{end}"
        kind = "NodeList" if resource == "nodes" else "NamespaceList"
        self._json(200, {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": items[offset:end]})

    def _chunk(self, event: dict) -> None:
        data = (json.dumps(event) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _watch(self, resource: str, query: dict[str, str]) -> None:
        api = self.api
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + min(float(query.get("timeoutSeconds") or 30), 30)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        gone = self._status(410, "Expired", f"too old resource version: {since}")
        with api.cond:
            api.open_watches += 1
            epoch = api.epoch
        try:
            if since < api.compacted:
                self._chunk({"type": "ERROR", "object": gone})
            else:
                while True:
                    with api.cond:
                        pending = [e for e in api.log if e[0] > since and e[1] == resource]
                        left = deadline - time.monotonic()
                        if not pending and api.epoch == epoch and not api.down and left > 0:
                            api.cond.wait(min(left, 0.05))
                            if self._client_gone():
                                raise ConnectionResetError("the client closed the watch")
                            continue
                        expired, down = api.epoch != epoch, api.down
                    for rv, _, kind, obj in pending:
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


# -------------------------------------------------------------------------------------------------- helpers


def wait_for(check: Callable[[], Any], what: str, timeout: float = 6.0) -> Any:
    """Poll ``check`` until it is truthy (and return it); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(0.01)


def node(
    name: str,
    pool: str = "h100",
    team: str | None = "vision",
    gpus: int = 8,
    unschedulable: bool = False,
    heartbeat: str = "2025-01-01T00:00:00Z",
    **labels: str,
) -> dict:
    taints = [{"key": TEAM, "value": team, "effect": "NoSchedule"}] if team else []
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "pool": pool, "topology.kubernetes.io/zone": "z1", **labels},
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


def kubeconfig(tmp_path: Path, port: int) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "test", "user": {"token": TOKEN}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "test"}}],
            }
        )
    )
    return str(path)


def pytorchjob(replicas: int) -> dict:
    gpu8 = [{"name": "t", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 8}}}]
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "big", "namespace": "ml"},
        "spec": {
            "elasticPolicy": {"minReplicas": 1, "maxReplicas": replicas},  # elastic workers spread; a gang would not
            "pytorchReplicaSpecs": {"Worker": {"replicas": replicas, "template": {"spec": {"containers": gpu8}}}},
        },
    }


def worker_anti(decision: Any) -> dict:
    return decision.mutated["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["affinity"]["podAntiAffinity"]


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    api = FakeApi()
    yield api
    api.stop_serving()


@pytest.fixture
def caches() -> Iterator[list[ClusterCache]]:
    """Caches made by a test; stopped at the end whatever happened."""
    made: list[ClusterCache] = []
    yield made
    for c in made:
        c.stop(timeout=3)


def make_cache(caches: list[ClusterCache], tmp_path: Path, port: int, **options: Any) -> ClusterCache:
    cache = ClusterCache.from_environment(kubeconfig=kubeconfig(tmp_path, port), **{**FAST, **options})
    assert cache is not None
    caches.append(cache)
    return cache


def synced(cache: ClusterCache) -> ClusterCache:
    wait_for(lambda: cache.view().synced, "the cache to sync")
    return cache


def populate(api: FakeApi) -> None:
    for i in range(600):
        api.put("nodes", node(f"h100-{i:04d}", pool="h100"))
    for i in range(500):
        api.put("nodes", node(f"a100-{i:04d}", pool="a100", team="nlp"))
    for i in range(100):
        api.put("nodes", node(f"cpu-{i:04d}", pool="cpu", team=None, gpus=0))
    api.put("nodes", node("h100-cordoned", pool="h100", unschedulable=True))
    api.put("namespaces", namespace("ml", **{TEAM: "vision"}))
    api.put("namespaces", namespace("nlp", **{TEAM: "nlp", "spreadguard.io/mode": "warn"}))
    api.put("namespaces", namespace("default"))


# ---------------------------------------------------------------------------------------------------- tests


def test_initial_list_pages_through_the_nodes(fake: FakeApi, caches: list, tmp_path: Path) -> None:
    populate(fake)
    fake.serve()
    cache = synced(make_cache(caches, tmp_path, fake.port).start())
    view = cache.view()
    assert view.node_count == 1200  # the cordoned node is not schedulable
    teams = [{k: v for k, v, _ in c.taints}.get(TEAM, "") for c in view.classes]
    assert sorted((dict(c.labels)["pool"], team, c.count) for c, team in zip(view.classes, teams, strict=True)) == [
        ("a100", "nlp", 500),
        ("cpu", "", 100),
        ("h100", "vision", 600),
    ]
    assert view.namespaces["ml"][TEAM] == "vision" and view.namespaces["nlp"]["spreadguard.io/mode"] == "warn"
    # 1201 nodes in pages of 500, each continued from the previous page; then a watch from the list's version
    lists = [q for r, v, q in fake.calls if r == "nodes" and v == "list"]
    assert [q.get("limit") for q in lists] == ["500"] * 3
    assert [q.get("continue") for q in lists][0] is None and all(q.get("continue") for q in lists[1:])
    watch = wait_for(lambda: next((q for r, v, q in fake.calls if r == "nodes" and v == "watch"), None), "a watch")
    assert watch["allowWatchBookmarks"] == "true" and int(watch["timeoutSeconds"]) <= FAST["watch_seconds"]
    assert int(watch["resourceVersion"]) >= 2200
    # the compact classes are exactly what placement.classify makes of the same nodes
    nodes = list(fake.objects["nodes"].values())
    assert set(view.classes) == set(classify(node_from_api(n) for n in nodes))
    status = cache.status()
    json.dumps(status)
    assert status["synced"] and status["nodes"] == 1201 and status["namespaces"] == 3
    assert status["nodeClasses"] == 3 and status["lastSync"] and status["watchRestarts"] == 0
    assert status["resources"]["nodes"]["pages"] == 3 and status["lastError"] is None


def test_watch_events_update_the_view(fake: FakeApi, caches: list, tmp_path: Path) -> None:
    fake.put("nodes", node("n1"))
    fake.put("nodes", node("n2"))
    fake.put("namespaces", namespace("ml"))
    fake.serve()
    cache = synced(make_cache(caches, tmp_path, fake.port).start())
    wait_for(lambda: fake.open_watches == 2, "both watches open")
    assert cache.view().node_count == 2

    fake.put("nodes", node("n3"))  # ADDED
    wait_for(lambda: cache.view().node_count == 3, "the added node")
    fake.put("nodes", node("n3", pool="a100"))  # MODIFIED: a watched label
    wait_for(lambda: len(cache.view().classes) == 2, "n3 in a class of its own")
    fake.put("nodes", node("n1", unschedulable=True))  # MODIFIED: cordoned
    wait_for(lambda: cache.view().node_count == 2, "the cordoned node left out")
    fake.put("nodes", node("n2", gpus=4))  # MODIFIED: allocatable GPUs
    wait_for(lambda: ("nvidia.com/gpu", 4) in {g for c in cache.view().classes for g in c.gpus}, "4 GPUs")
    fake.delete("nodes", "n3")  # DELETED
    wait_for(lambda: cache.view().node_count == 1, "the deleted node gone")
    assert [c.hostnames for c in cache.view().classes] == [("n2",)]

    fake.put("namespaces", namespace("ml", **{TEAM: "speech"}))  # MODIFIED labels
    wait_for(lambda: cache.view().namespaces.get("ml", {}).get(TEAM) == "speech", "the namespace's team")
    fake.put("namespaces", namespace("vision", **{TEAM: "vision"}))  # ADDED
    wait_for(lambda: "vision" in cache.view().namespaces, "the new namespace")
    fake.delete("namespaces", "ml")  # DELETED
    wait_for(lambda: "ml" not in cache.view().namespaces, "the deleted namespace gone")

    rv = fake.bookmark()  # BOOKMARK: only the resourceVersion moves
    wait_for(lambda: cache.status()["resources"]["nodes"]["resourceVersion"] == str(rv), "the bookmark's version")
    assert cache.status()["watchRestarts"] == 0 and fake.count("nodes", "list") == 1


def test_status_heartbeat_does_not_rebuild(fake: FakeApi, caches: list, tmp_path: Path) -> None:
    for i in range(50):
        fake.put("nodes", node(f"n{i}"))
    fake.serve()
    cache = synced(make_cache(caches, tmp_path, fake.port).start())
    wait_for(lambda: fake.open_watches == 2, "both watches open")
    wait_for(lambda: cache.rebuilds and not cache._dirty, "the first view built")
    rebuilds, generation, view = cache.rebuilds, cache.generation, cache.view()

    for i in range(50):  # every node reports its status: new resourceVersion, new heartbeat, same fields
        fake.put("nodes", node(f"n{i}", heartbeat="2025-01-01T00:05:00Z"))
    wait_for(lambda: cache.status()["resources"]["nodes"]["unchangedEvents"] == 50, "50 heartbeats seen")
    ticks = cache.ticks
    wait_for(lambda: cache.ticks >= ticks + 2, "two more turns of the publisher")
    assert (cache.rebuilds, cache.generation) == (rebuilds, generation)
    assert cache.view() is view  # not even a new snapshot object
    assert cache.status()["resources"]["nodes"]["resourceVersion"] == str(fake.rv)  # but the version moved on

    fake.put("nodes", node("n0", heartbeat="2025-01-01T00:10:00Z", rack="r7"))  # a real change still lands
    wait_for(lambda: cache.rebuilds == rebuilds + 1, "one rebuild")
    assert cache.generation == generation + 1


def test_bursts_of_changes_are_coalesced(fake: FakeApi, caches: list, tmp_path: Path) -> None:
    for i in range(20):
        fake.put("nodes", node(f"n{i}"))
    fake.serve()
    cache = synced(make_cache(caches, tmp_path, fake.port, min_rebuild_seconds=0.5).start())
    wait_for(lambda: fake.open_watches == 2, "both watches open")
    wait_for(lambda: cache.rebuilds and not cache._dirty, "the first view built")
    rebuilds = cache.rebuilds
    for round_ in range(10):  # 200 label changes in a burst
        for i in range(20):
            fake.put("nodes", node(f"n{i}", rack=f"r{round_}"))
    wait_for(lambda: {dict(c.labels).get("rack") for c in cache.view().classes} == {"r9"}, "the last labels")
    assert cache.status()["resources"]["nodes"]["events"] >= 200
    assert cache.rebuilds - rebuilds <= 6, cache.rebuilds - rebuilds


def test_watch_error_410_relists(fake: FakeApi, caches: list, tmp_path: Path) -> None:
    fake.put("nodes", node("n1"))
    fake.put("nodes", node("n2"))
    fake.put("namespaces", namespace("ml"))
    fake.serve()
    cache = synced(make_cache(caches, tmp_path, fake.port).start())
    wait_for(lambda: fake.open_watches == 2, "both watches open")
    assert (fake.count("nodes", "list"), fake.count("namespaces", "list")) == (1, 1)

    # changes the watch never delivers (compacted away), then the ERROR 410 on the open watches
    fake.put("nodes", node("late"), silent=True)
    fake.delete("nodes", "n1", silent=True)
    fake.put("namespaces", namespace("ml", **{TEAM: "vision"}), silent=True)
    fake.expire()
    wait_for(lambda: fake.count("nodes", "list") == 2 and fake.count("namespaces", "list") == 2, "relists")
    wait_for(lambda: sorted(h for c in cache.view().classes for h in c.hostnames) == ["late", "n2"], "the relist")
    wait_for(lambda: cache.view().namespaces["ml"].get(TEAM) == "vision", "the relisted namespace")
    status = cache.status()
    assert status["synced"] and status["lastError"] is None  # a 410 is routine, not an API failure
    assert status["resources"]["nodes"]["gone"] == 1 and status["watchRestarts"] == 2
    wait_for(lambda: fake.open_watches == 2, "watching again")  # from the relist's version: no 410 loop
    fake.put("nodes", node("after"))
    wait_for(lambda: cache.view().node_count == 3, "events after the relist")
    assert fake.count("nodes", "list") == 2


def test_api_down_at_start_means_spec_only_then_synced(fake: FakeApi, caches: list, tmp_path: Path) -> None:
    port = free_port()
    cache = make_cache(caches, tmp_path, port).start()  # nothing listens on the port yet
    view = wait_for(lambda: cache.view().error.count("cannot reach") == 2 and cache.view(), "both connection errors")
    assert not view.synced and view.node_count == 0
    nodes_error, namespaces_error = view.error.split("; ")
    for resource, error in (("nodes", nodes_error), ("namespaces", namespaces_error)):
        assert error.startswith(f"{resource}: cannot reach the API server at http://127.0.0.1:{port}: Failed to ")
        assert "Connection refused" in error and "HTTPConnection" not in error
    d = evaluate(pytorchjob(16), Context(namespace="ml", cluster=cache.view()), POLICIES)
    assert any(
        i.startswith("cluster view not synced (nodes: cannot reach the API server")
        and i.endswith("): decided from the spec alone")
        for i in d.info
    ), d.info
    assert list(worker_anti(d)) == ["requiredDuringSchedulingIgnoredDuringExecution"]  # spec-only
    assert not cache.status()["synced"] and "Connection refused" in cache.status()["lastError"]

    for i in range(4):  # the API comes up: 4 vision nodes, namespace ml belongs to team vision
        fake.put("nodes", node(f"v{i}"))
    fake.put("namespaces", namespace("ml", **{TEAM: "vision"}))
    fake.serve(port)
    synced(cache)
    assert cache.view().error == "" and cache.view().node_count == 4
    d = evaluate(pytorchjob(16), Context(namespace="ml", cluster=cache.view()), POLICIES)
    assert not any("cluster view not synced" in i for i in d.info)
    assert list(worker_anti(d)) == ["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any("16 replicas need 16 nodes; team vision has 4 eligible nodes" in n for n in d.notes), d.notes


def test_api_lost_after_sync_keeps_the_last_view_for_a_grace_period(
    fake: FakeApi, caches: list, tmp_path: Path
) -> None:
    fake.put("nodes", node("n1"))
    fake.put("namespaces", namespace("ml", **{TEAM: "vision"}))
    fake.serve()
    port = fake.port
    cache = synced(make_cache(caches, tmp_path, port, stale_after=1.0).start())
    wait_for(lambda: fake.open_watches == 2, "both watches open")
    down = time.monotonic()  # before: the cache may notice while the server is still shutting down
    fake.stop_serving()
    wait_for(lambda: cache.status()["lastError"], "the watch to notice")
    view = wait_for(lambda: not cache.view().synced and cache.view(), "the view to go stale")
    assert time.monotonic() - down >= 1.0  # not before the grace period
    assert "no answer from the API server for" in view.error and "cannot reach" in view.error
    assert view.node_count == 1 and view.namespaces["ml"][TEAM] == "vision"  # the last good data, kept
    d = evaluate(pytorchjob(16), Context(namespace="ml", cluster=view), POLICIES)
    assert any("cluster view not synced (nodes: no answer from the API server" in i for i in d.info), d.info

    fake.serve(port)  # back
    synced(cache)
    assert cache.view().error == "" and cache.status()["watchRestarts"] >= 2


def test_resync_relists_without_rebuilding_unchanged_data(fake: FakeApi, caches: list, tmp_path: Path) -> None:
    fake.put("nodes", node("n1"))
    fake.put("namespaces", namespace("ml"))
    fake.serve()
    cache = synced(make_cache(caches, tmp_path, fake.port, resync_seconds=0.3).start())
    wait_for(lambda: cache.rebuilds and not cache._dirty, "the first view built")
    rebuilds = cache.rebuilds
    wait_for(lambda: fake.count("nodes", "list") >= 3 and fake.count("namespaces", "list") >= 3, "resyncs")
    assert cache.rebuilds == rebuilds and cache.view().synced
    fake.put("nodes", node("n2"), silent=True)  # missed by the watch: the next resync finds it
    wait_for(lambda: cache.view().node_count == 2, "the resync to find n2")


def test_start_is_idempotent_and_stop_ends_the_threads(fake: FakeApi, caches: list, tmp_path: Path) -> None:
    fake.put("nodes", node("n1"))
    fake.serve()
    cache = make_cache(caches, tmp_path, fake.port, watch_seconds=30)
    assert cache.view().error == "cluster cache not started" and not cache.running
    starters = [threading.Thread(target=cache.start) for _ in range(8)]  # lazily, from request threads
    for t in starters:
        t.start()
    for t in starters:
        t.join(5)
    synced(cache)
    ours = [t for t in threading.enumerate() if t.name.startswith("spreadguard-cache-")]
    assert sorted(t.name for t in ours) == [
        "spreadguard-cache-namespaces",
        "spreadguard-cache-nodes",
        "spreadguard-cache-view",
    ]
    wait_for(lambda: fake.open_watches == 2, "both watches open (blocked reads)")
    began = time.monotonic()
    assert cache.stop(timeout=3)
    assert time.monotonic() - began < 3 and not any(t.is_alive() for t in ours) and not cache.running
    wait_for(lambda: fake.open_watches == 0, "the watch connections closed")


def test_start_in_a_forked_worker_begins_afresh(fake: FakeApi, caches: list, tmp_path: Path) -> None:
    fake.put("nodes", node("n1"))
    fake.serve()
    cache = synced(make_cache(caches, tmp_path, fake.port).start())
    assert cache.stop(timeout=3)
    cache._pid = -1  # as if start() had run in the gunicorn master and this were a forked worker
    fake.put("nodes", node("n2"), silent=True)
    cache.start()  # the parent's nodes, version and connections are dropped: a fresh list
    synced(cache)
    assert cache.view().node_count == 2 and fake.count("nodes", "list") == 2


def test_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # even with a ~/.kube/config: not used implicitly
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(Path(kubeconfig(tmp_path, 1)).read_text())
    assert ClusterCache.from_environment() is None
    monkeypatch.setenv("KUBECONFIG", kubeconfig(tmp_path, 6443))
    cache = ClusterCache.from_environment()
    assert cache is not None and cache.host == "http://127.0.0.1:6443" and not cache.view().synced
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert ClusterCache.from_environment() is None  # from the environment: warn, run spec-only
    with pytest.raises(CacheConfigError, match="missing"):
        ClusterCache.from_environment(kubeconfig=str(tmp_path / "missing"))  # asked for: an error
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # a pod without a service account token
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert ClusterCache.from_environment() is None


def test_compact_records_share_pool_labels() -> None:
    from webhook.kube.informer import _Interner

    interner = _Interner()
    a = node_record(node("a", gpus=8), interner)
    b = node_record(node("b", gpus=8), interner)
    assert a is not None and b is not None
    assert a[1][1] is b[1][1] and a[1][2] is b[1][2]  # one shared copy of the labels and taints tuples
    assert a[1][0] == "a" and dict(a[1][1])["pool"] == "h100" and dict(a[1][3]) == {"nvidia.com/gpu": 8}
    assert classify_records([a[1], b[1]]) == classify([node_from_api(node("a")), node_from_api(node("b"))])
