"""Cluster-aware decisions from a node/namespace view: eligible nodes, the required -> preferred
downgrade or denial, the spec-only fallback when the view is not synced, team from the namespace."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO

from webhook.engine.decide import evaluate
from webhook.engine.placement import ClusterView, classify, eligible_nodes, node_from_api
from webhook.engine.policy import load_policies
from webhook.engine.target import Context

POLICIES = load_policies(REPO / "policies")
TRAINING = next(p for p in POLICIES if p.name == "training")
TEAM = "spreadguard.io/team"


def node(name: str, gpus: int = 8, team: str | None = "vision", unschedulable: bool = False, **labels: str) -> dict:
    taints = [{"key": TEAM, "value": team, "effect": "NoSchedule"}] if team else []
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "spec": {"taints": taints, "unschedulable": unschedulable},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "96"}},
    }


def view(*nodes: dict, namespaces: dict | None = None) -> ClusterView:
    return ClusterView(synced=True, classes=classify(node_from_api(n) for n in nodes), namespaces=namespaces or {})


CLUSTER = view(
    node("a1", pool="a100"),
    node("a2", pool="a100"),
    node("h1", pool="h100"),
    node("h2", pool="h100"),
    node("h3", pool="h100", unschedulable=True),
    node("n1", team="nlp", pool="h100"),
    node("c1", gpus=0, team=None),
)
VISION = [{"key": TEAM, "operator": "Equal", "value": "vision", "effect": "NoSchedule"}]
GPU8 = [{"name": "t", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 8}}}]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"containers": GPU8, "tolerations": VISION}, 4),  # vision nodes, h3 is cordoned
        ({"containers": GPU8}, 0),  # no toleration: every GPU node is tainted for a team
        ({"containers": [{"name": "t", "image": "x"}]}, 1),  # CPU pod: only the untainted node
        ({"containers": GPU8, "tolerations": VISION, "nodeSelector": {"pool": "h100"}}, 2),
        ({"containers": GPU8, "tolerations": [{"key": TEAM, "operator": "Exists"}]}, 5),  # borrower
        (
            {
                "containers": [{"name": "t", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 16}}}],
                "tolerations": VISION,
            },
            0,
        ),
        (
            {
                "containers": GPU8,
                "tolerations": VISION,
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a1", "h1"]}
                                    ]
                                },
                                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a100"]}]},
                            ]
                        }
                    }
                },
            },
            3,
        ),
    ],
    ids=["team", "untolerated", "cpu", "selector", "borrow", "too-many-gpus", "affinity-terms-ored"],
)
def test_eligible_nodes(spec: dict, expected: int) -> None:
    assert eligible_nodes(CLUSTER, spec, ["nvidia.com/gpu"]) == expected


def test_classes_fold_identical_nodes() -> None:
    big = view(*[node(f"g{i}", pool="h100", zone=f"z{i % 3}") for i in range(3000)])
    assert big.node_count == 3000 and len(big.classes) == 3


def job(replicas: int) -> dict:
    """An elastic PyTorchJob: its workers are spread over hosts (a non-elastic one is a compact gang)."""
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "big", "namespace": "ml"},
        "spec": {
            "elasticPolicy": {"minReplicas": 1, "maxReplicas": replicas, "rdzvBackend": "c10d"},
            "pytorchReplicaSpecs": {
                "Worker": {
                    "replicas": replicas,
                    "template": {"metadata": {"labels": {TEAM: "vision"}}, "spec": {"containers": GPU8}},
                }
            },
        },
    }


def worker_anti(decision) -> dict:  # noqa: ANN001
    spec = decision.mutated["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    return spec["affinity"]["podAntiAffinity"]


def test_shortage_downgrades_to_preferred_with_reason() -> None:
    d = evaluate(job(16), Context(namespace="ml", cluster=CLUSTER), POLICIES)
    assert list(worker_anti(d)) == ["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any("16 replicas need 16 nodes; team vision has 4 eligible nodes" in n for n in d.notes)
    assert d.allowed


def test_shortage_denied_when_the_policy_says_so() -> None:
    anti = TRAINING.spec.mutate.antiAffinity.model_copy(update={"onShortage": "deny"})
    mutate = TRAINING.spec.mutate.model_copy(update={"antiAffinity": anti})
    strict = TRAINING.model_copy(update={"spec": TRAINING.spec.model_copy(update={"mutate": mutate})})
    d = evaluate(job(16), Context(namespace="ml", cluster=CLUSTER), [strict])
    assert [v.rule for v in d.violations] == ["unschedulable-spread"]
    assert d.violations[0].message.startswith("16 replicas need 16 nodes; team vision has 4 eligible nodes: required")
    assert evaluate(job(4), Context(namespace="ml", cluster=CLUSTER), [strict]).allowed


def test_unknown_cluster_means_spec_only() -> None:
    offline = evaluate(job(16), Context(namespace="ml"), POLICIES)
    unsynced = evaluate(
        job(16), Context(namespace="ml", cluster=ClusterView(synced=False, error="API unreachable")), POLICIES
    )
    for d in (offline, unsynced):
        assert list(worker_anti(d)) == ["requiredDuringSchedulingIgnoredDuringExecution"]
    assert not any("cluster view" in i for i in offline.info)
    assert "cluster view not synced (API unreachable): decided from the spec alone" in unsynced.info


def test_team_comes_from_the_namespace_label_before_the_workload_label() -> None:
    obj = yaml.safe_load((REPO / "examples" / "job.yaml").read_text())
    del obj["spec"]["template"]["metadata"]["labels"][TEAM]
    cluster = view(node("a1"), namespaces={"ml": {TEAM: "speech"}})
    d = evaluate(obj, Context(namespace="ml", cluster=cluster), POLICIES)
    tolerations = d.mutated["spec"]["template"]["spec"]["tolerations"]
    assert {"key": TEAM, "operator": "Equal", "value": "speech", "effect": "NoSchedule"} in tolerations
    obj["spec"]["template"]["metadata"]["labels"][TEAM] = "vision"  # the namespace's team wins over the label
    d = evaluate(obj, Context(namespace="ml", cluster=cluster), POLICIES)
    assert [t["value"] for t in d.mutated["spec"]["template"]["spec"]["tolerations"]] == ["speech"]
    assert [(v.rule, v.path) for v in d.violations] == [
        ("team-label-claim", "spec.template.metadata.labels[spreadguard.io/team]")
    ]
    assert "namespace ml belongs to team speech (namespace label spreadguard.io/team)" in d.violations[0].message
    d = evaluate(obj, Context(namespace="sandbox", cluster=cluster), POLICIES)  # a namespace without a team
    assert [t["value"] for t in d.mutated["spec"]["template"]["spec"]["tolerations"]] == ["vision"]
    assert d.allowed
