"""Placement classes decide what is injected (design.md, placement doctrine): policy overrides, the
workload label, spreading gangs on request, the one-zone decision from the node view, and the numbers
in the notes. Cases without policy changes live in policies/tests/placement.yaml."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from conftest import REPO

from webhook.engine import model
from webhook.engine.classes import Gang, restarts_per_30_days
from webhook.engine.decide import evaluate
from webhook.engine.placement import ClusterView, classify, node_from_api
from webhook.engine.policy import Placement, PlacementOverride, Policy, load_policies
from webhook.engine.target import Context

POLICIES = load_policies(REPO / "policies")
TRAINING = next(p for p in POLICIES if p.name == "training")
TEAM = "spreadguard.io/team"


def with_placement(**kw: Any) -> Policy:
    spec = TRAINING.spec.model_copy(update={"placement": Placement(**kw)})
    return TRAINING.model_copy(update={"spec": spec})


def pytorchjob(workers: int = 4, gpus: int = 2, labels: dict | None = None) -> dict:
    def template() -> dict:
        return {
            "metadata": {"labels": {TEAM: "vision"}},
            "spec": {"containers": [{"name": "p", "image": "x", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]},
        }

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "bert", "namespace": "ml", "labels": labels or {}},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "template": template()},
                "Worker": {"replicas": workers, "template": template()},
            }
        },
    }


def node(name: str, zone: str | None) -> dict:
    labels = {"kubernetes.io/hostname": name, **({"topology.kubernetes.io/zone": zone} if zone else {})}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [{"key": TEAM, "value": "vision", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"nvidia.com/gpu": "8"}},
    }


def cluster(*nodes: dict) -> ClusterView:
    return ClusterView(synced=True, classes=classify(node_from_api(n) for n in nodes))


TWELVE = cluster(*(node(f"{z}{i}", f"zone-{z}") for z in "abc" for i in range(4)))


def worker(d: Any) -> dict:
    return d.mutated["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]


def test_spread_gangs_option_gives_gangs_hostname_anti_affinity_and_keeps_one_zone() -> None:
    d = evaluate(pytorchjob(), Context(namespace="ml", cluster=TWELVE), [with_placement(spreadGangs=True)])
    spec = worker(d)
    assert spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == (
        "kubernetes.io/hostname"
    )
    zone = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert [t["topologyKey"] for t in zone] == ["topology.kubernetes.io/zone"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in spec["affinity"]["podAffinity"]  # no packing


def test_policy_override_by_kind_and_group() -> None:
    override = PlacementOverride(kinds=["PyTorchJob"], groups=["Work*"], placement="replicas")
    d = evaluate(pytorchjob(), Context(namespace="ml"), [with_placement(overrides=[override])])
    assert "podAntiAffinity" in worker(d)["affinity"]
    master = d.mutated["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert "podAntiAffinity" not in (master.get("affinity") or {})  # the Master stays a gang member
    other = PlacementOverride(kinds=["MPIJob"], placement="replicas")
    d = evaluate(pytorchjob(), Context(namespace="ml"), [with_placement(overrides=[other])])
    assert "podAntiAffinity" not in worker(d)["affinity"]


@pytest.mark.parametrize(
    ("mode", "label", "spread"),
    [
        ("spreadOnly", "replicas", True),
        ("spreadOnly", "gang", False),  # already a gang: the label changes nothing
        ("ignore", "replicas", False),
        ("any", "replicas", True),
    ],
)
def test_workload_label_on_a_gang(mode: str, label: str, spread: bool) -> None:
    obj = pytorchjob(labels={"spreadguard.io/placement": label})
    d = evaluate(obj, Context(namespace="ml"), [with_placement(workloadLabel=mode)])
    assert ("podAntiAffinity" in worker(d).get("affinity", {})) == spread


def test_workload_label_any_lets_a_deployment_be_a_gang() -> None:
    obj = yaml.safe_load((REPO / "examples" / "deployment.yaml").read_text())
    obj["spec"]["template"]["metadata"]["labels"]["spreadguard.io/placement"] = "gang"
    serving = next(p for p in POLICIES if p.name == "serving")
    anyone = serving.model_copy(
        update={"spec": serving.spec.model_copy(update={"placement": Placement(workloadLabel="any")})}
    )
    d = evaluate(obj, Context(namespace="ml"), [anyone])
    spec = d.mutated["spec"]["template"]["spec"]
    assert "podAntiAffinity" not in spec.get("affinity", {}) and "topologySpreadConstraints" not in spec
    d = evaluate(obj, Context(namespace="ml"), [serving])  # spreadOnly: ignored, and said so
    assert "podAntiAffinity" in d.mutated["spec"]["template"]["spec"]["affinity"]
    assert any("spreadguard.io/placement=gang ignored" in i for i in d.info)


def test_unknown_label_value_is_ignored_with_a_note() -> None:
    d = evaluate(pytorchjob(labels={"spreadguard.io/placement": "scatter"}), Context(namespace="ml"), [TRAINING])
    assert any("'scatter' is not a class" in i for i in d.info)
    assert "podAntiAffinity" not in worker(d)["affinity"]


def test_nodes_without_a_zone_label_keep_the_zone_affinity_preferred() -> None:
    """The first pod of a gang could land on a node without a zone: required would strand the rest."""
    view = cluster(*(node(f"n{i}", None) for i in range(4)), node("z1", "zone-a"), node("z2", "zone-a"))
    d = evaluate(pytorchjob(), Context(namespace="ml", cluster=view), [TRAINING])
    pod_affinity = worker(d)["affinity"]["podAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod_affinity
    assert any("4 eligible nodes have no topology.kubernetes.io/zone label" in n for n in d.notes)


def test_gang_of_whole_nodes_is_not_packed_and_says_why() -> None:
    d = evaluate(pytorchjob(gpus=8), Context(namespace="ml", cluster=TWELVE), [TRAINING])
    preferred = worker(d)["affinity"]["podAffinity"].get("preferredDuringSchedulingIgnoredDuringExecution") or []
    # 8-GPU pods cannot share an 8-GPU node: no packing term; 5 nodes do not fit a 4-node zone: zone preferred
    assert [t["podAffinityTerm"]["topologyKey"] for t in preferred] == ["topology.kubernetes.io/zone"]
    assert any("zone zone-a has 4 eligible nodes, the gang needs 5" in n for n in d.notes)
    assert any(
        "gang bert (5 pods x 8 GPUs): needs 5 nodes either way (8-GPU nodes); kept in one zone" in n for n in d.notes
    )


def test_gang_arithmetic() -> None:
    gang = Gang("bert", ((1, 2), (4, 2)), ())
    assert (gang.pods, gang.gpus, gang.min_nodes(8), gang.min_nodes(4)) == (5, 10, 2, 3)
    mixed = Gang("mix", ((1, 0), (3, 3)), ())
    assert mixed.min_nodes(8) == 2 and mixed.describe() == "gang mix (4 pods, 9 GPUs)"
    assert Gang("cpu", ((4, 0),), ()).min_nodes(8) is None
    assert restarts_per_30_days(2) == pytest.approx(1.14) and restarts_per_30_days(5) == pytest.approx(2.85)


def test_second_evaluation_adds_nothing() -> None:
    """Idempotent: the mutated gang evaluated again gets an empty patch."""
    d = evaluate(pytorchjob(), Context(namespace="ml", cluster=TWELVE), POLICIES)
    again = evaluate(d.mutated, Context(namespace="ml", cluster=TWELVE), POLICIES)
    assert d.patch and again.patch == []


@pytest.mark.parametrize(
    ("autoscaling", "expected"), [(True, "elastic"), (False, "replicas"), (None, "replicas")], ids=str
)
def test_ray_worker_group_is_elastic_only_with_in_tree_autoscaling(autoscaling: bool | None, expected: str) -> None:
    obj = yaml.safe_load((REPO / "examples" / "raycluster.yaml").read_text())
    obj["spec"].pop("enableInTreeAutoscaling", None)
    if autoscaling is not None:
        obj["spec"]["enableInTreeAutoscaling"] = autoscaling
    obj["spec"]["workerGroupSpecs"][0].update({"minReplicas": 1, "maxReplicas": 8})
    workload = model.read(obj)
    assert workload is not None
    assert {m.group.name: m.group.placement for m in workload.groups}["gpu-workers"] == expected


def test_leaderworkerset_group_is_a_gang_and_leaders_are_replicas() -> None:
    obj = yaml.safe_load((REPO / "examples" / "leaderworkerset.yaml").read_text())
    workload = model.read(obj)
    assert workload is not None
    got = {m.group.name: (m.group.placement, m.group.gang_keys) for m in workload.groups}
    assert got == {"leader": ("replicas", ()), "worker": ("gang", ("leaderworkerset.sigs.k8s.io/group-index",))}


@pytest.mark.parametrize(
    ("strategy", "surge"),
    [
        (None, 1),  # default maxSurge 25% of 3, rounded up
        ({"type": "Recreate"}, 0),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2}}, 2),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%"}}, 3),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "lots"}}, 1),  # malformed: the default
    ],
)
def test_deployment_surge(strategy: dict | None, surge: int) -> None:
    obj = yaml.safe_load((REPO / "examples" / "deployment.yaml").read_text())
    if strategy is not None:
        obj["spec"]["strategy"] = strategy
    workload = model.read(obj)
    assert workload is not None and workload.groups[0].group.surge == surge


def test_unschedulable_spread_never_denies_a_gang_that_is_not_spread() -> None:
    """onShortage: deny judges the anti-affinity spreadguard would add; a compact gang gets none."""
    anti = TRAINING.spec.mutate.antiAffinity
    assert anti is not None
    strict_mutate = TRAINING.spec.mutate.model_copy(
        update={"antiAffinity": anti.model_copy(update={"onShortage": "deny"})}
    )
    strict = TRAINING.model_copy(update={"spec": TRAINING.spec.model_copy(update={"mutate": strict_mutate})})
    small = cluster(node("a1", "zone-a"), node("a2", "zone-a"))
    assert evaluate(pytorchjob(workers=6, gpus=8), Context(namespace="ml", cluster=small), [strict]).allowed
    spread = strict.model_copy(
        update={"spec": strict.spec.model_copy(update={"placement": Placement(spreadGangs=True)})}
    )
    d = evaluate(pytorchjob(workers=6, gpus=8), Context(namespace="ml", cluster=small), [spread])
    assert [v.rule for v in d.violations] == ["unschedulable-spread"]
