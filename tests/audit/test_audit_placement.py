"""``spreadguard audit --cluster``: actual placement, from where pods run, against the shared fake API server.

There is no kube-apiserver here: tests/fakeapi.py (a test double, a real HTTPS server on 127.0.0.1) holds
12 nodes in 3 zones and the pods of a gang, an elastic job, a Deployment, a lone pod and a controller
spreadguard does not know, placed unevenly by hand. Every figure asserted below can be counted by hand
from the ``PODS`` table (what ``kubectl get pods -o wide`` would show).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import jsonschema
import pytest
import yaml
from conftest import REPO
from fakeapi import FakeKubeAPI, namespace, node

from webhook.cli import main

POLICIES = REPO / "policies"
SCHEMA = json.loads((REPO / "tests" / "data" / "audit" / "policyreport-v1alpha2.schema.json").read_text())
HEALTH = {"key": "nvidia.com/gpu-xid-error", "effect": "NoSchedule"}
NOT_SCHEDULED = "0/12 nodes are available: 12 Insufficient nvidia.com/gpu."
ZONES = {f"n{i:02d}": f"z{(i - 1) // 4 + 1}" for i in range(1, 13)}  # n01-n04 z1, n05-n08 z2, n09-n12 z3

# (pod, node or None for pending, controller kind, controller uid, labels)
KF = "training.kubeflow.org"
PODS = [
    ("bert-master-0", "n01", "PyTorchJob", "pj-bert", {f"{KF}/job-name": "bert", f"{KF}/replica-type": "master"}),
    *(
        (f"bert-worker-{i}", n, "PyTorchJob", "pj-bert", {f"{KF}/job-name": "bert", f"{KF}/replica-type": "worker"})
        for i, n in enumerate(["n04", "n08", "n08", "n12"])
    ),
    ("elastic-master-0", "n05", "PyTorchJob", "pj-el", {f"{KF}/job-name": "elastic", f"{KF}/replica-type": "master"}),
    *(
        (f"elastic-worker-{i}", n, "PyTorchJob", "pj-el", {f"{KF}/job-name": "elastic", f"{KF}/replica-type": "worker"})
        for i, n in enumerate(["n10", "n10", "n10", "n09"])
    ),
    *(
        (f"llama-7c9-{i}", n, "ReplicaSet", "rs-llama", {"app": "llama", "pod-template-hash": "7c9"})
        for i, n in enumerate(["n01", "n01", "n02", None])
    ),
    ("notebook", "n03", None, None, {}),
    ("wf-step-1", "n06", "Workflow", "wf-1", {"workflows.argoproj.io/workflow": "wf"}),
    ("wf-step-2", "n11", "Workflow", "wf-1", {"workflows.argoproj.io/workflow": "wf"}),
    ("dcgm-exporter", "n01", "DaemonSet", "ds-1", {"app": "dcgm"}),
]

GPU = [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 8}}}]
PREFERRED_ANTI = {
    "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "podAffinityTerm": {
                    "labelSelector": {"matchLabels": {"app": "llama"}},
                    "topologyKey": "kubernetes.io/hostname",
                },
            }
        ]
    }
}


def pod(name: str, node_name: str | None, kind: str | None, uid: str | None, labels: dict) -> dict:
    spec: dict = {"containers": GPU}
    status: dict = {"phase": "Running"}
    if node_name:
        spec["nodeName"] = node_name
    else:
        status = {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": NOT_SCHEDULED}
            ],
        }
    if labels.get("app") == "llama":
        spec["affinity"] = PREFERRED_ANTI
    meta: dict = {"name": name, "namespace": "ml", "uid": f"uid-{name}", "labels": labels}
    if kind:
        meta["ownerReferences"] = [{"apiVersion": "x/v1", "kind": kind, "name": uid, "uid": uid, "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def pytorchjob(name: str, uid: str, workers: int, elastic: bool = False) -> dict:
    spec: dict = {
        "pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "template": {"spec": {"containers": GPU}}},
            "Worker": {"replicas": workers, "template": {"spec": {"containers": GPU}}},
        }
    }
    if elastic:
        spec["elasticPolicy"] = {"minReplicas": 2, "maxReplicas": workers}
    meta = {"name": name, "namespace": "ml", "uid": uid}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": meta, "spec": spec}


def deployment() -> dict:
    template = {"metadata": {"labels": {"app": "llama"}}, "spec": {"containers": GPU, "affinity": PREFERRED_ANTI}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llama", "namespace": "ml", "uid": "dep-llama"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "llama"}}, "template": template},
    }


def replicaset() -> dict:
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama", "uid": "dep-llama", "controller": True}
    obj = deployment()
    obj["kind"] = "ReplicaSet"
    obj["metadata"] = {"name": "llama-7c9", "namespace": "ml", "uid": "rs-llama", "ownerReferences": [owner]}
    return obj


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeKubeAPI, Path]]:
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    api = FakeKubeAPI()
    api.groups = {"apps": ["v1"], "batch": ["v1"], "policy": ["v1"], "kubeflow.org": ["v1"]}
    api.resources = {"kubeflow.org/v1": ["pytorchjobs"]}
    for name, zone in ZONES.items():
        team = "nlp" if name == "n11" else "vision"
        api.put("nodes", node(name, team=team, zone=zone, taints=(HEALTH,) if name == "n12" else ()))
    api.put("namespaces", namespace("ml", **{"spreadguard.io/team": "vision"}))
    api.put("pytorchjobs", pytorchjob("bert", "pj-bert", 4))
    api.put("pytorchjobs", pytorchjob("elastic", "pj-el", 4, elastic=True))
    api.put("deployments", deployment())
    api.put("replicasets", replicaset())
    for row in PODS:
        api.put("pods", pod(*row))
    done = pod("finished", "n02", None, None, {})
    done["status"]["phase"] = "Succeeded"
    api.put("pods", done)
    api.serve()
    try:
        yield api, api.kubeconfig(tmp_path / "kubeconfig", namespace="ml")
    finally:
        api.stop_serving()


def audit(capsys: pytest.CaptureFixture, kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    code = main(["audit", "--cluster", "--kubeconfig", str(kubeconfig), "--policies", str(POLICIES), *args])
    out, err = capsys.readouterr()
    return code, out, err


def placement(capsys: pytest.CaptureFixture, kubeconfig: Path, *args: str) -> dict:
    code, out, err = audit(capsys, kubeconfig, "-o", "json", "--chunk-size", "3", *args)
    assert code in (0, 1), err
    return json.loads(out)["placement"]


def by_group(report: dict) -> dict[tuple[str, str], dict]:
    return {(g["workload"], g["group"]): g for g in report["groups"]}


def test_actual_figures_per_group(cluster: tuple[FakeKubeAPI, Path], capsys: pytest.CaptureFixture) -> None:
    report = placement(capsys, cluster[1])
    groups = by_group(report)
    assert report["nodesListed"] == 12 and report["nodeFailureRatePer1000NodesPerDay"] == 19
    assert report["skipped"] == {"per-node pod (DaemonSet or static)": 1, "finished pod": 1}

    # the gang: 4 workers on n04, n08, n08, n12; losing n08 takes 2 of 4 (50%), and any node restarts the gang
    w = groups[("PyTorchJob ml/bert", "Worker")]
    assert (w["placement"], w["running"], w["pending"], w["controllerKnown"]) == ("gang", 4, 0, True)
    assert w["podsPerNode"] == {"n08": 2, "n04": 1, "n12": 1}
    assert w["podsPerZone"] == {"z1": 1, "z2": 2, "z3": 1}
    assert (w["worstNode"], w["worstNodePods"], w["nodeFailureLossPercent"]) == ("n08", 2, 100.0)
    gang = w["gang"]
    assert gang["nodes"] == ["n01", "n04", "n08", "n12"] and gang["zones"] == ["z1", "z2", "z3"]  # master too
    assert gang["expectedRestartsPer30Days"] == 2.28  # 4 nodes x 19/1000/day x 30 days
    assert "the gang depends on 4 node(s) in 3 zone(s)" in w["text"]
    assert w["drift"] == ["1 pod(s) on nodes with a health taint: n12 (nvidia.com/gpu-xid-error)"]
    assert groups[("PyTorchJob ml/bert", "Master")]["gang"] == gang  # one gang, whatever group

    # elastic: 3 of 4 workers on n10 (75%); all four in zone z3 (100%); its master is the singleton
    e = groups[("PyTorchJob ml/elastic", "Worker")]
    assert (e["placement"], e["worstNode"], e["worstNodePods"], e["nodeFailureLossPercent"]) == (
        "elastic",
        "n10",
        3,
        75.0,
    )
    assert (e["worstZone"], e["zoneFailureLossPercent"]) == ("z3", 100.0) and "gang" not in e
    assert "losing n10 takes 3 of 4 (75%)" in e["text"]
    assert groups[("PyTorchJob ml/elastic", "Master")]["placement"] == "singleton"

    # replicas through ReplicaSet -> Deployment: 3 running (n01 x2, n02), 1 pending with the scheduler's word
    d = groups[("Deployment ml/llama", "pods")]
    assert (d["placement"], d["running"], d["pending"]) == ("replicas", 3, 1)
    assert (d["worstNode"], d["nodeFailureLossPercent"], d["zoneFailureLossPercent"]) == ("n01", 66.7, 100.0)
    assert d["pendingMessages"] == [{"message": NOT_SCHEDULED, "pods": 1}]
    assert d["drift"] == ["preferred anti-affinity on kubernetes.io/hostname not achieved: n01 holds 2 pods"]

    # a lone pod is a singleton; pods of a controller spreadguard does not know are grouped by that controller
    assert groups[("Pod ml/notebook", "pod")]["placement"] == "singleton"
    wf = groups[("Workflow ml/wf-1 (controller not known to spreadguard)", "pods")]
    assert (wf["controllerKnown"], wf["running"], wf["nodeFailureLossPercent"]) == (False, 2, 50.0)
    assert wf["drift"] == ["1 pod(s) on another team's nodes (namespace team: vision): n11 (team nlp)"]


def test_would_be_beside_actual_never_mixed(cluster: tuple[FakeKubeAPI, Path], capsys: pytest.CaptureFixture) -> None:
    code, out, _ = audit(capsys, cluster[1], "-o", "json")
    doc = json.loads(out)
    bert = next(r for r in doc["results"] if r["resource"]["name"] == "bert")
    would_be = {b["group"]: b for b in bert["blastRadius"]}
    groups = by_group(doc["placement"])
    for group in ("Master", "Worker"):
        assert groups[("PyTorchJob ml/bert", group)]["wouldBe"] == would_be[group]  # the after-enforcement view
    assert groups[("PyTorchJob ml/bert", "Worker")]["podsPerNode"]["n08"] == 2  # the actual one, from pods
    assert groups[("Workflow ml/wf-1 (controller not known to spreadguard)", "pods")]["wouldBe"] is None


def test_if_a_node_or_zone_fails(cluster: tuple[FakeKubeAPI, Path], capsys: pytest.CaptureFixture) -> None:
    report = placement(capsys, cluster[1])
    nodes = report["ifNodeFails"]
    assert len(nodes) == 11  # every node running a pod of a group (n07 runs none); all of them in JSON
    first = nodes[0]  # n01: restarts the bert gang and takes 2 of 3 llama replicas
    assert first["node"] == "n01" and (first["groupsStopped"], first["groupsHurt"]) == (1, 2)
    assert [(h["workload"], h["lossPercent"]) for h in first["groups"]] == [
        ("PyTorchJob ml/bert", 100.0),
        ("Deployment ml/llama", 66.7),
    ]
    n10 = next(n for n in nodes if n["node"] == "n10")
    assert n10["groups"] == [
        {
            "workload": "PyTorchJob ml/elastic",
            "group": "Worker",
            "placement": "elastic",
            "pods": 3,
            "of": 4,
            "lossPercent": 75.0,
            "stops": False,
        }
    ]
    zones = report["ifZoneFails"]
    assert [z["zone"] for z in zones][0] == "z1" and zones[0]["groupsStopped"] == 4  # bert x2, llama, notebook

    code, out, _ = audit(capsys, cluster[1], "--top", "2")
    section = out.split("IF A NODE FAILS")[1].split("\n\n")[0].splitlines()
    assert section[0].startswith(" (2 of 11, most harmful first")
    assert len(section) == 3 and section[1].split()[0] == "n01"
    assert "PyTorchJob ml/elastic Worker [elastic]: 4 running on 2 node(s): losing n10 takes 3 of 4 (75%)" in out
    assert "      pending (1): 0/12 nodes are available" in out
    assert "      drift: preferred anti-affinity on kubernetes.io/hostname not achieved" in out


def test_failure_rate_is_configurable(cluster: tuple[FakeKubeAPI, Path], capsys: pytest.CaptureFixture) -> None:
    groups = by_group(placement(capsys, cluster[1], "--node-failure-rate", "38"))
    assert groups[("PyTorchJob ml/bert", "Worker")]["gang"]["expectedRestartsPer30Days"] == 4.56
    code, out, err = audit(capsys, cluster[1], "--node-failure-rate", "-1")
    assert code == 2 and out == "" and "--node-failure-rate" in err


def test_policyreport_and_junit_carry_the_groups(
    cluster: tuple[FakeKubeAPI, Path], capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = audit(capsys, cluster[1], "-o", "policyreport")
    docs = list(yaml.safe_load_all(out))
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for doc in docs:
        assert not list(validator.iter_errors(doc))
    ml = next(d for d in docs if d["kind"] == "PolicyReport" and d["metadata"].get("namespace") == "ml")
    placed = [r for r in ml["results"] if r.get("rule") == "actual-placement"]
    assert len(placed) == 7
    worker = next(r for r in placed if r["resources"][0]["name"] == "bert" and r["properties"]["group"] == "Worker")
    assert worker["result"] == "warn" and worker["properties"]["expectedRestartsPer30Days"] == "2.28"
    assert json.loads(worker["properties"]["podsPerNode"]) == {"n08": 2, "n04": 1, "n12": 1}
    assert "health taint" in worker["properties"]["drift"] and worker["properties"]["afterEnforcement"]

    code, out, _ = audit(capsys, cluster[1], "-o", "junit", "--fail-on", "never")
    suites = ET.fromstring(out).findall("testsuite")
    assert [s.get("name") for s in suites] == ["spreadguard audit", "spreadguard actual placement"]
    assert suites[1].get("tests") == "7" and code == 0
    texts = [c.find("system-out").text for c in suites[1]]
    assert any("losing n10 takes 3 of 4 (75%)" in t for t in texts)


def test_nodes_not_readable_is_a_note(cluster: tuple[FakeKubeAPI, Path], capsys: pytest.CaptureFixture) -> None:
    cluster[0].forbidden = {("list", "nodes")}
    code, out, err = audit(capsys, cluster[1], "-o", "json")
    doc = json.loads(out)
    assert doc["errors"] == [] and code == 0  # not an input error: exit code as without the placement
    assert any("cannot list nodes" in n and "zones and node taints are unknown" in n for n in doc["summary"]["notes"])
    w = by_group(doc["placement"])[("PyTorchJob ml/bert", "Worker")]
    assert w["podsPerNode"] == {"n08": 2, "n04": 1, "n12": 1} and w["podsPerZone"] == {"(node not listed)": 4}
