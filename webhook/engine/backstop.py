"""The native backstop: the isolation rules CEL can express, compiled from the policies into a
ValidatingAdmissionPolicy and its binding (``admissionregistration.k8s.io/v1``, Kubernetes >= 1.30).

The API server runs them in-process, so team isolation holds while the webhook (``failurePolicy:
Ignore``) is down, slow or starved. Compiled, for every Pod of a namespace the webhooks see, from each
policy that applies to every Pod: ``team-label-claim`` (on CREATE), ``foreign-team-toleration``,
``wildcard-toleration`` and ``health-taint-toleration`` (on CREATE, and on the tolerations an UPDATE
adds), with the namespace's team from ``namespaceObject`` (its ``spreadguard.io/team`` label) or the
policy's ``namespaceTeams``. ``node-name-taint`` needs the node's taints: webhook only.

DaemonSets get a policy of their own (``spreadguard-<policy>-daemonsets``, from each policy that applies to
every DaemonSet): the Pod policy skips their pods (the DaemonSet controller is trusted per node), so the same
rules judge ``spec.template``, as the webhook does: on CREATE, and on an UPDATE that changes the template
(every toleration of it then, as the webhook judges a changed template whole).

Exemptions: the backstop cannot check a signed grant, so it honours an exemption from an isolation rule
only when the request's own user may grant it (``exemptions.allowedUsers``/``allowedGroups``). Pods a
controller makes from an approved workload keep isolation exemptions only in a namespace the platform
excludes (``spreadguard.io/ignore``); docs/threat-model.md.

Pure: policies in, Kubernetes objects (dicts) out; ``spreadguard policies compile`` writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


# A DaemonSet UPDATE that leaves the template alone changes no pod: the webhook does not judge it either.
TEMPLATE_CHANGED = {
    "name": "daemonset-update-changes-template",
    "expression": "request.operation != 'UPDATE' || object.spec.template != oldObject.spec.template",
}


@dataclass(frozen=True)
class Subject:
    """What one ValidatingAdmissionPolicy judges: Pods, or the pod template of DaemonSets."""

    suffix: str  # appended to ``spreadguard-<policy>``
    group: str  # API group of the resource
    resource: str
    kinds: tuple[str, ...]  # selector ``kinds`` entries that cover every object of it
    classes: tuple[str, ...]  # selector ``workloadClass`` values that still cover every object of it
    spec: str  # CEL path of the pod spec
    template_meta: str  # CEL path of the pod template's metadata ("" for a Pod: its own metadata)
    path: str  # field path of the pod spec, as messages say it
    who: str  # "the pod tolerates", "the DaemonSet's pods tolerate"
    conditions: tuple[dict[str, str], ...]


PODS = Subject(
    "",
    "",
    "pods",
    ("*", "Pod", "core/Pod"),
    ("any", "training"),
    "object.spec",
    "",
    "spec",
    "the pod tolerates",
    tuple(MATCH_CONDITIONS),
)
DAEMONSETS = Subject(
    "-daemonsets",
    "apps",
    "daemonsets",
    ("*", "DaemonSet", "apps/DaemonSet"),
    ("any",),
    "object.spec.template.spec",
    "object.spec.template.metadata",
    "spec.template.spec",
    "the DaemonSet's pods tolerate",
    (MATCH_CONDITIONS[0], TEMPLATE_CHANGED),
)
SUBJECTS = (PODS, DAEMONSETS)


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


def _covers_every(sel: Selector, subject: Subject) -> bool:
    kinds_ok = any(k in subject.kinds for k in sel.kinds)
    return (
        kinds_ok
        and sel.labelSelector is None
        and sel.gpu is None
        and sel.minGroupSize == 0
        and sel.workloadClass in subject.classes
    )


def compilable(policy: Policy, subject: Subject = PODS) -> list[str]:
    """The isolation rules of ``policy`` the backstop enforces on ``subject``, or [] when the policy is not for
    every one of them (a selector narrowed by labels, GPUs or size, or an exclude list) or denies none."""
    spec = policy.spec
    if spec.exclude.any or not any(_covers_every(s, subject) for s in spec.match.any):
        return []
    out = []
    for rule_id in COMPILED_RULES:
        cfg = spec.rules.get(rule_id)
        action = cfg.action if cfg else ("off" if spec.onlyListedRules else "deny")
        if action == "deny":
            out.append(rule_id)
    return out


def _namespaces(policy: Policy, subject: Subject) -> list[str]:
    globs: list[str] = []
    for sel in policy.spec.match.any:
        if _covers_every(sel, subject):
            globs.extend(sel.namespaces)
    return globs


def _team_label(meta: str) -> str:
    label = cel_string(TEAM_LABEL)
    return f"has({meta}.labels) && {label} in {meta}.labels ? {meta}.labels[{label}] : ''"


def _variables(policy: Policy, subject: Subject) -> list[dict[str, str]]:
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
    pod = subject.spec
    if subject.template_meta:  # a workload: a changed template is judged whole (matchConditions), as the webhook does
        tolerations = [
            {"name": "tolerations", "expression": f"has({pod}.tolerations) ? {pod}.tolerations : []"},
            {"name": "added", "expression": "variables.tolerations"},
        ]
        teams = [
            {"name": "objectTeam", "expression": _team_label("object.metadata")},
            {"name": "podTeam", "expression": _team_label(subject.template_meta)},
            {
                "name": "team",
                "expression": "variables.namespaceTeam != '' ? variables.namespaceTeam : "
                "(variables.podTeam != '' ? variables.podTeam : variables.objectTeam)",
            },
        ]
    else:
        tolerations = [
            {"name": "tolerations", "expression": "has(object.spec.tolerations) ? object.spec.tolerations : []"},
            {
                "name": "oldTolerations",
                "expression": "request.operation == 'UPDATE' && has(oldObject.spec.tolerations) ? "
                "oldObject.spec.tolerations : []",
            },
            # the tolerations this request adds: all of them on CREATE
            {"name": "added", "expression": "variables.tolerations.filter(t, !(t in variables.oldTolerations))"},
        ]
        teams = [
            {
                "name": "podTeam",
                "expression": f"has(object.metadata.labels) && {label} in object.metadata.labels ? "
                f"object.metadata.labels[{label}] : ''",
            },
            {
                "name": "team",
                "expression": "variables.namespaceTeam != '' ? variables.namespaceTeam : variables.podTeam",
            },
        ]
    return [
        *tolerations,
        {
            "name": "namespaceTeam",
            "expression": f"namespaceObject.metadata.name in {ns_map} ? {ns_map}[namespaceObject.metadata.name] : "
            f"(has(namespaceObject.metadata.labels) && {label} in namespaceObject.metadata.labels ? "
            f"namespaceObject.metadata.labels[{label}] : '')",
        },
        *teams,
        {
            "name": "mayBorrow",
            "expression": f"has({pod}.priorityClassName) && "
            f"{pod}.priorityClassName in {_cel_list(borrow_classes)} && "
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


def _label_claim(subject: Subject, where: str, exempt: str) -> dict[str, str]:
    """team-label-claim: a Pod's own label on CREATE; a DaemonSet's label and its template's (the match conditions
    let through only a CREATE or an UPDATE that changes the template)."""
    tail = (
        "' but namespace ' + namespaceObject.metadata.name + ' belongs to team ' + variables.namespaceTeam + "
        f"'. Fix: remove the label {where}'"
    )
    if not subject.template_meta:
        return {
            "expression": f"request.operation != 'CREATE' || {exempt} || "
            "variables.namespaceTeam == '' || variables.podTeam == '' || "
            "variables.podTeam == variables.namespaceTeam",
            "messageExpression": "'[team-label-claim] metadata.labels[spreadguard.io/team]: labelled team ' + "
            f"variables.podTeam + {tail}",
            "reason": "Forbidden",
        }
    template = subject.template_meta.removeprefix("object.")
    return {
        "expression": f"{exempt} || variables.namespaceTeam == '' || "
        "[variables.objectTeam, variables.podTeam].all(c, c == '' || c == variables.namespaceTeam)",
        "messageExpression": "'[team-label-claim] ' + (variables.podTeam != '' && variables.podTeam != "
        f"variables.namespaceTeam ? '{template}.labels[spreadguard.io/team]: labelled team ' + variables.podTeam : "
        f"'metadata.labels[spreadguard.io/team]: labelled team ' + variables.objectTeam) + {tail}",
        "reason": "Forbidden",
    }


def _validations(policy: Policy, rules: list[str], subject: Subject = PODS) -> list[dict[str, str]]:
    spec = policy.spec
    team = spec.mutate.teamTolerations
    key = cel_string(team.taintKey if team else foreign_team_toleration.DEFAULT_TAINT_KEY)
    health = spec.mutate.health
    avoid = health.avoidTaints if health else []
    out: list[dict[str, str]] = []
    where = f"(spreadguard policy {policy.name}, enforced by the API server)"
    path, who = subject.path, subject.who
    if "team-label-claim" in rules:
        out.append(_label_claim(subject, where, _exempt("team-label-claim")))
    if "foreign-team-toleration" in rules:
        out.append(
            {
                "expression": f"{_exempt('foreign-team-toleration')} || variables.added.all(t, !has(t.key) || "
                f"t.key != {key} || (has(t.operator) && t.operator == 'Exists' ? variables.mayBorrow : "
                "(has(t.value) ? t.value : '') == variables.team))",
                "message": f"[foreign-team-toleration] {path}.tolerations: {who} another team's taint "
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
                "message": f"[wildcard-toleration] {path}.tolerations: {who} every taint (operator: Exists "
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
                "message": f"[health-taint-toleration] {path}.tolerations: {who} a taint GPU health checks "
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
    """A ValidatingAdmissionPolicy and its binding per policy that isolates every Pod, then per policy that
    isolates every DaemonSet, in policy name order."""
    out: list[dict[str, Any]] = []
    for policy in sorted(policies, key=lambda p: p.name):
        for subject in SUBJECTS:
            out.extend(_compile(policy, subject))
    return out


def _compile(policy: Policy, subject: Subject) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and binding of ``policy`` for ``subject``; [] when nothing compiles."""
    out: list[dict[str, Any]] = []
    rules = compilable(policy, subject)
    if rules:
        name = f"spreadguard-{policy.name}{subject.suffix}"
        namespaces = _namespaces(policy, subject)
        conditions = [dict(c) for c in subject.conditions]
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
                                "apiGroups": [subject.group],
                                "apiVersions": ["v1"],
                                "resources": [subject.resource],
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
                    "variables": _variables(policy, subject),
                    "validations": _validations(policy, rules, subject),
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
