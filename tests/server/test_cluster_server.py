"""The real server with its cluster cache: decisions use the nodes and namespaces it watches.

There is no kube-apiserver on this machine: the cache talks to the shared fake API server (tests/fakeapi.py,
a test double), a real HTTPS server on 127.0.0.1 that pages lists and streams watches like the API server,
through a generated kubeconfig so the real ``kubernetes`` client code runs.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Server, TLSFiles, start_server, stop
from fakeapi import FakeKubeAPI, namespace, node

TEAM = "spreadguard.io/team"


def review(uid: str, replicas: int, team_label: bool = True) -> dict:
    labels = {TEAM: "vision"} if team_label else {}
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "big", "namespace": "ml"},
        "spec": {
            "elasticPolicy": {"minReplicas": 1, "maxReplicas": replicas},  # elastic workers spread; a gang would not
            "pytorchReplicaSpecs": {
                "Worker": {
                    "replicas": replicas,
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [{"name": "p", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 8}}}]
                        },
                    },
                }
            },
        },
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "kubeflow.org", "version": "v1", "kind": "PyTorchJob"},
            "operation": "CREATE",
            "namespace": "ml",
            "userInfo": {"username": "alice"},
            "object": job,
        },
    }


def patched_worker(resp: dict) -> dict:
    ops = json.loads(base64.b64decode(resp["patch"]))
    return {op["path"]: op["value"] for op in ops}


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI()
    for i in range(4):
        api.put("nodes", node(f"gpu-{i}"))
    api.put("nodes", node("nlp-0", team="nlp"))
    api.put("nodes", node("nlp-cordoned", team="nlp", unschedulable=True))
    api.put("namespaces", namespace("ml", **{TEAM: "vision"}))
    api.serve()
    yield api
    api.stop_serving()


@pytest.fixture
def cluster_server(fake: FakeKubeAPI, tls_files: TLSFiles, tmp_path: Path) -> Iterator[Server]:
    config = str(fake.kubeconfig(tmp_path / "kubeconfig"))
    server = start_server(
        tls_files, REPO / "policies", tmp_path / "server.log", "--cluster-cache", "auto", "--kubeconfig", config
    )
    try:
        deadline = time.monotonic() + 30  # each worker lists nodes and namespaces after fork
        synced: set[int] = set()
        while time.monotonic() < deadline and len(synced) < 2:
            ready = server.get("/readyz", headers={"Connection": "close"}).json()  # new connection: any worker
            if ready["cluster"].get("synced"):
                synced.add(ready["worker"])
            time.sleep(0.05)
        assert len(synced) == 2, f"workers with a synced cache: {synced}"
        yield server
    finally:
        stop(server.process)


def test_readyz_reports_the_cache(cluster_server: Server) -> None:
    cluster = cluster_server.get("/readyz").json()["cluster"]
    assert cluster["synced"] is True
    assert cluster["nodes"] == 6 and cluster["namespaces"] == 1  # one of them cordoned


def test_shortage_downgrade_through_the_server(cluster_server: Server) -> None:
    """16 workers, 4 eligible vision nodes: preferred anti-affinity, and the warning says why; every
    worker (fresh connections land on either) answers from its own synced cache."""
    for i in range(6):
        resp = cluster_server.post("/mutate", review(f"u-{i}", 16), headers={"Connection": "close"}).json()
        resp = resp["response"]
        worker = patched_worker(resp)["/spec/pytorchReplicaSpecs/Worker/template/spec/affinity"]
        assert list(worker["podAntiAffinity"]) == ["preferredDuringSchedulingIgnoredDuringExecution"], resp["warnings"]
        assert any("16 replicas need 16 nodes; team vision has 4 eligible nodes" in w for w in resp["warnings"])
    fits = cluster_server.post("/mutate", review("fits", 4)).json()["response"]
    worker = patched_worker(fits)["/spec/pytorchReplicaSpecs/Worker/template/spec/affinity"]
    assert list(worker["podAntiAffinity"]) == ["requiredDuringSchedulingIgnoredDuringExecution"]


def test_team_from_the_watched_namespace_label(cluster_server: Server) -> None:
    resp = cluster_server.post("/mutate", review("ns-team", 2, team_label=False)).json()["response"]
    tolerations = patched_worker(resp)["/spec/pytorchReplicaSpecs/Worker/template/spec/tolerations"]
    assert tolerations == [{"key": TEAM, "operator": "Equal", "value": "vision", "effect": "NoSchedule"}]


def test_unreachable_api_means_spec_only_with_a_warning(tls_files: TLSFiles, tmp_path: Path) -> None:
    config = str(FakeKubeAPI().kubeconfig(tmp_path / "kubeconfig", port=9))  # nothing listens on port 9: refused
    server = start_server(
        tls_files, REPO / "policies", tmp_path / "server.log", "--cluster-cache", "auto", "--kubeconfig", config
    )
    try:
        assert server.get("/readyz").status_code == 200  # ready: spec-only decisions are safe
        resp = server.post("/mutate", review("down", 16)).json()["response"]
        worker = patched_worker(resp)["/spec/pytorchReplicaSpecs/Worker/template/spec/affinity"]
        assert list(worker["podAntiAffinity"]) == ["requiredDuringSchedulingIgnoredDuringExecution"]
        assert any("cluster view not synced" in w and "decided from the spec alone" in w for w in resp["warnings"])
    finally:
        stop(server.process)


def _pod_review(uid: str, labels: dict, spec: dict) -> dict:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": uid, "namespace": "ml", "labels": labels}}
    pod["spec"] = {"containers": [{"name": "c", "image": "x", "resources": {"limits": {"cpu": "1"}}}], **spec}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "ml",
            "operation": "CREATE",
            "userInfo": {"username": "mallory", "groups": ["system:authenticated"]},
            "object": pod,
        },
    }


def test_isolation_from_the_watched_namespace_and_nodes(cluster_server: Server) -> None:
    """Issue 11 through the real server and its watched caches: namespace ml belongs to team vision, so a CPU
    pod labelled nlp is refused (team-label-claim), gets vision's toleration, and cannot name nlp's node."""
    resp = cluster_server.post("/validate", _pod_review("claim", {TEAM: "nlp"}, {})).json()["response"]
    assert resp["allowed"] is False
    assert (
        "[team-label-claim] metadata.labels[spreadguard.io/team]: labelled team 'nlp' "
        "but namespace ml belongs to team vision" in resp["status"]["message"]
    )
    mutated = cluster_server.post("/mutate", _pod_review("claim", {TEAM: "nlp"}, {})).json()["response"]
    ops = json.loads(base64.b64decode(mutated["patch"]))
    assert {
        "op": "add",
        "path": "/spec/tolerations",
        "value": [{"key": TEAM, "operator": "Equal", "value": "vision", "effect": "NoSchedule"}],
    } in ops
    walk = cluster_server.post("/validate", _pod_review("walk", {}, {"nodeName": "nlp-0"})).json()["response"]
    assert (
        walk["allowed"] is False
        and "[node-name-taint] spec.nodeName: group pod (1 replica) names node nlp-0" in walk["status"]["message"]
    )
    cordoned = cluster_server.post("/validate", _pod_review("c", {}, {"nodeName": "nlp-cordoned"})).json()["response"]
    assert cordoned["allowed"] is False and "names node nlp-cordoned" in cordoned["status"]["message"]
    own = cluster_server.post("/validate", _pod_review("own", {}, {"nodeName": "gpu-0"})).json()["response"]
    assert own["allowed"] is True


def test_scale_subresource_is_judged_from_the_scale_and_the_node_view(cluster_server: Server) -> None:
    """``kubectl scale deployment/llm --replicas=8`` as the API server sends it: an autoscaling/v1 Scale
    for resource deployments, subresource scale. 8 replicas on 5 nodes must share nodes: a warning, no patch."""

    def scale(uid: str, old: int, new: int) -> dict:
        obj = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "llm", "namespace": "ml"}}
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "subResource": "scale",
                "operation": "UPDATE",
                "namespace": "ml",
                "name": "llm",
                "userInfo": {"username": "alice"},
                "object": {**obj, "spec": {"replicas": new}},
                "oldObject": {**obj, "spec": {"replicas": old}},
            },
        }

    resp = cluster_server.post("/mutate", scale("s-1", 2, 8)).json()["response"]
    assert resp["allowed"] is True and "patch" not in resp
    assert any(
        "scale deployments/llm 2 -> 8: the cluster has 5 schedulable nodes, so replicas must share nodes" in w
        for w in resp["warnings"]
    ), resp
    within = cluster_server.post("/mutate", scale("s-2", 2, 4)).json()["response"]
    assert within["allowed"] is True and "patch" not in within and "warnings" not in within
