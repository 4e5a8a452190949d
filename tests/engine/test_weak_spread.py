"""A tenant's own weak spread does not switch spreadguard's spreading off (mutators/anti_affinity.py,
mutators/topology_spread.py, rules/weak_spread.py): what counts as spread, what a later policy of the same
evaluation sees of an earlier one's additions, the Pod backstop on pods of a mutated workload, and the
API server's rules for what is added (tests/engine/apirules.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
from apirules import pod_spec_errors
from conftest import REPO

from webhook.engine import labels as labelsel
from webhook.engine import workloads
from webhook.engine.cases import case_context
from webhook.engine.decide import evaluate
from webhook.engine.policy import Policy, load_policies, parse_policy_text
from webhook.engine.target import Context

POLICIES = load_policies(REPO / "policies")
ZONE, HOST = "topology.kubernetes.io/zone", "kubernetes.io/hostname"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def deployment(spec: dict[str, Any] | None = None, replicas: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llm", "namespace": "ml"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "llm"}},
            "template": {
                "metadata": {"labels": {"app": "llm", "spreadguard.io/team": "vision"}},
                "spec": {
                    **(spec or {}),
                    "containers": [{"name": "vllm", "image": "vllm", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
                },
            },
        },
    }


def weak_preferred(weight: int = 1) -> dict[str, Any]:
    term = {"labelSelector": {"matchLabels": {"app": "llm"}}, "topologyKey": HOST}
    return {"affinity": {"podAntiAffinity": {PREFERRED: [{"weight": weight, "podAffinityTerm": term}]}}}


def cluster(nodes: int, team: bool = True) -> Context:
    """A synced view of ``nodes`` 8-GPU nodes, tainted for team vision (the shipped policies add its toleration)."""
    taint = [{"key": "spreadguard.io/team", "value": "vision", "effect": "NoSchedule"}] if team else []
    specs = [{"name": f"gpu-{i}", "taints": taint, "allocatable": {"nvidia.com/gpu": "8"}} for i in range(nodes)]
    return case_context({"request": {"nodes": specs}}, {"metadata": {"namespace": "ml"}}, REPO)


def policies(*docs: str) -> list[Policy]:
    out, problems = parse_policy_text("\n---\n".join(docs), "inline.yaml")
    assert problems == []
    return out


def policy(name: str, mutate: str, rules: str = "{}") -> str:
    return f"""
apiVersion: spreadguard.io/v1alpha1
kind: HAPolicy
metadata: {{name: {name}}}
spec:
  mode: enforce
  match: {{any: [{{kinds: [Deployment, Pod]}}]}}
  mutate: {mutate}
  rules: {rules}
"""


def anti(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]["template"]["spec"] if obj["kind"] != "Pod" else obj["spec"]
    return (spec.get("affinity") or {}).get("podAntiAffinity") or {}


def constraints(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["template"]["spec"].get("topologySpreadConstraints") or []


# ------------------------------------------------------------- several policies in one evaluation


def test_a_later_policy_adds_no_required_term_on_an_earlier_policys_preferred_one() -> None:
    """Earlier policy's addition wins: ``a-preferred`` adds a preferred term, ``b-required`` (later by name)
    sees it as spreadguard's own (in the copy, not in the submitted template) and adds nothing."""
    both = policies(
        policy("a-preferred", "{antiAffinity: {mode: preferred, weight: 40}}"),
        policy("b-required", "{antiAffinity: {mode: required}}"),
    )
    d = evaluate(deployment(), Context(namespace="ml"), both)
    assert anti(d.mutated) == {
        PREFERRED: [
            {"weight": 40, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "llm"}}, "topologyKey": HOST}}
        ]
    }
    assert [n.split(":")[0] for n in d.notes] == ["anti-affinity"]


