"""How the placement audit attaches pods to groups through controller chains, and what it bounds.

In-process (no API server): objects go through ``Auditor.audit`` and ``Placement`` in the order the cluster
scan lists them (owners first, pods last), exactly as ``spreadguard audit --cluster`` feeds them.
"""

from __future__ import annotations

import pytest
from conftest import REPO

from webhook.audit.auditor import Auditor
from webhook.audit.placement import MESSAGES, Placement
from webhook.engine.policy import load_policies

POLICIES = load_policies(REPO / "policies")
GPU = [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 8}}}]
TEMPLATE = {"spec": {"containers": GPU}}


def meta(name: str, uid: str, owner: tuple[str, str] | None = None, labels: dict | None = None) -> dict:
    out: dict = {"name": name, "namespace": "ml", "uid": uid, "labels": labels or {}}
    if owner:
        out["ownerReferences"] = [
            {"apiVersion": "x", "kind": owner[0], "name": owner[1], "uid": owner[1], "controller": True}
        ]
    return out


def pod(name: str, node: str | None, owner: tuple[str, str] | None, labels: dict, message: str = "") -> dict:
    status: dict = {"phase": "Running"}
    if message:
        cond = {"type": "PodScheduled", "status": "False", "message": message}
        status = {"phase": "Pending", "conditions": [cond]}
    spec = {"containers": GPU, **({"nodeName": node} if node else {})}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta(name, f"uid-{name}", owner, labels),
        "spec": spec,
        "status": status,
    }


def node(name: str, zone: str) -> dict:
    return {"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}, "spec": {}}


def run(objects: list[dict], nodes: int = 8, rate: float = 19.0) -> dict[tuple[str, str], dict]:
    placement = Placement(POLICIES, failure_rate=rate)
    auditor = Auditor(POLICIES, pdbs_first=True, placement=placement)
    for i in range(nodes):
        placement.node(node(f"n{i}", f"z{i % 2}"))
    for obj in objects:
        auditor.audit(obj, "cluster")
        if obj["kind"] == "Pod":
            placement.pod(obj)
    return {(g["workload"], g["group"]): g for g in placement.report().groups()}


JS = "jobset.sigs.k8s.io"
LWS = "leaderworkerset.sigs.k8s.io"


def test_pod_job_jobset_chain_is_one_gang() -> None:
    jobset = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": meta("js", "js"),
        "spec": {
            "replicatedJobs": [
                {"name": "workers", "replicas": 2, "template": {"spec": {"parallelism": 2, "template": TEMPLATE}}}
            ]
        },
    }
    jobs = [
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(f"js-workers-{i}", f"job-{i}", ("JobSet", "js"))}
        for i in range(2)
    ]
    labels = {f"{JS}/jobset-name": "js", f"{JS}/replicatedjob-name": "workers"}
    pods = [pod(f"js-w-{i}", f"n{i // 2}", ("Job", f"job-{i // 2}"), labels) for i in range(4)]
    groups = run([jobset, *jobs, *pods])
    g = groups[("JobSet ml/js", "workers")]
    assert (g["placement"], g["running"], g["controllerKnown"]) == ("gang", 4, True)
    assert g["gang"]["nodes"] == ["n0", "n1"] and g["gang"]["expectedRestartsPer30Days"] == 1.14
    assert g["wouldBe"]["group"] == "workers" and len(groups) == 1


def test_cronjob_and_leaderworkerset_chains() -> None:
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta("nightly", "cron"),
        "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"parallelism": 3, "template": TEMPLATE}}},
    }
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("nightly-1", "job-n", ("CronJob", "cron"))}
    lws = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": meta("serve", "lws"),
        "spec": {
            "replicas": 2,
            "leaderWorkerTemplate": {"size": 2, "leaderTemplate": TEMPLATE, "workerTemplate": TEMPLATE},
        },
    }
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("serve", "sts", ("LeaderWorkerSet", "lws"))}
    pods = [
        pod(f"nightly-1-{i}", "n3", ("Job", "job-n"), {"batch.kubernetes.io/job-name": "nightly-1"}) for i in range(3)
    ]
    pods += [
        pod(f"serve-{i}", f"n{i}", ("StatefulSet", "sts"), {f"{LWS}/name": "serve", f"{LWS}/worker-index": str(i % 2)})
        for i in range(4)
    ]
    groups = run([cron, lws, sts, job, *pods])
    nightly = groups[("CronJob ml/nightly", "pods")]
    assert (nightly["running"], nightly["worstNode"], nightly["nodeFailureLossPercent"]) == (3, "n3", 100.0)
    assert nightly["drift"] == []  # no spread carried: all on one node is a finding of the figures, not drift
    assert groups[("LeaderWorkerSet ml/serve", "leader")]["podsPerNode"] == {"n0": 1, "n2": 1}
    assert groups[("LeaderWorkerSet ml/serve", "worker")]["podsPerNode"] == {"n1": 1, "n3": 1}


def test_a_lone_pod_carries_its_own_would_be_view() -> None:
    groups = run([pod("notebook", "n1", None, {})])
    g = groups[("Pod ml/notebook", "pod")]
    assert g["placement"] == "singleton" and g["controllerKnown"] is False
    assert g["wouldBe"]["replicas"] == 1 and g["nodeFailureLossPercent"] == 100.0


@pytest.mark.parametrize(
    "nodes, rate, restarts", [(1, 19, 0.57), (2, 19, 1.14), (4, 19, 2.28), (4, 38, 4.56), (8, 0, 0)]
)
def test_gang_restarts_grow_with_its_nodes(nodes: int, rate: float, restarts: float) -> None:
    assert Placement(failure_rate=rate).restarts(nodes) == restarts


def test_scheduler_messages_and_owner_cycles_are_bounded() -> None:
    owner = ("ReplicaSet", "rs")
    cyclic = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("rs", "rs", ("Deployment", "dep"))},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("dep", "dep", ("ReplicaSet", "rs"))},
    ]
    pods = [pod(f"p{i}", None, owner, {"app": "a"}, message=f"reason {i}") for i in range(50)]
    pods.append(pod("p-more", None, owner, {"app": "a"}, message="reason 0"))
    groups = run([*cyclic, *pods])
    [g] = groups.values()
    assert g["pending"] == 51 and len(g["pendingMessages"]) == MESSAGES
    assert g["pendingMessages"][0] == {"message": "reason 0", "pods": 2}


def test_an_owner_in_another_namespace_is_not_trusted() -> None:
    """ownerReferences are namespace-local (the garbage collector ignores others): a pod in namespace
    ``evil`` that names the ReplicaSet of ml/llama as its controller is not counted in that Deployment."""
    labels = {"app": "llama"}
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("llama", "dep"),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {**TEMPLATE, "metadata": {"labels": labels}},
        },
    }
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("llama-1", "rs", ("Deployment", "dep"))}
    mine = [pod(f"llama-1-{i}", f"n{i}", ("ReplicaSet", "rs"), labels) for i in range(2)]
    evil = pod("intruder", "n0", ("ReplicaSet", "rs"), labels)
    evil["metadata"]["namespace"] = "evil"
    groups = run([dep, rs, *mine, evil])
    assert groups[("Deployment ml/llama", "pods")]["podsPerNode"] == {"n0": 1, "n1": 1}
    intruder = next(g for (w, _), g in groups.items() if w.startswith("ReplicaSet evil/"))
    assert intruder["controllerKnown"] is False and intruder["running"] == 1
