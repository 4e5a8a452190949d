"""single-node-pinning by a label only one node carries (from the cluster view) and self-colocation with any
pod set on the hostname key: the two ways a multi-replica group ends up on one node without naming a host."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import REPO

from webhook.engine.decide import evaluate
from webhook.engine.placement import ClusterView, WorkMeter, classify_records, cordoned, node_from_api, record
from webhook.engine.policy import load_policies
from webhook.engine.target import Context

POLICIES = load_policies(REPO / "policies")
HOST = "kubernetes.io/hostname"
HEALTH = "gke.google.com/recommended-to-run-large-training-workload"  # policies/training.yaml avoidNodeLabels
GPU = [{"name": "t", "image": "busybox:1.36", "resources": {"limits": {"nvidia.com/gpu": 1}}}]


def node(name: str, unschedulable: bool = False, taint: str | None = None, **labels: str) -> dict[str, Any]:
    taints = [{"key": "spreadguard.io/team", "value": taint, "effect": "NoSchedule"}] if taint else []
    return {
        "metadata": {"name": name, "labels": {HOST: name, **{k.replace("__", "/"): v for k, v in labels.items()}}},
        "spec": {"taints": taints, "unschedulable": unschedulable},
        "status": {"allocatable": {"nvidia.com/gpu": "8"}},
    }


def view(*nodes: dict[str, Any]) -> ClusterView:
    records = [record(node_from_api(n)) for n in nodes]
    return ClusterView(synced=True, classes=classify_records(records), cordoned=cordoned(records))


# r1..r3 share pool=h100 and each carries a rack slot of its own; r3 is another team's (tainted); a1 and the
# cordoned c1 share pool=a100; b1 and b2 share pool=b200, b1 flagged by GPU health checks
CLUSTER = view(
    node("r1", pool="h100", rack_slot="r1-u1"),
    node("r2", pool="h100", rack_slot="r1-u2"),
    node("r3", pool="h100", rack_slot="r1-u3", taint="nlp"),
    node("a1", pool="a100", instance_id="i-a1"),
    node("c1", unschedulable=True, pool="a100", instance_id="i-c1"),
    node("b1", pool="b200", **{HEALTH.replace("/", "__"): "false"}),
    node("b2", pool="b200"),
)


def job(replicas: int, **spec: Any) -> dict[str, Any]:
    """A GPU Job of ``replicas`` parallel pods (class replicas, training policy: health avoidance applies)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "sweep", "namespace": "ml"},
        "spec": {
            "parallelism": replicas,
            "template": {"spec": {"restartPolicy": "Never", "containers": GPU, **spec}},
        },
    }


def pytorchjob(elastic: bool, **spec: Any) -> dict[str, Any]:
    """A PyTorchJob with 4 workers: a synchronous gang, or elastic (min < max)."""
    obj: dict[str, Any] = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "pt", "namespace": "ml"},
        "spec": {
            "pytorchReplicaSpecs": {
                "Worker": {"replicas": 4, "template": {"spec": {"containers": GPU, **spec}}},
            }
        },
    }
    if elastic:
        obj["spec"]["elasticPolicy"] = {"minReplicas": 2, "maxReplicas": 4, "rdzvBackend": "c10d"}
    return obj


