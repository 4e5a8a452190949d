"""`policies compile` (webhook/engine/backstop.py) per policy setting: which policies compile, the binding's
actions per mode, namespace globs and namespaceModes as CEL (evaluated with cel-python)."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.engine.backstop import DAEMONSETS, compilable, compile_policies, glob_regex
from webhook.engine.policy import Policy

celpy = pytest.importorskip("celpy", reason="cel-python is not installed")


def policy(**spec: Any) -> Policy:
    base: dict[str, Any] = {"match": {"any": [{"kinds": ["*"]}]}, "rules": {}}
    base.update(spec)
    return Policy.model_validate(
        {"apiVersion": "spreadguard.io/v1alpha1", "kind": "HAPolicy", "metadata": {"name": "iso"}, "spec": base}
    )


def condition(vap: dict, name: str, namespace: str, labels: dict | None = None) -> bool:
    env = celpy.Environment()
    expr = next(c["expression"] for c in vap["spec"]["matchConditions"] if c["name"] == name)
    ns = {"metadata": {"name": namespace, "labels": labels or {}}}
    return bool(env.program(env.compile(expr)).evaluate({"namespaceObject": celpy.json_to_cel(ns)}))


@pytest.mark.parametrize(
    ("match", "compiles"),
    [
        ({"kinds": ["*"]}, True),
        ({"kinds": ["Pod"]}, True),
        ({"kinds": ["Pod"], "gpu": True}, False),  # GPU pods only: not every pod
        ({"kinds": ["Pod"], "labelSelector": {"matchLabels": {"a": "b"}}}, False),
        ({"kinds": ["Pod"], "workloadClass": "serving"}, False),
        ({"kinds": ["Deployment"]}, False),
    ],
    ids=["all", "pods", "gpu-only", "labelled", "serving", "no-pods"],
)
def test_only_policies_for_every_pod_compile(match: dict, compiles: bool) -> None:
    assert bool(compilable(policy(match={"any": [match]}))) is compiles


@pytest.mark.parametrize(
    ("match", "compiles"),
    [
        ({"kinds": ["*"]}, True),
        ({"kinds": ["DaemonSet"]}, True),
        ({"kinds": ["apps/DaemonSet"]}, True),
        ({"kinds": ["Pod"]}, False),  # pods only: the DaemonSet policy is not made
        ({"kinds": ["*"], "gpu": True}, False),
        ({"kinds": ["*"], "workloadClass": "training"}, False),  # a DaemonSet's label chooses its class
        ({"kinds": ["*"], "labelSelector": {"matchLabels": {"a": "b"}}}, False),
    ],
    ids=["all", "daemonsets", "group-kind", "pods-only", "gpu-only", "training", "labelled"],
)
def test_only_policies_for_every_daemonset_compile_for_daemonsets(match: dict, compiles: bool) -> None:
    p = policy(match={"any": [match]})
    assert bool(compilable(p, DAEMONSETS)) is compiles
    names = [o["metadata"]["name"] for o in compile_policies([p])]
    assert ("spreadguard-iso-daemonsets" in names) is compiles


def test_rules_off_or_warn_are_left_out() -> None:
    p = policy(
        onlyListedRules=True, rules={"wildcard-toleration": {"action": "deny"}, "team-label-claim": {"action": "warn"}}
    )
    assert compilable(p) == ["wildcard-toleration"]
    assert compilable(policy()) == [
        "team-label-claim",
        "foreign-team-toleration",
        "wildcard-toleration",
        "health-taint-toleration",
    ]


@pytest.mark.parametrize(
    ("mode", "actions"), [("enforce", ["Deny"]), ("warn", ["Warn", "Audit"]), ("dryrun", ["Audit"])]
)
def test_binding_actions_follow_the_mode(mode: str, actions: list[str]) -> None:
    binding = compile_policies([policy(mode=mode)])[1]
    assert binding["spec"]["validationActions"] == actions


def test_namespace_modes_first_match_wins() -> None:
    p = policy(namespaceModes=[{"namespaces": ["prod-*"], "mode": "enforce"}, {"namespaces": ["*"], "mode": "warn"}])
    vap = compile_policies([p])[0]
    assert condition(vap, "namespace-mode-enforce", "prod-a") is True
    assert condition(vap, "namespace-mode-enforce", "dev") is False


def test_namespace_label_can_loosen_only_when_allowed() -> None:
    vap = compile_policies([policy(allowNamespaceOverride=True)])[0]
    assert condition(vap, "namespace-label-mode-enforce", "ml", {"spreadguard.io/mode": "warn"}) is False
    assert condition(vap, "namespace-label-mode-enforce", "ml", {}) is True
    strict = compile_policies([policy()])[0]
    assert "namespace-label-mode-enforce" not in {c["name"] for c in strict["spec"]["matchConditions"]}


def test_policy_namespaces_become_a_condition() -> None:
    vap = compile_policies([policy(match={"any": [{"kinds": ["*"], "namespaces": ["team-*", "ml"]}]})])[0]
    assert condition(vap, "policy-namespaces", "team-a") and condition(vap, "policy-namespaces", "ml")
    assert not condition(vap, "policy-namespaces", "mlx")


@pytest.mark.parametrize(
    ("glob", "name", "hit"), [("research-*", "research-a", True), ("a.b", "axb", False), ("a?", "ab", True)]
)
def test_globs_become_anchored_regular_expressions(glob: str, name: str, hit: bool) -> None:
    env = celpy.Environment()
    program = env.program(env.compile(f"n.matches({glob_regex(glob)!r})".replace("'", '"')))
    assert bool(program.evaluate({"n": celpy.json_to_cel(name)})) is hit