def test_the_tenants_weak_preferred_term_does_not_count_for_either_policy() -> None:
    """With the tenant's weight-1 term: the preferred policy adds nothing (its own choice is preferred and a
    preferred term is there, and it says so), the required one adds required (the cluster holds it), noting the
    tenant's weight."""
    both = policies(
        policy("a-preferred", "{antiAffinity: {mode: preferred, weight: 40}}"),
        policy("b-required", "{antiAffinity: {mode: required}}"),
    )
    d = evaluate(deployment(weak_preferred()), cluster(5, team=False), both)  # holds required
    assert len(anti(d.mutated)[PREFERRED]) == 1
    assert anti(d.mutated)[REQUIRED] == [{"labelSelector": {"matchLabels": {"app": "llm"}}, "topologyKey": HOST}]
    assert any("weight 1; the policy's weight is 40" in w for w in d.warnings), d.warnings
    assert any(
        "the template's own preferred anti-affinity (weight 1) does not keep replicas apart: required added" in n
        for n in d.notes
    ), d.notes


def test_a_dryrun_policy_after_an_enforcing_one_would_add_nothing_on_its_term() -> None:
    dry = policy("b-dry", "{antiAffinity: {mode: required}}").replace("mode: enforce", "mode: dryrun")
    d = evaluate(deployment(), Context(namespace="ml"), policies(policy("a", "{antiAffinity: {mode: preferred}}"), dry))
    assert d.dryrun == [] and d.dryrun_patch == []


def test_a_later_policy_adds_no_zone_constraint_on_an_earlier_policys() -> None:
    """``a`` adds (zone, ScheduleAnyway, maxSkew 2); ``b`` asks (zone, DoNotSchedule, maxSkew 1): the pair is
    free, but the earlier policy's constraint on the key wins, as for every mutator."""
    both = policies(
        policy("a", "{topologySpread: [{topologyKey: " + ZONE + ", maxSkew: 2}]}"),
        policy("b", "{topologySpread: [{topologyKey: " + ZONE + ", whenUnsatisfiable: DoNotSchedule}]}"),
    )
    d = evaluate(deployment(), Context(namespace="ml"), both)
    assert [(c["whenUnsatisfiable"], c["maxSkew"]) for c in constraints(d.mutated)] == [("ScheduleAnyway", 2)]
    assert d.allowed, d.violations  # spreadguard's own constraint is not the tenant's weak one


def test_a_do_not_schedule_policy_adds_its_constraint_beside_the_tenants_schedule_anyway_one() -> None:
    """validateTopologySpreadConstraints: one per (topologyKey, whenUnsatisfiable); the tenant's soft constraint
    holds the other pair, so the policy's hard one is added beside it and both pass the API's rules."""
    theirs = {
        "maxSkew": 1,
        "topologyKey": ZONE,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": "llm"}},
    }
    hard = policies(policy("a", "{topologySpread: [{topologyKey: " + ZONE + ", whenUnsatisfiable: DoNotSchedule}]}"))
    obj = deployment({"topologySpreadConstraints": [theirs]})
    d = evaluate(obj, Context(namespace="ml"), hard)
    after = jsonpatch.apply_patch(obj, d.patch)
    assert [(c["whenUnsatisfiable"], c["maxSkew"]) for c in constraints(after)] == [
        ("ScheduleAnyway", 1),
        ("DoNotSchedule", 1),
    ]
    assert pod_spec_errors(after["spec"]["template"]["spec"]) == []
    assert "ScheduleAnyway, maxSkew 1) does not keep the pods apart" in d.notes[0]