def deployment(replicas: int, **spec: Any) -> dict[str, Any]:
    """A serving Deployment (class replicas)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ml", "labels": {"spreadguard.io/workload": "serving"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": GPU, **spec}},
        },
    }


def required_nodes(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": exprs} for exprs in terms]
            }
        }
    }


def pod_affinity(term: dict[str, Any], required: bool = True) -> dict[str, Any]:
    if required:
        return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    weighted = [{"weight": 50, "podAffinityTerm": term}]
    return {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": weighted}}


def anchor(key: str = HOST, **extra: Any) -> dict[str, Any]:
    return {"labelSelector": {"matchLabels": {"app": "anchor"}}, "topologyKey": key, **extra}


def violations(obj: dict[str, Any], cluster: ClusterView | None = CLUSTER) -> list[tuple[str, str, str]]:
    d = evaluate(obj, Context(namespace="ml", cluster=cluster), POLICIES)
    return [(v.rule, v.path, v.message) for v in d.violations]


# --- single-node-pinning by a label one node carries ---------------------------------------------------------

SEL = "spec.template.spec.nodeSelector"
AFF = "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
WORKER_SEL = "spec.pytorchReplicaSpecs.Worker.template.spec.nodeSelector"

PINNING_CASES: list[tuple[str, dict[str, Any], ClusterView | None, tuple[str, str] | None]] = [
    # (id, object, cluster view, (path, message fragment) of the denial or None when allowed)
    (
        "rack-slot-node-selector",
        job(3, nodeSelector={"rack_slot": "r1-u1"}),
        CLUSTER,
        (SEL, "group pods (3 replicas) can only run on node r1: nodeSelector rack_slot=r1-u1 matches no other"),
    ),
    (
        "required-affinity-on-a-unique-label",
        job(2, affinity=required_nodes([{"key": "rack_slot", "operator": "In", "values": ["r1-u2"]}])),
        CLUSTER,
        (AFF, "group pods (2 replicas) can only run on node r2: required node affinity matches no other"),
    ),
    (
        "tainted-node-counts-by-selection",  # another team's taint does not make the pin safe
        job(3, nodeSelector={"rack_slot": "r1-u3"}),
        CLUSTER,
        (SEL, "can only run on node r3:"),
    ),
    (
        "hostname-notin-leaves-one",
        job(
            3,
            nodeSelector={"pool": "h100"},
            affinity=required_nodes([{"key": HOST, "operator": "NotIn", "values": ["r1", "r2"]}]),
        ),
        CLUSTER,
        (SEL, "can only run on node r3: nodeSelector pool=h100 and required node affinity match no other"),
    ),
    (
        "only-a-cordoned-node",
        job(2, nodeSelector={"instance_id": "i-c1"}),
        CLUSTER,
        (SEL, "can only run on node c1 (cordoned):"),
    ),
    (
        "gang-pinned-by-label",  # single-node-pinning applies to gangs, as it does for hostname pins
        pytorchjob(False, nodeSelector={"rack_slot": "r1-u1"}),
        CLUSTER,
        (WORKER_SEL, "group Worker (4 replicas) can only run on node r1:"),
    ),
    ("near-miss-shared-pool-label", job(3, nodeSelector={"pool": "h100"}), CLUSTER, None),
    ("near-miss-one-replica", job(1, nodeSelector={"rack_slot": "r1-u1"}), CLUSTER, None),
    (
        "near-miss-terms-ored-two-nodes",
        job(
            2,
            affinity=required_nodes(
                [{"key": "rack_slot", "operator": "In", "values": ["r1-u1"]}],
                [{"key": "rack_slot", "operator": "In", "values": ["r1-u2"]}],
            ),
        ),
        CLUSTER,
        None,
    ),
    # the cordoned node still carries the label: the selection is a pool of two (cordons come and go)
    ("near-miss-pool-with-a-cordoned-node", job(2, nodeSelector={"pool": "a100"}), CLUSTER, None),
    # b1 is flagged by health checks, so health avoidance keeps the pods off it: that is not the user's pin
    ("near-miss-health-avoidance-is-not-a-pin", job(2, nodeSelector={"pool": "b200"}), CLUSTER, None),
    ("near-miss-no-cluster-view", job(3, nodeSelector={"rack_slot": "r1-u1"}), None, None),
    (
        "near-miss-unsynced-view",
        job(3, nodeSelector={"rack_slot": "r1-u1"}),
        ClusterView(synced=False, error="API unreachable"),
        None,
    ),
    (
        "near-miss-one-node-cluster",  # the selection excludes no node: the cluster is the limit, not the pin
        job(2, nodeSelector={"kubernetes.io/os": "linux"}),
        view(node("solo", **{"kubernetes.io__os": "linux"})),
        None,
    ),
]


@pytest.mark.parametrize(
    ("obj", "cluster", "expected"), [c[1:] for c in PINNING_CASES], ids=[c[0] for c in PINNING_CASES]
)
def test_single_node_pinning_by_label(
    obj: dict[str, Any], cluster: ClusterView | None, expected: tuple[str, str] | None
) -> None:
    found = [v for v in violations(obj, cluster) if v[0] == "single-node-pinning"]
    if expected is None:
        assert found == []
        return
    path, fragment = expected
    assert len(found) == 1, found
    assert found[0][1] == path
    assert fragment in found[0][2], found[0][2]
    assert found[0][2].endswith(
        "one node failure stops every replica. Fix: remove the pin, or select a pool of nodes by a label they "
        "share (e.g. node.kubernetes.io/instance-type) so replicas land on different nodes"
    )


def test_pinning_by_label_is_left_unjudged_past_the_budget() -> None:
    """The count is bounded by the evaluation's meter; what it cannot pay for is not known, never denied."""
    from webhook.engine.placement import selection_hosts

    spec = {"nodeSelector": {"rack_slot": "r1-u1"}}
    assert selection_hosts(CLUSTER, spec, WorkMeter()) == ("r1",)
    assert selection_hosts(CLUSTER, {"nodeSelector": {"pool": "h100"}}, WorkMeter()) == ("r1", "r2")
    starved = WorkMeter(limit=1)  # a class check costs 1 + the selection's requirements (here 2)
    assert selection_hosts(CLUSTER, spec, starved) is None and starved.exhausted
    notin = {"affinity": required_nodes([{"key": "rack_slot", "operator": "NotIn", "values": ["r1-u2", "r1-u3"]}])}
    starved = WorkMeter(limit=10)  # NotIn narrows nothing by index: every class is checked, past this budget
    assert selection_hosts(CLUSTER, notin, starved) is None and starved.exhausted
    assert selection_hosts(CLUSTER, notin, WorkMeter()) == ("r1", "a1")


