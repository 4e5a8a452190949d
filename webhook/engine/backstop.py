"""The native backstop: the isolation rules CEL can express, compiled from the policies into a
ValidatingAdmissionPolicy and its binding (``admissionregistration.k8s.io/v1``, Kubernetes >= 1.30).

The API server runs them in-process, so team isolation holds while the webhook (``failurePolicy:
Ignore``) is down, slow or starved. Compiled, for every Pod of a namespace the webhooks see, from each
policy that applies to every Pod: ``team-label-claim`` (on CREATE), ``foreign-team-toleration``,
``wildcard-toleration`` and ``health-taint-toleration`` (on CREATE, and on the tolerations an UPDATE
adds), with the namespace's team from ``namespaceObject`` (its ``spreadguard.io/team`` label) or the
policy's ``namespaceTeams``. ``node-name-taint`` needs the node's taints: webhook only.

Exemptions: the backstop cannot check a signed grant, so it honours an exemption from an isolation rule
only when the request's own user may grant it (``exemptions.allowedUsers``/``allowedGroups``). Pods a
controller makes from an approved workload keep isolation exemptions only in a namespace the platform
excludes (``spreadguard.io/ignore``); docs/threat-model.md.

Pure: policies in, Kubernetes objects (dicts) out; ``spreadguard policies compile`` writes them.
"""

from __future__ import annotations

import json
from typing import Any

from webhook.engine.policy import MODE_LABEL, MODE_STRICTNESS, Policy, Selector
from webhook.engine.rules import foreign_team_toleration, wildcard_toleration
from webhook.engine.workloads import TEAM_LABEL

API_VERSION = "admissionregistration.k8s.io/v1"
EXEMPT = "spreadguard.io/exempt"
REASON = "spreadguard.io/exempt-reason"
COMPILED_RULES = ("team-label-claim", "foreign-team-toleration", "wildcard-toleration", "health-taint-toleration")
SYSTEM_NAMESPACES = ["kube-system", "kube-node-lease", "spreadguard"]
IGNORE_LABEL = "spreadguard.io/ignore"
DAEMONSET_CONTROLLER = "system:serviceaccount:kube-system:daemon-set-controller"
_RE_SPECIAL = set(".^$*+?()[]{}|\\")

# the same exclusions as the webhooks (manifests/base/webhooks.yaml): tests/install keeps them equal
MATCH_CONDITIONS = [
    {
        "name": "not-control-plane-user",
        "expression": "request.userInfo.username != 'system:apiserver' && "
        "!request.userInfo.username.startsWith('system:node:')",
    },
    {
        "name": "not-daemonset-pod",
        "expression": "!(request.operation != 'DELETE' && "
        f"request.userInfo.username == '{DAEMONSET_CONTROLLER}' && has(object.metadata.ownerReferences) && "
        "object.metadata.ownerReferences.exists(r, r.kind == 'DaemonSet'))",
    },
    {
        "name": "pod-update-changes-tolerations",
        "expression": "request.operation != 'UPDATE' || "
        "(has(object.spec.tolerations) ? object.spec.tolerations : []) != "
        "(has(oldObject.spec.tolerations) ? oldObject.spec.tolerations : [])",
    },
]


def cel_string(value: str) -> str:
    """A CEL string literal (JSON escaping is valid CEL)."""
    return json.dumps(value)


def _cel_list(values: list[str]) -> str:
    return "[" + ", ".join(cel_string(v) for v in values) + "]"


