"""A per-node kind (DaemonSet) under any policy, not only the shipped ones: the engine itself keeps every
spreading mutator and rule off it (a policy whose match takes every kind must not give a DaemonSet anti-affinity,
spread, gang affinity or a failure policy), runs the isolation rules and adds only its team's toleration."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from conftest import REPO

from webhook.engine.decide import PER_NODE_MUTATORS, PER_NODE_RULES, evaluate
from webhook.engine.ids import ISOLATION_RULE_IDS
from webhook.engine.policy import Policy, load_policies
from webhook.engine.target import Context
from webhook.engine.workloads import KINDS

SHIPPED = {p.name: p for p in load_policies(REPO / "policies")}
OWN = {"key": "spreadguard.io/team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"}


def _every_kind(policy: Policy) -> Policy:
    """``policy`` matching every object, whatever it requests or says its class is."""
    spec = policy.spec.model_copy(update={"match": policy.spec.match.model_validate({"any": [{"kinds": ["*"]}]})})
    return policy.model_copy(update={"spec": spec})


def _daemonset(**template_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "ml", "labels": {"spreadguard.io/workload": "training"}},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent", "spreadguard.io/placement": "replicas"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "busybox:1.36", "resources": {"limits": {"nvidia.com/gpu": 8}}}
                    ],
                    **template_spec,
                },
            },
        },
    }


CTX = Context(operation="CREATE", namespace="ml", username="alice", namespace_labels={"spreadguard.io/team": "vision"})


def test_the_daemonset_is_the_one_per_node_kind_and_isolation_is_all_it_gets() -> None:
    assert [k.kind for k in KINDS.values() if k.per_node] == ["DaemonSet"]
    assert PER_NODE_RULES == set(ISOLATION_RULE_IDS)
    assert PER_NODE_MUTATORS == {"team-tolerations"}


@pytest.mark.parametrize("name", ["training", "serving"])
def test_a_spreading_policy_matching_every_kind_adds_only_the_team_toleration(name: str) -> None:
    policy = _every_kind(SHIPPED[name])
    obj = _daemonset(nodeSelector={"kubernetes.io/hostname": "gpu-node-1"})  # single-node-pinning on a workload
    before = copy.deepcopy(obj)
    decision = evaluate(obj, CTX, [policy])
    assert decision.policies == [name]
    assert decision.allowed and not decision.advisories, [v.text() for v in decision.violations + decision.advisories]
    assert jsonpatch.apply_patch(obj, decision.patch) == decision.mutated and obj == before
    assert decision.patch == [{"op": "add", "path": "/spec/template/spec/tolerations", "value": [OWN]}]
    assert decision.notes == ["team-tolerations: group pods: tolerates team vision's nodes"]
    assert decision.info == []  # no placement-label note, no gang or spread explanation


@pytest.mark.parametrize("name", ["training", "serving", "isolation"])
def test_a_spreading_policy_matching_every_kind_still_runs_the_isolation_rules(name: str) -> None:
    policy = _every_kind(SHIPPED[name])
    decision = evaluate(_daemonset(tolerations=[{"operator": "Exists"}]), CTX, [policy])
    assert [(v.rule, v.path) for v in decision.violations] == [
        ("wildcard-toleration", "spec.template.spec.tolerations[0]")
    ]


def test_an_exempters_daemonset_is_told_nothing_about_passing_the_exemption_on() -> None:
    """Its pods come from the trusted DaemonSet controller and are never judged: no grant, and no note about one."""
    obj = _daemonset(tolerations=[{"operator": "Exists"}])
    obj["metadata"]["annotations"] = {
        "spreadguard.io/exempt": "wildcard-toleration",
        "spreadguard.io/exempt-reason": "x",
    }
    for key in (None, b"k" * 32):
        ctx = Context(
            operation="CREATE",
            namespace="ml",
            username="carol",
            groups=("spreadguard:exempters",),
            namespace_labels={"spreadguard.io/team": "vision"},
            grant_key=key,
        )
        decision = evaluate(obj, ctx, [SHIPPED["isolation"]])
        assert decision.allowed and decision.exemptions
        assert decision.info == []
        assert "annotations" not in decision.mutated["spec"]["template"]["metadata"]