# --- self-colocation with any pod set on the hostname key ---------------------------------------------------

POD_AFF = "spec.template.spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"
WORKER_AFF = "spec.pytorchReplicaSpecs.Worker.template." + POD_AFF.removeprefix("spec.template.")
ANCHOR_MSG = "requires each pod on a node that runs a pod selected by app=anchor"

COLOCATION_CASES: list[tuple[str, dict[str, Any], tuple[str, str] | None]] = [
    ("anchor-deployment", deployment(3, affinity=pod_affinity(anchor())), (POD_AFF, ANCHOR_MSG)),
    ("anchor-replicas-job", job(2, affinity=pod_affinity(anchor())), (POD_AFF, ANCHOR_MSG)),
    (
        "anchor-in-other-namespaces",
        deployment(3, affinity=pod_affinity(anchor(namespaceSelector={"matchLabels": {"team": "infra"}}))),
        (POD_AFF, ANCHOR_MSG),
    ),
    ("anchor-elastic-workers", pytorchjob(True, affinity=pod_affinity(anchor())), (WORKER_AFF, ANCHOR_MSG)),
    ("anchor-gang-workers", pytorchjob(False, affinity=pod_affinity(anchor())), (WORKER_AFF, ANCHOR_MSG)),
    (
        "self-still-its-own-message",
        deployment(3, affinity=pod_affinity({"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": HOST})),
        (POD_AFF, "group pods (3 replicas) requires its pods on the same node as each other"),
    ),
    ("near-miss-preferred-anchor", deployment(3, affinity=pod_affinity(anchor(), required=False)), None),
    ("near-miss-zone-key", deployment(3, affinity=pod_affinity(anchor("topology.kubernetes.io/zone"))), None),
    ("near-miss-one-replica", deployment(1, affinity=pod_affinity(anchor())), None),
    # spreadguard's own gang compaction is preferred hostname affinity: a gang without affinity passes
    ("near-miss-gang-compaction-injected", pytorchjob(False), None),
]


@pytest.mark.parametrize(("obj", "expected"), [c[1:] for c in COLOCATION_CASES], ids=[c[0] for c in COLOCATION_CASES])
def test_self_colocation_with_any_pod_set(obj: dict[str, Any], expected: tuple[str, str] | None) -> None:
    found = [v for v in violations(obj, None) if v[0] == "self-colocation"]
    if expected is None:
        assert found == []
        return
    path, fragment = expected
    assert [v[1] for v in found] == [path]
    assert fragment in found[0][2], found[0][2]


def test_an_anchor_denial_says_why_and_how_to_fix() -> None:
    [(_rule, _path, message)] = [v for v in violations(deployment(3, affinity=pod_affinity(anchor())), None)]
    assert message == (
        "group pods (3 replicas) requires each pod on a node that runs a pod selected by app=anchor "
        "(topologyKey kubernetes.io/hostname): when that is one pod, or pods on one node, every replica lands on "
        "that node and one node failure stops them all. Fix: make this term preferred, use a rack/zone topology "
        "key, or, if the selected pods run on every node of a pool (a DaemonSet), select that pool by a node "
        "label instead"
    )


def _distinct(count: int) -> ClusterView:
    """``count`` nodes that each carry a rack slot of their own (one class per node) and share pool=a."""
    records = [
        record(node_from_api(node(f"n{i}", pool="a", **{"example.com__rack-slot": f"s{i}"}))) for i in range(count)
    ]
    return ClusterView(synced=True, classes=classify_records(records), cordoned=cordoned(records))