def glob_regex(pattern: str) -> str:
    """An RE2 regular expression matching what ``fnmatch`` matches for a namespace glob (``*``, ``?``)."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            out.append("\\" + ch if ch in _RE_SPECIAL else ch)
    return "^" + "".join(out) + "$"


def _any_glob(subject: str, globs: list[str]) -> str:
    if not globs:
        return "false"
    if "*" in globs:
        return "true"
    return "(" + " || ".join(f"{subject}.matches({cel_string(glob_regex(g))})" for g in globs) + ")"


def _covers_every_pod(sel: Selector) -> bool:
    kinds_ok = any(k in ("*", "Pod", "core/Pod") for k in sel.kinds)
    return (
        kinds_ok
        and sel.labelSelector is None
        and sel.gpu is None
        and sel.minGroupSize == 0
        and sel.workloadClass in ("any", "training")
    )


def compilable(policy: Policy) -> list[str]:
    """The isolation rules of ``policy`` the backstop enforces, or [] when the policy is not for every Pod
    (a selector narrowed by labels, GPUs or size, or an exclude list) or denies none of them."""
    spec = policy.spec
    if spec.exclude.any or not any(_covers_every_pod(s) for s in spec.match.any):
        return []
    out = []
    for rule_id in COMPILED_RULES:
        cfg = spec.rules.get(rule_id)
        action = cfg.action if cfg else ("off" if spec.onlyListedRules else "deny")
        if action == "deny":
            out.append(rule_id)
    return out


def _namespaces(policy: Policy) -> list[str]:
    globs: list[str] = []
    for sel in policy.spec.match.any:
        if _covers_every_pod(sel):
            globs.extend(sel.namespaces)
    return globs


def _variables(policy: Policy) -> list[dict[str, str]]:
    spec = policy.spec
    team = spec.mutate.teamTolerations
    ns_teams = team.namespaceTeams if team else {}
    ns_map = "{" + ", ".join(f"{cel_string(k)}: {cel_string(v)}" for k, v in sorted(ns_teams.items())) + "}"
    label = cel_string(TEAM_LABEL)
    borrow_classes = team.borrowingPriorityClasses if team else []
    borrow_ns = team.borrowingNamespaces if team else []
    exempt = spec.exemptions
    users, groups = exempt.allowedUsers, exempt.allowedGroups
    exempter = " || ".join(
        [f"request.userInfo.username in {_cel_list(users)}"] * bool(users)
        + [f"(has(request.userInfo.groups) && request.userInfo.groups.exists(g, g in {_cel_list(groups)}))"]
        * bool(groups)
    )
    reason = (
        f" && {cel_string(REASON)} in object.metadata.annotations && "
        f"object.metadata.annotations[{cel_string(REASON)}].matches({cel_string(chr(92) + 'S')})"
        if exempt.requireReason
        else ""
    )
    return [
        {"name": "tolerations", "expression": "has(object.spec.tolerations) ? object.spec.tolerations : []"},
        {
            "name": "oldTolerations",
            "expression": "request.operation == 'UPDATE' && has(oldObject.spec.tolerations) ? "
            "oldObject.spec.tolerations : []",
        },
        # the tolerations this request adds: all of them on CREATE
        {"name": "added", "expression": "variables.tolerations.filter(t, !(t in variables.oldTolerations))"},
        {
            "name": "namespaceTeam",
            "expression": f"namespaceObject.metadata.name in {ns_map} ? {ns_map}[namespaceObject.metadata.name] : "
            f"(has(namespaceObject.metadata.labels) && {label} in namespaceObject.metadata.labels ? "
            f"namespaceObject.metadata.labels[{label}] : '')",
        },
        {
            "name": "podTeam",
            "expression": f"has(object.metadata.labels) && {label} in object.metadata.labels ? "
            f"object.metadata.labels[{label}] : ''",
        },
        {
            "name": "team",
            "expression": "variables.namespaceTeam != '' ? variables.namespaceTeam : variables.podTeam",
        },
        {
            "name": "mayBorrow",
            "expression": "has(object.spec.priorityClassName) && "
            f"object.spec.priorityClassName in {_cel_list(borrow_classes)} && "
            + _any_glob("namespaceObject.metadata.name", borrow_ns),
        },
        {
            "name": "exemptIds",
            "expression": (
                f"({exempter}) && has(object.metadata.annotations) && {cel_string(EXEMPT)} in "
                f"object.metadata.annotations{reason} ? object.metadata.annotations[{cel_string(EXEMPT)}] : ''"
            )
            if exempter
            else "''",
        },
    ]


def _exempt(rule_id: str) -> str:
    return f"variables.exemptIds.matches({cel_string(f'(^|,)[ ]*{rule_id}[ ]*(,|$)')})"


def _validations(policy: Policy, rules: list[str]) -> list[dict[str, str]]:
    spec = policy.spec
    team = spec.mutate.teamTolerations
    key = cel_string(team.taintKey if team else foreign_team_toleration.DEFAULT_TAINT_KEY)
    health = spec.mutate.health
    avoid = health.avoidTaints if health else []
    out: list[dict[str, str]] = []
    where = f"(spreadguard policy {policy.name}, enforced by the API server)"
    if "team-label-claim" in rules:
        out.append(
            {
                "expression": f"request.operation != 'CREATE' || {_exempt('team-label-claim')} || "
                "variables.namespaceTeam == '' || variables.podTeam == '' || "
                "variables.podTeam == variables.namespaceTeam",
                "messageExpression": "'[team-label-claim] metadata.labels[spreadguard.io/team]: labelled team ' + "
                "variables.podTeam + ' but namespace ' + namespaceObject.metadata.name + ' belongs to team ' + "
                f"variables.namespaceTeam + '. Fix: remove the label {where}'",
                "reason": "Forbidden",
            }
        )
    if "foreign-team-toleration" in rules:
        out.append(
            {
                "expression": f"{_exempt('foreign-team-toleration')} || variables.added.all(t, !has(t.key) || "
                f"t.key != {key} || (has(t.operator) && t.operator == 'Exists' ? variables.mayBorrow : "
                "(has(t.value) ? t.value : '') == variables.team))",
                "message": "[foreign-team-toleration] spec.tolerations: the pod tolerates another team's taint "
                f"({team.taintKey if team else foreign_team_toleration.DEFAULT_TAINT_KEY}): it would take nodes "
                f"reserved for another team. Fix: remove it; spreadguard adds your own team's toleration {where}",
                "reason": "Forbidden",
            }
        )
    if "wildcard-toleration" in rules:
        out.append(
            {
                "expression": f"{_exempt(wildcard_toleration.ID)} || variables.added.all(t, "
                "(has(t.key) && t.key != '') || !has(t.operator) || t.operator != 'Exists')",
                "message": "[wildcard-toleration] spec.tolerations: the pod tolerates every taint (operator: Exists "
                "with no key): it would land on nodes GPU health checks tainted and on every team's reserved "
                f"nodes. Fix: tolerate the specific taint keys you need {where}",
                "reason": "Forbidden",
            }
        )
    if "health-taint-toleration" in rules and avoid:
        out.append(
            {
                "expression": f"{_exempt('health-taint-toleration')} || variables.added.all(t, !has(t.key) || "
                f"!(t.key in {_cel_list(avoid)}))",
                "message": "[health-taint-toleration] spec.tolerations: the pod tolerates a taint GPU health checks "
                f"put on failing nodes ({', '.join(avoid)}). Fix: remove this toleration {where}",
                "reason": "Forbidden",
            }
        )
    return out


def _mode_conditions(policy: Policy) -> list[dict[str, str]]:
    """Keep the Deny binding out of namespaces where the webhook would not enforce this policy: its
    ``namespaceModes`` (first match wins, as in ``policy.effective_mode``) and, when the policy lets it
    loosen, the namespace label ``spreadguard.io/mode``."""
    spec = policy.spec
    out = []
    if spec.namespaceModes:
        name = "namespaceObject.metadata.name"
        expr = "true"  # no entry matches: spec.mode, which is enforce here
        for entry in reversed(spec.namespaceModes):
            expr = f"{_any_glob(name, entry.namespaces)} ? {str(entry.mode == 'enforce').lower()} : ({expr})"
        out.append({"name": "namespace-mode-enforce", "expression": expr})
    if spec.allowNamespaceOverride:
        label = cel_string(MODE_LABEL)
        loose = _cel_list([m for m, s in MODE_STRICTNESS.items() if s < MODE_STRICTNESS["enforce"]])
        out.append(
            {
                "name": "namespace-label-mode-enforce",
                "expression": f"!(has(namespaceObject.metadata.labels) && {label} in namespaceObject.metadata.labels "
                f"&& namespaceObject.metadata.labels[{label}] in {loose})",
            }
        )
    return out


ACTIONS = {"enforce": ["Deny"], "warn": ["Warn", "Audit"], "dryrun": ["Audit"]}


def compile_policies(policies: list[Policy]) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy and its binding per policy that isolates every Pod, in name order."""
    out: list[dict[str, Any]] = []
    for policy in sorted(policies, key=lambda p: p.name):
        rules = compilable(policy)
        if not rules:
            continue
        name = f"spreadguard-{policy.name}"
        namespaces = _namespaces(policy)
        conditions = [dict(c) for c in MATCH_CONDITIONS]
        if "*" not in namespaces:
            conditions.append(
                {"name": "policy-namespaces", "expression": _any_glob("namespaceObject.metadata.name", namespaces)}
            )
        if policy.spec.mode == "enforce":
            conditions.extend(_mode_conditions(policy))
        labels = {"app.kubernetes.io/name": "spreadguard", "app.kubernetes.io/component": "backstop"}
        out.append(
            {
                "apiVersion": API_VERSION,
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {
                    "name": name,
                    "labels": labels,
                    "annotations": {"spreadguard.io/rules": ",".join(rules), "spreadguard.io/policy": policy.name},
                },
                "spec": {
                    # an expression that cannot be evaluated denies: isolation must not depend on it working
                    "failurePolicy": "Fail",
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": [""],
                                "apiVersions": ["v1"],
                                "resources": ["pods"],
                                "operations": ["CREATE", "UPDATE"],
                                "scope": "Namespaced",
                            }
                        ],
                        "namespaceSelector": {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/metadata.name",
                                    "operator": "NotIn",
                                    "values": SYSTEM_NAMESPACES,
                                },
                                {"key": IGNORE_LABEL, "operator": "DoesNotExist"},
                            ]
                        },
                    },
                    "matchConditions": conditions,
                    "variables": _variables(policy),
                    "validations": _validations(policy, rules),
                },
            }
        )
        out.append(
            {
                "apiVersion": API_VERSION,
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name, "labels": labels},
                "spec": {"policyName": name, "validationActions": ACTIONS[policy.spec.mode]},
            }
        )
    return out