@pytest.mark.parametrize(
    ("theirs", "message"),
    [
        ({"maxSkew": 3, "whenUnsatisfiable": "DoNotSchedule", "minDomains": 2}, "lower its maxSkew to 1"),
        (
            {"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"x": "y"}}},
            "selects other pods",
        ),
    ],
)
def test_a_weaker_constraint_holding_the_pair_is_left_as_written_and_denied(theirs: dict, message: str) -> None:
    """Never a second constraint for the pair (Duplicate value), never a rewrite of the tenant's: weak-spread."""
    mine = {"topologyKey": ZONE, "labelSelector": {"matchLabels": {"app": "llm"}}, **theirs}
    hard = policies(policy("a", "{topologySpread: [{topologyKey: " + ZONE + ", whenUnsatisfiable: DoNotSchedule}]}"))
    obj = deployment({"topologySpreadConstraints": [mine]})
    d = evaluate(obj, Context(namespace="ml"), hard)
    assert d.patch == [] or all("topologySpreadConstraints" not in op["path"] for op in d.patch)
    assert [v.rule for v in d.violations] == ["weak-spread"]
    assert (
        d.violations[0].path == "spec.template.spec.topologySpreadConstraints[0]" and message in d.violations[0].message
    )
    assert pod_spec_errors(obj["spec"]["template"]["spec"]) == []


# ------------------------------------------------------------- the Pod backstop on pods of a mutated workload


def pod_of(workload: dict[str, Any]) -> dict[str, Any]:
    """The Pod the ReplicaSet controller creates from the (mutated) Deployment's template."""
    template = copy.deepcopy(workload["spec"]["template"])
    labels = {**template["metadata"]["labels"], "pod-template-hash": "7d9f"}
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "llm-7d9f", "uid": "u", "controller": True}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "llm-7d9f-", "namespace": "ml", "labels": labels, "ownerReferences": [owner]},
        "spec": template["spec"],
    }


@pytest.mark.parametrize("tenant", [None, 1, 100], ids=["no tenant term", "tenant weight 1", "tenant weight 100"])
@pytest.mark.parametrize(("nodes", "mode"), [(5, REQUIRED), (2, PREFERRED)], ids=["cluster holds it", "cluster short"])
def test_a_pod_of_a_mutated_deployment_gets_no_second_spread(tenant: int | None, nodes: int, mode: str) -> None:
    """Whatever spreadguard chose on the Deployment (required when the cluster holds it, preferred when short)
    arrives at the Pod as the template's own: the backstop adds no term and does not flip preferred to required."""
    obj = deployment(weak_preferred(tenant) if tenant else None)
    obj["spec"]["template"]["metadata"]["labels"]["spreadguard.io/workload"] = "serving"
    ctx = cluster(nodes)
    d = evaluate(obj, ctx, POLICIES)
    mutated = jsonpatch.apply_patch(obj, d.patch)
    assert mode in anti(mutated), anti(mutated)
    if mode == PREFERRED:
        assert REQUIRED not in anti(mutated) and len(anti(mutated)[PREFERRED]) == 1  # the tenant's or spreadguard's
    pod = pod_of(mutated)
    again = evaluate(pod, ctx, POLICIES)
    touched = [
        op["path"] for op in again.patch if "podAntiAffinity" in json.dumps(op) or "topologySpread" in op["path"]
    ]
    assert touched == [], again.patch
    assert again.allowed, again.violations


