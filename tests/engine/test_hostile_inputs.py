"""What a tenant can put in a request that the API server accepts, against the engine: every such input
gets a decision (an exception or a slow evaluation makes the webhook admit unchecked: fail open)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from webhook.engine.decide import evaluate
from webhook.engine.policy import load_policies
from webhook.engine.target import Context

REPO = Path(__file__).resolve().parents[2]
POLICIES = load_policies(REPO / "policies")
FOREIGN = {"key": "spreadguard.io/team", "operator": "Equal", "value": "nlp", "effect": "NoSchedule"}


def _pod(limits: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "resources": {"limits": limits}}], **spec},
    }


# Quantities the API server stores (resource.ParseQuantity keeps any exponent; for an integer resource its
# check of MilliValue() % 1000 sees 0 once the value overflows int64) but Python's float() makes infinite.
HUGE_QUANTITIES = ["1e309", "9" * 400, "1E400", "+1e309"]


@pytest.mark.parametrize("quantity", HUGE_QUANTITIES)
def test_a_gpu_quantity_past_a_float_is_decided_not_crashed(quantity: str) -> None:
    ctx = Context(namespace="ml", namespace_labels={"spreadguard.io/team": "vision"})
    decision = evaluate(_pod({"nvidia.com/gpu": quantity}, tolerations=[FOREIGN]), ctx, POLICIES)
    assert "training" in decision.policies  # still a GPU pod: the GPU policies apply
    assert [v.rule for v in decision.violations] == ["foreign-team-toleration"]


# --- work an input chooses, times the cluster's size ------------------------------------------------------


def _cluster(nodes: int) -> Any:
    from webhook.engine.placement import ClusterView, classify, node_from_api

    team = {"key": "spreadguard.io/team", "value": "vision", "effect": "NoSchedule"}
    infos = [
        node_from_api(
            {
                "metadata": {"name": f"n{i}", "labels": {"kubernetes.io/hostname": f"n{i}", "pool": "a"}},
                "spec": {"taints": [team]},
                "status": {"allocatable": {"nvidia.com/gpu": "8"}},
            }
        )
        for i in range(nodes)
    ]
    return ClusterView(synced=True, classes=classify(infos))


GPU = {"nvidia.com/gpu": 1}
HOST = "kubernetes.io/hostname"


def _deployment(terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ml"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {
                    "affinity": {
                        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
                    },
                    "containers": [
                        {"name": "c", "image": "busybox:1.36", "resources": {"limits": {"nvidia.com/gpu": 1}}}
                    ],
                },
            },
        },
    }


# A node selection of a few hundred KB (far below what the API server stores) on a 5,000-node view. Each
# requirement used to be checked on every node, for every group, on every call (anti-affinity, shortage,
# gang zones): tens of millions of checks, seconds past the budget, so the request was admitted unchecked.
HEAVY_SELECTIONS = {
    "many-expressions-on-pool-labels": [
        {"matchExpressions": [{"key": f"k{i}", "operator": "DoesNotExist"} for i in range(4000)]}
    ],
    "many-terms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]} for _ in range(2000)]
    + [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}],
    "many-hostname-requirements": [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [f"x{i}"]} for i in range(3000)
            ]
        }
    ],
    "long-hostname-list": [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [f"x{i}" for i in range(40000)]}
            ]
        }
    ],
}


@pytest.mark.parametrize("terms", list(HEAVY_SELECTIONS.values()), ids=list(HEAVY_SELECTIONS))
def test_node_selection_work_is_bounded_whatever_the_input(terms: list[dict[str, Any]]) -> None:
    from unittest import mock

    from webhook.engine import placement

    calls = 0
    real = placement._expr_holds

    def counting(expr: dict[str, Any], labels: dict[str, str]) -> bool:
        nonlocal calls
        calls += 1 + len(expr.get("values") or [])
        return real(expr, labels)

    ctx = Context(namespace="ml", namespace_labels={"spreadguard.io/team": "vision"}, cluster=_cluster(5000))
    with mock.patch.object(placement, "_expr_holds", counting):
        decision = evaluate(_deployment(terms), ctx, POLICIES)
    assert decision.allowed and any(n.startswith("anti-affinity:") for n in decision.notes)
    assert calls <= placement.MAX_LABEL_CHECKS + 100_000  # the budget, plus one check per class and requirement


def test_node_selection_within_the_budget_is_counted_node_by_node() -> None:
    # two of the 5,000 nodes allowed by hostname: 4 replicas cannot get a node each, so preferred, with the count
    terms = [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1", "n2"]}]}]
    ctx = Context(namespace="ml", namespace_labels={"spreadguard.io/team": "vision"}, cluster=_cluster(5000))
    decision = evaluate(_deployment(terms), ctx, POLICIES)
    assert any("team vision has 2 eligible nodes" in n for n in decision.notes), decision.notes


# --- work linear in the number of groups ---------------------------------------------------------------------


def _ray_cluster(groups: int) -> dict[str, Any]:
    workers = [
        {"groupName": f"g{i}", "replicas": 1, "template": {"spec": {"containers": [{"name": "w", "image": "ray"}]}}}
        for i in range(groups)
    ]
    head = {"template": {"spec": {"containers": [{"name": "head", "image": "ray"}]}}}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "many", "namespace": "ml"},
        "spec": {"headGroupSpec": head, "workerGroupSpecs": workers},
    }


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_groups_are_never_compared_pairwise(operation: str) -> None:
    """Each group was looked up in the list of touched groups: n^2 comparisons (8,000 worker groups, 1 MB:
    13 s, past the budget, so admitted unchecked)."""
    from unittest import mock

    from webhook.engine.workloads import Group

    compared = 0
    real = Group.__eq__

    def counting(self: Group, other: object) -> bool:
        nonlocal compared
        compared += 1
        return real(self, other)

    groups = 2000
    obj = _ray_cluster(groups)
    old = _ray_cluster(groups)
    old["spec"]["workerGroupSpecs"][0]["replicas"] = 2  # one group rescaled, the rest untouched
    ctx = Context(operation=operation, namespace="ml", old_object=old if operation == "UPDATE" else None)
    with mock.patch.object(Group, "__eq__", counting):
        decision = evaluate(obj, ctx, POLICIES)
    assert decision.policies == ["isolation", "training"]
    assert compared <= 10 * groups


def test_tolerations_are_matched_to_taints_in_linear_time() -> None:
    """Every toleration was tried against every distinct taint set of the cluster, on every call: 20,000
    tolerations (1.5 MB) on a cluster with a few hundred taint sets took seconds, past the budget."""
    from unittest import mock

    from webhook.engine import podspec
    from webhook.engine.placement import ClusterView, classify, node_from_api

    nodes = [
        node_from_api(
            {
                "metadata": {"name": f"n{i}", "labels": {"kubernetes.io/hostname": f"n{i}"}},
                "spec": {"taints": [{"key": f"maintenance-{i}", "value": "x", "effect": "NoSchedule"}]},
                "status": {"allocatable": {"nvidia.com/gpu": "8"}},
            }
        )
        for i in range(300)
    ]
    view = ClusterView(synced=True, classes=classify(nodes))
    tolerations = [
        {"key": f"other-{i}", "operator": "Equal", "value": "v", "effect": "NoSchedule"} for i in range(5000)
    ]
    tolerations.append({"key": "maintenance-7", "operator": "Exists", "effect": "NoSchedule"})
    obj = _deployment([])
    del obj["spec"]["template"]["spec"]["affinity"]
    obj["spec"]["template"]["spec"]["tolerations"] = tolerations
    calls = 0
    real = podspec.tolerates

    def counting(*args: Any) -> bool:
        nonlocal calls
        calls += 1
        return real(*args)

    with mock.patch.object(podspec, "tolerates", counting):
        decision = evaluate(obj, Context(namespace="ml", cluster=view), POLICIES)
    # one node (maintenance-7) is usable: 4 replicas cannot get a node each
    assert any("the cluster has 1 eligible node" in n for n in decision.notes), decision.notes
    assert calls <= 20 * len(tolerations)


TOLERATIONS = [
    {"operator": "Exists"},
    {"operator": "Exists", "effect": "NoExecute"},
    {"key": "", "operator": "Exists"},
    {"key": "team", "operator": "Exists"},
    {"key": "team", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "team", "value": "nlp"},
    {"key": "team", "operator": "Equal", "value": "nlp", "effect": "NoSchedule"},
    {"key": "team", "operator": "Equal", "value": "nlp", "effect": "NoExecute"},
    {"key": "team", "operator": "Equal"},
    {"key": "team", "operator": "Lt", "value": "nlp"},
    {"key": "other", "operator": "Equal", "value": "nlp"},
    {"operator": "Equal", "value": "nlp"},
]
TAINTS = [
    ("team", "nlp", "NoSchedule"),
    ("team", "nlp", "NoExecute"),
    ("team", "", "NoSchedule"),
    ("x", "nlp", "NoSchedule"),
]


@pytest.mark.parametrize("tol", TOLERATIONS, ids=[str(t) for t in TOLERATIONS])
def test_the_toleration_index_agrees_with_tolerates(tol: dict[str, Any]) -> None:
    from webhook.engine import podspec
    from webhook.engine.placement import _Tolerations

    index = _Tolerations([tol])
    assert [index.tolerate(*taint) for taint in TAINTS] == [podspec.tolerates(tol, *taint) for taint in TAINTS]


def test_a_hostname_node_selector_is_looked_up_not_scanned_per_group() -> None:
    """A hostname nodeSelector on each of many groups was matched by walking every node of the cluster, for
    every group on every call: groups (input) times nodes (cluster)."""
    from webhook.engine.placement import ClusterView, NodeClass

    scans = 0

    class Hosts(tuple):  # type: ignore[type-arg]
        def __iter__(self):  # type: ignore[no-untyped-def]
            nonlocal scans
            scans += 1
            return super().__iter__()

        def __contains__(self, item: object) -> bool:
            nonlocal scans
            scans += 1
            return super().__contains__(item)

    hosts = Hosts(f"n{i}" for i in range(5000))
    view = ClusterView(synced=True, classes=(NodeClass((("pool", "a"),), (), (("nvidia.com/gpu", 8),), hosts),))
    groups = 500
    jobs = [
        {
            "name": f"r{i}",
            "replicas": 1,
            "template": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "nodeSelector": {"kubernetes.io/hostname": f"n{i}"},
                            "containers": [{"name": "c", "image": "busybox:1.36", "resources": {"limits": GPU}}],
                        }
                    }
                }
            },
        }
        for i in range(groups)
    ]
    obj = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "js", "namespace": "ml"},
        "spec": {"replicatedJobs": jobs},
    }
    scans = 0
    decision = evaluate(obj, Context(namespace="ml", cluster=view), POLICIES)
    assert "training" in decision.policies
    assert scans <= 10, scans


def _distinct_nodes(count: int) -> Any:
    """A view where every node carries a label of its own (an instance id, a rack slot): one class per node."""
    from webhook.engine.placement import ClusterView, classify, node_from_api

    infos = [
        node_from_api(
            {
                "metadata": {"name": f"n{i}", "labels": {"kubernetes.io/hostname": f"n{i}", "host-id": str(i)}},
                "status": {"allocatable": {"nvidia.com/gpu": "8"}},
            }
        )
        for i in range(count)
    ]
    return ClusterView(synced=True, classes=classify(infos))


def test_groups_times_distinct_nodes_is_bounded() -> None:
    """1,000 GPU worker groups (180 KB) on 5,000 nodes that each carry a label of their own: every group was
    checked against every node class on every call (18 s, past the budget: admitted unchecked)."""
    from unittest import mock

    from webhook.engine import placement

    calls = 0
    real = placement._selected

    def counting(*args: Any) -> int:
        nonlocal calls
        calls += 1
        return real(*args)

    cluster = _ray_cluster(1000)
    for w in cluster["spec"]["workerGroupSpecs"]:
        w["replicas"] = 2
        w["template"]["spec"]["containers"][0]["resources"] = {"limits": GPU}
    with mock.patch.object(placement, "_selected", counting):
        decision = evaluate(cluster, Context(namespace="ml", cluster=_distinct_nodes(5000)), POLICIES)
    assert sum(n.startswith("anti-affinity:") for n in decision.notes) == 1000
    assert calls <= placement.MAX_LABEL_CHECKS // 2


def test_without_a_node_selection_nodes_are_counted_from_the_folded_view() -> None:
    from webhook.engine.placement import eligible_by_label, eligible_nodes

    view = _distinct_nodes(5000)
    assert len(view.classes) == 5000 and len(view.folded()) == 1
    spec = {"containers": [{"name": "c", "image": "busybox:1.36", "resources": {"limits": GPU}}]}
    assert eligible_nodes(view, spec, ["nvidia.com/gpu"]) == 5000
    assert eligible_by_label(view, spec, ["nvidia.com/gpu"], "host-id")["7"] == (1, 8)
    selected = {**spec, "nodeSelector": {"host-id": "7"}}
    assert eligible_nodes(view, selected, ["nvidia.com/gpu"]) == 1


def test_groups_with_the_same_node_selection_share_one_exact_count() -> None:
    """The budget must not cost a large legitimate workload its precision: its groups share one node selection
    (health avoidance adds the same node affinity to each), counted once per evaluation."""
    from webhook.engine.placement import ClusterView, classify, node_from_api

    flagged = {"gke.google.com/recommended-to-run-large-training-workload": "false"}
    infos = [
        node_from_api(
            {
                "metadata": {
                    "name": f"n{i}",
                    "labels": {"kubernetes.io/hostname": f"n{i}", "host-id": str(i), **(flagged if i % 2 else {})},
                },
                "status": {"allocatable": {"nvidia.com/gpu": "8"}},
            }
        )
        for i in range(5000)
    ]
    cluster = _ray_cluster(300)
    for w in cluster["spec"]["workerGroupSpecs"]:
        w["replicas"] = 2
        w["template"]["spec"]["containers"][0]["resources"] = {"limits": GPU}
    view = ClusterView(synced=True, classes=classify(infos))
    decision = evaluate(cluster, Context(namespace="ml", cluster=view), POLICIES)
    counted = [n for n in decision.notes if n.startswith("anti-affinity:")]
    assert len(counted) == 300 and all("(2500 eligible nodes for 2 pods" in n for n in counted), counted[-1]
    assert not any("node selection too large" in i for i in decision.info)


# A loosely typed CRD template reaches the mutating webhook before any schema check: shapes the
# PodSpec schema would refuse must still get a decision (a crash admits unchecked).
MALFORMED_TERMS = [
    {"matchExpressions": {"key": "x"}},
    {"matchExpressions": "x"},
    {
        "matchExpressions": [
            {
                "key": "gke.google.com/recommended-to-run-large-training-workload",
                "operator": "NotIn",
                "values": [{"a": 1}],
            }
        ]
    },
]


@pytest.mark.parametrize("term", MALFORMED_TERMS, ids=["dict", "string", "unhashable-values"])
def test_malformed_node_selector_terms_are_decided_not_crashed(term: dict[str, Any]) -> None:
    pod = _pod(
        {"nvidia.com/gpu": "1"},
        tolerations=[FOREIGN],
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}},
    )
    ctx = Context(namespace="ml", namespace_labels={"spreadguard.io/team": "vision"})
    decision = evaluate(pod, ctx, POLICIES)
    assert [v.rule for v in decision.violations] == ["foreign-team-toleration"]
    terms = decision.mutated["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    first = terms["nodeSelectorTerms"][0]
    if isinstance(term["matchExpressions"], list):  # the user's expression kept, spreadguard's added after it
        assert first["matchExpressions"][0] == term["matchExpressions"][0] and len(first["matchExpressions"]) == 2
    else:  # nothing can be added safely to a malformed term: left as written
        assert first == term