def test_a_pin_padded_past_the_budget_is_still_found() -> None:
    """A pin on a label one node carries, padded with requirements every node meets (300 DoesNotExist on keys no
    node has): checking every one of 5,000 classes would cost 1.5 M label checks, past the evaluation's budget, so
    the count was unknown and the pin admitted. The nodes that can match are looked up by the narrowing
    requirement (an indexed label), so the check costs what the matching nodes cost, not the cluster's size."""
    padding = [{"key": f"junk-{i}", "operator": "DoesNotExist"} for i in range(300)]
    pin = [{"key": "example.com/rack-slot", "operator": "In", "values": ["s7"]}, *padding]
    obj = job(3, affinity=required_nodes(pin))
    found = [v for v in violations(obj, _distinct(5000)) if v[0] == "single-node-pinning"]
    assert [v[1] for v in found] == [AFF] and "can only run on node n7:" in found[0][2]
    meter = WorkMeter()
    assert selection_hosts_of(_distinct(5000), {"nodeSelector": {"pool": "a", "example.com/rack-slot": "s7"}}, meter)
    assert meter.spent < 100


def test_pool_selections_padded_past_the_budget_stay_unknown_not_denied() -> None:
    """Requirements that narrow nothing (NotIn, DoesNotExist) on every class past the budget: unknown, admitted."""
    padding = [{"key": f"junk-{i}", "operator": "DoesNotExist"} for i in range(300)]
    obj = job(
        3, affinity=required_nodes([{"key": "example.com/rack-slot", "operator": "NotIn", "values": ["s1"]}, *padding])
    )
    assert [v for v in violations(obj, _distinct(5000)) if v[0] == "single-node-pinning"] == []


def selection_hosts_of(view: ClusterView, spec: dict[str, Any], meter: WorkMeter) -> tuple[str, ...] | None:
    from webhook.engine.placement import selection_hosts

    return selection_hosts(view, spec, meter)


NODES = [
    ("r1", {"pool": "h100", "rack_slot": "r1-u1"}),
    ("r2", {"pool": "h100", "rack_slot": "r1-u2"}),
    ("r3", {"pool": "h100", "rack_slot": "r1-u3"}),
    ("a1", {"pool": "a100", "instance_id": "i-a1"}),
    ("c1", {"pool": "a100", "instance_id": "i-c1"}),  # cordoned in CLUSTER
    ("b1", {"pool": "b200", HEALTH: "false"}),
    ("b2", {"pool": "b200"}),
]
SELECTIONS = [
    {"nodeSelector": {"pool": "a100"}},
    {"nodeSelector": {"pool": "a100", "instance_id": "i-c1"}},
    {"nodeSelector": {"pool": "h100", "rack_slot": "r9"}},
    {"affinity": required_nodes([{"key": "rack_slot", "operator": "In", "values": ["r1-u3", "r1-u1"]}])},
    {"affinity": required_nodes([{"key": "instance_id", "operator": "Exists"}])},
    {
        "affinity": required_nodes(
            [{"key": "instance_id", "operator": "DoesNotExist"}, {"key": "pool", "operator": "In", "values": ["b200"]}]
        )
    },
    {
        "affinity": required_nodes(
            [{"key": "rack_slot", "operator": "In", "values": ["r1-u2"]}],
            [{"key": "pool", "operator": "NotIn", "values": ["h100", "b200"]}],
        )
    },
    {"nodeSelector": {"pool": "b200"}, "affinity": required_nodes([{"key": HEALTH, "operator": "Exists"}])},
]


@pytest.mark.parametrize("spec", SELECTIONS)
def test_selection_hosts_agree_with_checking_every_node(spec: dict[str, Any]) -> None:
    from webhook.engine.placement import _expr_holds, selection_hosts

    def allows(name: str, labels: dict[str, str]) -> bool:
        labels = {HOST: name, **labels}
        if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
            return False
        terms = spec.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
        return not terms or any(
            all(_expr_holds(e, labels) for e in t["matchExpressions"]) for t in terms["nodeSelectorTerms"]
        )

    expected = sorted(name for name, labels in NODES if allows(name, labels))
    assert sorted(selection_hosts(CLUSTER, spec, WorkMeter(), upto=len(NODES)) or ()) == expected


MALFORMED = {
    "non-string-node-selector-values": {"nodeSelector": {"pool": 5, "rack_slot": ["r1-u1"]}},
    "non-dict-terms-and-values": {
        "affinity": required_nodes(["y", {"key": "rack_slot", "operator": "In", "values": 5}])  # type: ignore[list-item]
    },
    "non-string-keys-and-values": {
        "affinity": required_nodes(
            [{"key": 7, "operator": "Exists"}, {"key": "rack_slot", "operator": "In", "values": [{"a": 1}, "r1-u1"]}]
        )
    },
}


@pytest.mark.parametrize("spec", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_selection_in_a_crd_template_is_decided_not_crashed(spec: dict[str, Any]) -> None:
    """A CRD's template is not validated like a Pod's: a selection the API server would refuse for the pods pins
    nothing (they are never created) and must not crash the evaluation (which would admit unchecked)."""
    assert [v for v in violations(pytorchjob(True, **spec)) if v[0] == "single-node-pinning"] == []
