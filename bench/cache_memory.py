#!/usr/bin/env python3
"""Memory and CPU of the cluster caches (webhook/caches.py) at 10,000 nodes and 5,000 namespaces.

    python bench/cache_memory.py [--nodes N] [--namespaces N] [--json]

No API server: realistic Node and Namespace objects are generated (30 labels, 2 taints, 8 allocatable GPUs,
conditions with heartbeats, addresses, nodeInfo, 40 images, managedFields: about 12 KB of JSON per Node)
and fed through the code the watch runs: each object is one JSON line, parsed by the client's own
``watch.Watch.unmarshal_event`` (what ``Watch.stream`` calls) and applied by ``ClusterCache._apply``; the
paginated initial list runs ``ClusterCache._list`` against an in-process lister that returns the pages
(500 objects each) as bytes, as the REST client does.

Two label sets: ``per-node topology label`` (each node also carries a unique
``cloud.google.com/gce-topology-host``, as GKE GPU nodes do: every node is then a class of its own) and
``pool-uniform`` (that label left out: nodes of a pool differ only by hostname and sub-block).

Reported, per label set:
- retained memory of the cache state (tracemalloc, after gc) and the RSS growth of this process;
- for comparison, the same nodes kept as one ``placement.NodeInfo`` each without interning;
- the transient peak while one list page is parsed;
- the time to rebuild the view (snapshot + node classes + ClusterView), and ``placement.classify`` over
  NodeInfo objects for reference;
- the cost of one status-heartbeat MODIFIED event (parse + compare, no rebuild) and the CPU share at
  10,000 nodes reporting every 5 minutes (kubelet default with node leases) and every 10 seconds;
- one ``eligible_nodes`` call (a pod tolerating its team, 8 GPUs) on the resulting view.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import client, watch  # noqa: E402

from webhook.engine.placement import classify, eligible_nodes, node_from_api  # noqa: E402
from webhook.kube.informer import ClusterCache  # noqa: E402

TEAMS = ("vision", "nlp", "speech", "rec", "infra", "research", "search", "ads")
POOL_SIZE = 250
MB = 1024 * 1024


def node(i: int, unique_topology: bool, heartbeat: str = "2025-01-01T00:00:00Z") -> dict:
    """Node number ``i``: pools of 250, blocks of 64, sub-blocks of 16, 1 % with a GPU health taint."""
    pool, team = i // POOL_SIZE, TEAMS[(i // POOL_SIZE) % len(TEAMS)]
    zone = f"us-central1-{'abc'[pool % 3]}"
    name = f"gke-gpu-{pool:02d}-{i:05d}"
    gpu = (
        ("NVIDIA-H100-80GB-HBM3", "nvidia-h100-80gb", "a3-highgpu-8g")
        if pool % 2
        else ("NVIDIA-A100-SXM4-80GB", "nvidia-a100-80gb", "a2-ultragpu-8g")
    )
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": gpu[2],
        "beta.kubernetes.io/instance-type": gpu[2],
        "topology.kubernetes.io/region": "us-central1",
        "topology.kubernetes.io/zone": zone,
        "failure-domain.beta.kubernetes.io/region": "us-central1",
        "failure-domain.beta.kubernetes.io/zone": zone,
        "topology.gke.io/zone": zone,
        "cloud.google.com/gke-nodepool": f"gpu-pool-{pool:02d}",
        "cloud.google.com/gke-accelerator": gpu[1],
        "cloud.google.com/gke-os-distribution": "cos",
        "cloud.google.com/machine-family": gpu[2].split("-")[0],
        "cloud.google.com/gke-gpu-driver-version": "latest",
        "cloud.google.com/gce-topology-block": f"block-{i // 64:04d}",
        "cloud.google.com/gce-topology-subblock": f"subblock-{i // 16:04d}",
        "nvidia.com/gpu.product": gpu[0],
        "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.memory": "81559",
        "nvidia.com/cuda.driver.major": "550",
        "nvidia.com/cuda.driver.minor": "90",
        "nvidia.com/gpu.family": "hopper" if pool % 2 else "ampere",
        "nvidia.com/mig.strategy": "single",
        "feature.node.kubernetes.io/network-sriov.capable": "true",
        "spreadguard.io/team": team,
        "gke.google.com/recommended-to-run-large-training-workload": "false" if i % 97 == 0 else "true",
        "cloud.google.com/gke-boot-disk": "pd-ssd",
    }
    if unique_topology:
        labels["cloud.google.com/gce-topology-host"] = f"host-{i:05d}-{(i * 7919) % 100000:05x}"
    taints = [
        {"key": "spreadguard.io/team", "value": team, "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
    ]
    if i % 100 == 42:
        taints[1] = {"key": "nvidia.com/gpu-xid-error", "value": "79", "effect": "NoSchedule"}
    resources = {
        "cpu": "207",
        "ephemeral-storage": "1839720382844",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": "1871804152Ki",
        "nvidia.com/gpu": "8",
        "pods": "110",
    }
    conditions = [
        {
            "type": t,
            "status": s,
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": "2025-01-01T00:00:00Z",
            "reason": r,
            "message": f"kubelet reports {r}",
        }
        for t, s, r in (
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
            ("NetworkUnavailable", "False", "RouteCreated"),
        )
    ]
    images = [
        {
            "names": [
                f"us-docker.pkg.dev/proj/train/image-{k}@sha256:{(i * k * 2654435761) % 16**16:064x}",
                f"us-docker.pkg.dev/proj/train/image-{k}:v{k}.{i % 7}",
            ],
            "sizeBytes": 1_000_000_000 + k,
        }
        for k in range(40)
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"{i:08x}-0000-4000-8000-{i:012x}",
            "resourceVersion": str(100000 + i),
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "container.googleapis.com/instance_id": str(10**15 + i),
            },
            "managedFields": [
                {
                    "manager": "kubelet",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": heartbeat,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:status": {f"f:{c}": {} for c in ("allocatable", "capacity", "conditions", "images")}
                    },
                }
            ],
        },
        "spec": {
            "podCIDR": f"10.{i // 256 % 256}.{i % 256}.0/24",
            "providerID": f"gce://proj/{zone}/{name}",
            "taints": taints,
        },
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": f"10.128.{i // 256 % 256}.{i % 256}"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": f"{i:032x}",
                "systemUUID": f"{i:032x}",
                "bootID": f"{i:032x}",
                "kernelVersion": "6.1.100+",
                "osImage": "Container-Optimized OS from Google",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kubeletVersion": "v1.31.1-gke.1",
                "kubeProxyVersion": "v1.31.1-gke.1",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": images,
        },
    }


def namespace(i: int) -> dict:
    name = f"team-{TEAMS[i % len(TEAMS)]}-{i:04d}"
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": f"ns-{i:08x}",
            "resourceVersion": str(500000 + i),
            "labels": {
                "kubernetes.io/metadata.name": name,
                "spreadguard.io/team": TEAMS[i % len(TEAMS)],
                "spreadguard.io/mode": "enforce" if i % 5 else "warn",
                "environment": ("prod", "staging", "dev")[i % 3],
                "cost-center": f"cc-{i % 40:03d}",
                "owner": f"group-{i % 200:03d}",
            },
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def new_cache() -> ClusterCache:
    # never started: no thread, no network; the host only appears in messages
    return ClusterCache(client.ApiClient(client.Configuration(host="http://127.0.0.1:1")), min_rebuild_seconds=0)


def generate(nodes: int, namespaces: int, unique: bool) -> tuple[list[str], list[str]]:
    """The objects as the API would send them: one JSON text each (made once, outside every measurement)."""
    return [json.dumps(node(i, unique)) for i in range(nodes)], [json.dumps(namespace(i)) for i in range(namespaces)]


def feed_watch(cache: ClusterCache, node_json: list[str], namespace_json: list[str]) -> None:
    """ADDED events, one JSON line each, through the client's unmarshal_event and the cache's _apply."""
    w = watch.Watch()
    for res, texts in ((cache._nodes, node_json), (cache._namespaces, namespace_json)):
        for text in texts:
            cache._apply(res, w.unmarshal_event('{"type":"ADDED","object":' + text + "}", None))
        res.listed = True


class _Page:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def release_conn(self) -> None:
        pass


def pages_of(node_json: list[str], size: int) -> list[bytes]:
    out = []
    for start in range(0, len(node_json), size):
        meta: dict[str, Any] = {"resourceVersion": "999999"}
        if start + size < len(node_json):
            meta["continue"] = str(start + size)
        out.append(
            (
                '{"kind":"NodeList","apiVersion":"v1","metadata":'
                + json.dumps(meta)
                + ',"items":['
                + ",".join(node_json[start : start + size])
                + "]}"
            ).encode()
        )
    return out


def paged_lister(pages: list[bytes], size: int) -> Any:
    def lister(limit: int, _continue: str | None = None, **_: Any) -> _Page:
        assert limit == size
        return _Page(pages[int(_continue or 0) // size])

    return lister


def rss_growth(nodes: int, namespaces: int, unique: bool) -> float:
    """In a fresh interpreter (this one has freed arenas to reuse): RSS growth while the state is built."""
    code = (
        "import sys, gc; sys.path[:0] = [%r, %r]; import cache_memory as b; "
        "n, s = b.generate(%d, %d, %r); w = b.new_cache(); b.feed_watch(w, n[:2], s[:2]); w.publish(); "
        "del w; gc.collect(); before = b.rss(); c = b.new_cache(); b.feed_watch(c, n, s); c.publish(); "
        "gc.collect(); print(b.rss() - before)"
    )
    here = Path(__file__).resolve().parent
    out = subprocess.run(
        [sys.executable, "-c", code % (str(here), str(here.parent), nodes, namespaces, unique)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return int(out.stdout.strip()) / MB


def traced(fn: Any) -> tuple[Any, float, float]:
    """(result, retained MB, peak MB above the start) of ``fn()`` under tracemalloc."""
    tracemalloc.start()
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    result = fn()
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, (current - base) / MB, (peak - base) / MB


def measure(nodes: int, namespaces: int, unique: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node_json, namespace_json = generate(nodes, namespaces, unique)
    out["node_json_bytes"] = round(statistics.mean(len(t) for t in node_json[:100]))
    out["rss_delta_mb"] = rss_growth(nodes, namespaces, unique)

    def build() -> ClusterCache:
        cache = new_cache()
        feed_watch(cache, node_json, namespace_json)
        return cache

    warm = new_cache()  # imports the client's API modules and the watch machinery outside the measurement
    feed_watch(warm, node_json[:2], namespace_json[:2])
    warm.publish()
    del warm

    cache, out["state_mb"], _ = traced(build)
    _, out["view_mb"], _ = traced(cache.publish)
    naive, out["naive_nodeinfo_mb"], _ = traced(lambda: [node_from_api(json.loads(t)) for t in node_json])

    # rebuild of the view: snapshot + classes + ClusterView
    times = []
    for _ in range(5):
        with cache._lock:
            cache._dirty = True
        started = time.perf_counter()
        cache.publish()
        times.append(time.perf_counter() - started)
    view = cache.view()
    out["classes"] = len(view.classes)
    out["node_count"] = view.node_count
    out["rebuild_ms"] = statistics.median(times) * 1000
    started = time.perf_counter()
    classify(naive)
    out["classify_nodeinfo_ms"] = (time.perf_counter() - started) * 1000
    del naive

    # status heartbeats: MODIFIED lines with a new heartbeat and resourceVersion; nothing the cache keeps changes
    w = watch.Watch()
    lines = [
        json.dumps({"type": "MODIFIED", "object": node(i, unique, heartbeat="2025-01-01T00:05:00Z")})
        for i in range(1000)
    ]
    rebuilds, generation = cache.rebuilds, cache.generation
    started = time.process_time()
    for line in lines:
        cache._apply(cache._nodes, w.unmarshal_event(line, None))
    per_event = (time.process_time() - started) / len(lines)
    assert cache.generation == generation and not cache._dirty and cache.rebuilds == rebuilds
    out["heartbeat_event_us"] = per_event * 1e6
    out["cpu_share_heartbeat_5min"] = per_event * nodes / 300
    out["cpu_share_heartbeat_10s"] = per_event * nodes / 10

    # eligible nodes for a pod of team vision asking for 8 GPUs
    spec = {
        "containers": [{"name": "t", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 8}}}],
        "tolerations": [
            {"key": "spreadguard.io/team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        ],
    }
    times = []
    for _ in range(5):
        started = time.perf_counter()
        eligible = eligible_nodes(view, spec, ["nvidia.com/gpu"])
        times.append(time.perf_counter() - started)
    out["eligible_nodes"] = eligible
    out["eligible_nodes_ms"] = statistics.median(times) * 1000
    del cache, view

    # the initial list, page by page: time, and the transient peak (parsed page + the page's bytes)
    pages = pages_of(node_json, 500)
    cache = new_cache()
    cache._nodes.lister = paged_lister(pages, 500)
    started = time.perf_counter()
    cache._list(cache._nodes)
    out["list_seconds"] = time.perf_counter() - started
    out["list_pages"] = cache._nodes.pages
    cache = new_cache()
    cache._nodes.lister = paged_lister(pages, 500)
    _, retained, peak = traced(lambda: cache._list(cache._nodes))
    out["list_page_mb"] = max(len(p) for p in pages) / MB
    out["list_peak_above_state_mb"] = peak - retained + out["list_page_mb"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--namespaces", type=int, default=5_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    results = {}
    for label, unique in (("per-node topology label", True), ("pool-uniform", False)):
        results[label] = measure(args.nodes, args.namespaces, unique)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"cluster caches: {args.nodes} nodes, {args.namespaces} namespaces (python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs)"
    )
    for label, r in results.items():
        print(
            f"\n{label}: {r['node_json_bytes']} bytes of JSON per Node, {r['classes']} node classes, "
            f"{r['node_count']} schedulable nodes"
        )
        rows = [
            ("cache state (tracemalloc)", f"{r['state_mb']:.1f} MB", f"the view adds {r['view_mb']:.1f} MB"),
            ("RSS growth, fresh process", f"{r['rss_delta_mb']:.1f} MB", "state and view"),
            ("same nodes as NodeInfo, no interning", f"{r['naive_nodeinfo_mb']:.1f} MB", "for comparison"),
            (
                "initial list",
                f"{r['list_seconds']:.2f} s",
                f"{r['list_pages']} pages of 500; transient peak {r['list_peak_above_state_mb']:.0f} MB "
                f"(one {r['list_page_mb']:.1f} MB page, parsed)",
            ),
            (
                "rebuild of the view",
                f"{r['rebuild_ms']:.1f} ms",
                f"placement.classify over NodeInfo: {r['classify_nodeinfo_ms']:.0f} ms",
            ),
            (
                "one heartbeat event (parse+compare)",
                f"{r['heartbeat_event_us']:.0f} us",
                f"CPU: {r['cpu_share_heartbeat_5min']:.1%} of a core at 1 update/node/5 min, "
                f"{r['cpu_share_heartbeat_10s']:.0%} at 1/node/10 s",
            ),
            (
                "eligible_nodes, GPU pod of one team",
                f"{r['eligible_nodes_ms']:.2f} ms",
                f"{r['eligible_nodes']} eligible nodes",
            ),
        ]
        for name, value, note in rows:
            print(f"  {name:38} {value:>10}   {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