def test_the_pods_of_a_workload_admitted_with_a_weak_constraint_are_not_denied() -> None:
    """weak-spread judges the workload; denying the pods of one admitted before (or under warn) would only
    leave it with fewer replicas."""
    loose = {"maxSkew": 1000, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule"}
    obj = deployment({"topologySpreadConstraints": [{**loose, "labelSelector": {"matchLabels": {"app": "llm"}}}]})
    obj["spec"]["template"]["metadata"]["labels"]["spreadguard.io/workload"] = "serving"
    hard = policies(policy("a", "{topologySpread: [{topologyKey: " + ZONE + ", whenUnsatisfiable: DoNotSchedule}]}"))
    assert [v.rule for v in evaluate(obj, Context(namespace="ml"), hard).violations] == ["weak-spread"]
    d = evaluate(pod_of(obj), Context(namespace="ml"), hard)
    assert d.allowed and "weak-spread" not in {v.rule for v in d.advisories}, d.violations


def test_against_a_soft_policy_constraint_the_finding_is_a_warning_whatever_the_action() -> None:
    """The policy's (zone, ScheduleAnyway) is a preference the scheduler may ignore anyway: a tenant's looser one
    in its place is told (warning), not refused, even with weak-spread set to deny."""
    loose = {"maxSkew": 2, "topologyKey": ZONE, "whenUnsatisfiable": "ScheduleAnyway"}
    obj = deployment({"topologySpreadConstraints": [{**loose, "labelSelector": {"matchLabels": {"app": "llm"}}}]})
    soft = policies(
        policy(
            "a",
            "{topologySpread: [{topologyKey: " + ZONE + ", whenUnsatisfiable: ScheduleAnyway}]}",
            rules="{weak-spread: {action: deny}}",
        )
    )
    d = evaluate(obj, Context(namespace="ml"), soft)
    assert d.allowed and d.violations == []
    assert [v.rule for v in d.advisories] == ["weak-spread"] and "lower its maxSkew to 1" in d.advisories[0].message


CAPTURED = [  # (workload, one of its pods), as the API server sent them (tests/data/admission/README.md)
    ("116-RayCluster-rl-CREATE-mutate.json", "132-Pod-rl-gpu-workers-abcde-CREATE-mutate.json"),
    ("100-PyTorchJob-bert-CREATE-mutate.json", "128-Pod-bert-worker-0-CREATE-mutate.json"),
    ("110-JobSet-pretrain-CREATE-mutate.json", "130-Pod-pretrain-workers-0-1-CREATE-mutate.json"),
]


def _review(name: str) -> dict[str, Any]:
    return json.loads((REPO / "tests" / "data" / "admission" / name).read_text())["request"]["object"]


@pytest.mark.parametrize(("workload", "pod"), CAPTURED, ids=[w.split("-CREATE")[0] for w, _ in CAPTURED])
def test_a_pod_of_a_mutated_captured_workload_gets_no_second_spread(workload: str, pod: str) -> None:
    """The captured workload mutated, then its captured Pod as the operator would create it from the mutated
    template of its group: the Pod backstop adds no anti-affinity or spread constraint on top."""
    obj = _review(workload)
    mutated = jsonpatch.apply_patch(obj, evaluate(obj, Context(namespace="ml"), POLICIES).patch)
    created = copy.deepcopy(_review(pod))
    labels = created["metadata"]["labels"]
    [group] = [g for g in workloads.groups_of(mutated) if g.selector and labelsel.matches(g.selector, labels)]
    template = workloads.pod_template(mutated, group)
    # Ray workers are replicas (spread over hosts); PyTorchJob and JobSet workers a gang (kept in one zone)
    assert ("podAntiAffinity" in template["spec"]["affinity"]) == workload.startswith("116-"), template["spec"]
    labels.update((template.get("metadata") or {}).get("labels") or {})
    for key in ("affinity", "tolerations", "topologySpreadConstraints"):
        if key in template["spec"]:
            created["spec"][key] = template["spec"][key]
    again = evaluate(created, Context(namespace="ml"), POLICIES)
    stacked = [op for op in again.patch if "podAntiAffinity" in json.dumps(op) or "topologySpread" in json.dumps(op)]
    assert stacked == [], stacked
    assert again.allowed, again.violations


# ------------------------------------------------------------- the API rules these rely on


@pytest.mark.parametrize(
    ("constraint", "error"),
    [
        ({"maxSkew": 0, "whenUnsatisfiable": "DoNotSchedule"}, "maxSkew: must be greater than zero"),
        ({"maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2}, "minDomains: can only use minDomains"),
        (
            {"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule", "minDomains": 0},
            "minDomains: must be greater than zero",
        ),
    ],
)
def test_the_encoded_spread_rules_can_fail(constraint: dict, error: str) -> None:
    """validateTopologySpreadConstraints (ValidateMaxSkew, validateMinDomains) as encoded in apirules."""
    spec = {"topologySpreadConstraints": [{"topologyKey": ZONE, **constraint}]}
    assert any(error in e for e in pod_spec_errors(spec)), pod_spec_errors(spec)
    twice = {
        "topologySpreadConstraints": [{"topologyKey": ZONE, "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}] * 2
    }
    assert any("Duplicate value" in e for e in pod_spec_errors(twice))
