"""The node and namespace caches (webhook/kube/informer.py) against a test double of the Kubernetes API.

There is no kube-apiserver on this machine, so the shared fake API server (tests/fakeapi.py) stands in for
one: a real HTTPS server on 127.0.0.1 serving ``/api/v1/nodes`` and ``/api/v1/namespaces`` the way
kube-apiserver does: lists paged by ``limit``/``continue`` from one snapshot, and ``?watch=1`` streams
(ADDED / MODIFIED / DELETED / BOOKMARK, and ERROR 410 when the requested resourceVersion is compacted away).
The cache reaches it through a generated kubeconfig, so the real ``kubernetes`` client code (configuration,
TLS, REST, ``watch.Watch``) runs. Every wait is a bounded poll on a condition; each test finishes in seconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, free_port
from fakeapi import FakeKubeAPI as FakeApi
from fakeapi import namespace, node

from webhook.engine.decide import evaluate
from webhook.engine.placement import classify, classify_records, node_from_api
from webhook.engine.policy import load_policies
from webhook.engine.target import Context
from webhook.kube.informer import CacheConfigError, ClusterCache, node_record

POLICIES = load_policies(REPO / "policies")
TEAM = "spreadguard.io/team"
FAST = {
    "min_rebuild_seconds": 0.05,
    "backoff_base": 0.05,
    "backoff_cap": 0.4,
    "watch_seconds": 5,
    "request_timeout": (2.0, 5.0),
}


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


def kubeconfig(tmp_path: Path, port: int) -> str:
    return str(FakeApi().kubeconfig(tmp_path / "kubeconfig", port))


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
    lists = fake.calls("nodes", "list")
    assert [q.get("limit") for q in lists] == ["500"] * 3
    assert [q.get("continue") for q in lists][0] is None and all(q.get("continue") for q in lists[1:])
    watch = wait_for(lambda: next(iter(fake.calls("nodes", "watch")), None), "a watch")
    assert watch["allowWatchBookmarks"] == "true" and int(watch["timeoutSeconds"]) <= FAST["watch_seconds"]
    assert int(watch["resourceVersion"]) >= 2200
    # the compact classes are exactly what placement.classify makes of the same nodes
    nodes = fake.items("v1", "nodes", None)
    assert set(view.classes) == set(classify(node_from_api(n) for n in nodes))
    status = cache.status()
    json.dumps(status)
    assert status["synced"] and status["nodes"] == 1201 and status["namespaces"] == 3
    assert status["nodeClasses"] == 3 and status["lastSync"] and status["watchRestarts"] == 0
    assert status["resources"]["nodes"]["pages"] == 3 and status["lastError"] is None


def two_nodes_watched(fake: FakeApi, caches: list[ClusterCache], tmp_path: Path) -> ClusterCache:
    """A cache synced on nodes n1, n2 and namespace ml, with both its watches open."""
    fake.put("nodes", node("n1"))
    fake.put("nodes", node("n2"))
    fake.put("namespaces", namespace("ml"))
    fake.serve()
    cache = synced(make_cache(caches, tmp_path, fake.port).start())
    wait_for(lambda: fake.open_watches == 2, "both watches open")
    return cache


def test_watch_events_update_the_view(fake: FakeApi, caches: list, tmp_path: Path) -> None:
    cache = two_nodes_watched(fake, caches, tmp_path)
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
    cache = two_nodes_watched(fake, caches, tmp_path)
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
        assert error.startswith(f"{resource}: cannot reach the API server at https://127.0.0.1:{port}: Failed to ")
        assert "Connection refused" in error and "HTTPSConnection" not in error
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
    assert cache is not None and cache.host == "https://127.0.0.1:6443" and not cache.view().synced
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
