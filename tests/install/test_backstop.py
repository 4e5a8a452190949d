"""The native backstop (webhook/engine/backstop.py): the ValidatingAdmissionPolicy that `spreadguard policies
compile` makes from the policies. Shipped in manifests/ and kept in sync with the compiler; every CEL
expression compiles; and, evaluated with cel-python the way the API server runs a ValidatingAdmissionPolicy
(matchConditions, then variables, then validations; an error denies: failurePolicy Fail), it agrees with the
webhook's decisions on every captured Pod request and every Pod of the policy cases; the DaemonSet policy
agrees with it on every DaemonSet of the policy cases (CREATE and UPDATE), since the Pod policy skips the pods the
DaemonSet controller makes.

cel-python stands in for the API server's CEL (there is no kube-apiserver here); it evaluates the same
expressions over the same JSON. Known difference, asserted below: a pod a controller makes from an approved
workload, exempt from an isolation rule by a signed grant, passes the webhook but not the backstop (which
cannot check the grant's signature).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FIXTURES_DIR, REPO, spreadguard, subprocess_env

from webhook.cli.policies import compile_text
from webhook.engine import labels as labelsel
from webhook.engine.backstop import COMPILED_RULES, TEMPLATE_CHANGED, compile_policies
from webhook.engine.cases import case_context, load_cases, load_resource
from webhook.engine.decide import Decision, evaluate
from webhook.engine.policy import load_policies
from webhook.engine.target import Context
from webhook.server.review import AdmissionRequest

celpy = pytest.importorskip("celpy", reason="cel-python is not installed: the backstop's CEL is not evaluated")

SHIPPED = REPO / "manifests" / "base" / "isolation-backstop.yaml"
POLICIES = load_policies(REPO / "policies")
COMPILED = compile_policies(POLICIES)
VAPS = {
    o["spec"]["matchConstraints"]["resourceRules"][0]["resources"][0]: o
    for o in COMPILED
    if o["kind"] == "ValidatingAdmissionPolicy"
}
VAP, DS_VAP = VAPS["pods"], VAPS["daemonsets"]
ENV = celpy.Environment()


def _program(expression: str) -> Any:
    return ENV.program(ENV.compile(expression))


def _programs(vap: dict) -> dict[str, list]:
    return {
        "conditions": [(c["name"], _program(c["expression"])) for c in vap["spec"]["matchConditions"]],
        "variables": [(v["name"], _program(v["expression"])) for v in vap["spec"]["variables"]],
        "validations": [(v, _program(v["expression"])) for v in vap["spec"]["validations"]],
    }


PROGRAMS = _programs(VAP)
DS_PROGRAMS = _programs(DS_VAP)
PROGRAMS_BY_KIND = {"Pod": PROGRAMS, "DaemonSet": DS_PROGRAMS}


def test_shipped_backstop_is_the_compiler_output() -> None:
    assert SHIPPED.read_text(encoding="utf-8") == compile_text("policies/", POLICIES), (
        "run `spreadguard policies compile policies/ --write manifests/base/isolation-backstop.yaml`"
    )


def test_compile_cli_writes_what_is_shipped(tmp_path: Path) -> None:
    out = tmp_path / "backstop.yaml"
    done = subprocess.run(
        spreadguard("policies", "compile", "policies/", "--write", str(out)),
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == SHIPPED.read_text(encoding="utf-8")
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert [(d["apiVersion"], d["kind"]) for d in docs] == [
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"),
    ] * 2
    assert [d["metadata"]["name"] for d in docs] == ["spreadguard-isolation"] * 2 + [
        "spreadguard-isolation-daemonsets"
    ] * 2
    assert [r for d in docs[::2] for r in d["spec"]["matchConstraints"]["resourceRules"]] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        },
        {
            "apiGroups": ["apps"],
            "apiVersions": ["v1"],
            "resources": ["daemonsets"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        },
    ]
    for vap, binding in (docs[0:2], docs[2:4]):
        assert binding["spec"] == {"policyName": vap["metadata"]["name"], "validationActions": ["Deny"]}


def test_compile_says_when_nothing_applies_to_every_pod(tmp_path: Path) -> None:
    (tmp_path / "training.yaml").write_text((REPO / "policies" / "training.yaml").read_text())
    done = subprocess.run(
        spreadguard("policies", "compile", str(tmp_path)),
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "no policy in" in done.stderr and "applies to every Pod" in done.stderr


@pytest.mark.parametrize("vap", [VAP, DS_VAP], ids=["pods", "daemonsets"])
def test_every_expression_compiles(vap: dict) -> None:
    for validation in vap["spec"]["validations"]:
        _program(validation["expression"])
        if "messageExpression" in validation:
            _program(validation["messageExpression"])
    assert {
        v["message" if "message" in v else "messageExpression"].split("]")[0].strip("'[")
        for v in vap["spec"]["validations"]
    } == set(COMPILED_RULES)


# The base's hooks (one MutatingWebhookConfiguration, on /admit) and the validating hooks of the opt-in two-hook
# install (manifests/components/validate-after-mutation).
WEBHOOKS = [
    d
    for f in ("base/webhooks.yaml", "components/validate-after-mutation/validating-webhooks.yaml")
    for d in yaml.safe_load_all((REPO / "manifests" / f).read_text())
    if d
]


def _hook(config: str, name: str) -> dict:
    return next(h for d in WEBHOOKS if d["kind"] == config for h in d["webhooks"] if h["name"] == name)


@pytest.mark.parametrize("config", ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"])
def test_backstop_excludes_what_the_webhooks_exclude(config: str) -> None:
    """The Pod backstop sends what the judging pods hook gets: the base's (/admit) and the two-hook install's
    validating one (/validate), same namespaces, same conditions (Pod UPDATEs: only toleration changes)."""
    pods = _hook(config, "pods.spreadguard.io")
    assert VAP["spec"]["matchConstraints"]["namespaceSelector"] == pods["namespaceSelector"]
    hook_conditions = {c["name"]: c["expression"] for c in pods["matchConditions"]}
    for condition in VAP["spec"]["matchConditions"]:
        # the webhook's copies also test request.kind (its configuration lists more than pods)
        assert condition["name"] in hook_conditions, condition["name"]
    # DaemonSets: the workloads hooks' exclusions; the one condition more skips an UPDATE that leaves the template
    # alone, which the webhook admits whatever it carries (it judges only changed templates)
    for config in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        workloads = _hook(config, "workloads.spreadguard.io")
        assert DS_VAP["spec"]["matchConstraints"]["namespaceSelector"] == workloads["namespaceSelector"]
        assert [c for c in DS_VAP["spec"]["matchConditions"] if c != TEMPLATE_CHANGED] == workloads["matchConditions"]
        assert any(
            "apps" in r["apiGroups"] and "daemonsets" in r["resources"] and set(r["operations"]) == {"CREATE", "UPDATE"}
            for r in workloads["rules"]
        ), config


@pytest.mark.parametrize(
    ("namespace", "labels", "sent"),
    [
        ("kube-system", {}, False),
        ("kube-node-lease", {}, False),
        ("spreadguard", {}, False),
        ("monitoring", {"spreadguard.io/ignore": "true"}, False),
        ("ml", {"spreadguard.io/team": "vision"}, True),
        ("monitoring", {}, True),
    ],
)
def test_daemonsets_in_excluded_namespaces_reach_neither_hook_nor_backstop(
    namespace: str, labels: dict[str, str], sent: bool
) -> None:
    """A DaemonSet in kube-system (or a namespace labelled spreadguard.io/ignore) is untouched: neither workloads
    hook nor the DaemonSet backstop selects its namespace; any other namespace is selected by all three."""
    ns_labels = _namespace(namespace, labels)["metadata"]["labels"]
    selectors = [
        _hook("MutatingWebhookConfiguration", "workloads.spreadguard.io")["namespaceSelector"],
        _hook("ValidatingWebhookConfiguration", "workloads.spreadguard.io")["namespaceSelector"],
        DS_VAP["spec"]["matchConstraints"]["namespaceSelector"],
    ]
    assert [labelsel.matches(s, ns_labels) for s in selectors] == [sent] * 3


def _namespace(name: str, labels: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}},
    }


def _cel_map(values: dict[str, Any]) -> Any:
    return celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in values.items()})


def backstop(request: dict, namespace: dict, programs: dict[str, list] = PROGRAMS) -> list[str]:
    """What the ValidatingAdmissionPolicy answers: the messages of the failed validations ([] = admitted)."""
    activation: dict[str, Any] = {
        "request": celpy.json_to_cel(request),
        "object": celpy.json_to_cel(request.get("object")),
        "oldObject": celpy.json_to_cel(request.get("oldObject")),
        "namespaceObject": celpy.json_to_cel(namespace),
    }
    for _name, program in programs["conditions"]:
        if not bool(program.evaluate(activation)):
            return []
    variables: dict[str, Any] = {}
    for name, program in programs["variables"]:  # in order: each may use the ones before it
        activation["variables"] = _cel_map(variables)
        value = program.evaluate(activation)
        assert not isinstance(value, celpy.CELEvalError), f"variable {name}: {value}"
        variables[name] = value
    activation["variables"] = _cel_map(variables)
    failed = []
    for validation, program in programs["validations"]:
        verdict = program.evaluate(activation)
        assert not isinstance(verdict, celpy.CELEvalError), f"{validation['expression']}: {verdict}"
        if not bool(verdict):
            failed.append(
                validation.get("message") or str(_program(validation["messageExpression"]).evaluate(activation))
            )
    return failed


def _request(obj: dict, ctx: Context) -> dict:
    group, _, version = obj["apiVersion"].rpartition("/")
    return {
        "uid": "x",
        "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "namespace": ctx.namespace,
        "operation": ctx.operation,
        "userInfo": {"username": ctx.username, "groups": list(ctx.groups)},
        "object": obj,
        "oldObject": ctx.old_object,
    }


def _webhook_isolation_denials(decision: Decision) -> list[str]:
    return sorted({v.rule for v in decision.violations if v.rule in COMPILED_RULES})


def _grant_exempt(decision: Decision) -> bool:
    """The engine let an isolation rule go on a signed grant (which the backstop cannot check)."""
    return any("grant verified" in e and any(r in e for r in COMPILED_RULES) for e in decision.exemptions)


def _agree(obj: dict, ctx: Context, what: str) -> tuple[list[str], list[str]]:
    decision = evaluate(obj, ctx, POLICIES)
    webhook = _webhook_isolation_denials(decision)
    vap = backstop(_request(obj, ctx), _namespace(ctx.namespace, ctx.namespace_labels), PROGRAMS_BY_KIND[obj["kind"]])
    vap_rules = sorted({m.split("]")[0].lstrip("[") for m in vap})
    if _grant_exempt(decision):
        assert vap_rules and not webhook, f"{what}: expected the known difference (grant-exempt pod)"
    else:
        assert vap_rules == webhook, f"{what}: backstop {vap_rules} != webhook {webhook}"
    return webhook, vap_rules


CAPTURED = [
    p
    for p in sorted(FIXTURES_DIR.glob("*-validate.json"))
    if json.loads(p.read_text())["request"]["kind"]["kind"] == "Pod"
]


@pytest.mark.parametrize("path", CAPTURED, ids=[p.name for p in CAPTURED])
def test_backstop_agrees_with_the_webhook_on_captured_pods(path: Path) -> None:
    body = json.loads(path.read_text())
    req = body["request"]
    ctx = AdmissionRequest.from_body(body).context()
    webhook = evaluate(req["object"], ctx, POLICIES)
    vap = backstop(req, _namespace(req["namespace"], {}))
    assert vap == [] and _webhook_isolation_denials(webhook) == []  # the corpus is well-behaved workloads


POD_CASES = [
    (p, c)
    for p, c in load_cases(REPO / "policies" / "tests")
    if load_resource(c["resource"], p.parent).get("kind") == "Pod"
]


@pytest.mark.parametrize(("path", "case"), POD_CASES, ids=[c["name"] for _, c in POD_CASES])
def test_backstop_agrees_with_the_webhook_on_policy_cases(path: Path, case: dict) -> None:
    obj = load_resource(case["resource"], path.parent)
    _agree(obj, case_context(case, obj, path.parent), case["name"])


def test_the_agreement_covers_every_compiled_rule_both_ways() -> None:
    denied: set[str] = set()
    admitted = 0
    for path, case in POD_CASES:
        obj = load_resource(case["resource"], path.parent)
        webhook, vap = _agree(obj, case_context(case, obj, path.parent), case["name"])
        denied |= set(vap)
        admitted += not vap
    assert denied == set(COMPILED_RULES) and admitted >= 5


DS_CASES = [
    (p, c)
    for p, c in load_cases(REPO / "policies" / "tests")
    if load_resource(c["resource"], p.parent).get("kind") == "DaemonSet"
]


@pytest.mark.parametrize(("path", "case"), DS_CASES, ids=[c["name"] for _, c in DS_CASES])
def test_daemonset_backstop_agrees_with_the_webhook_on_policy_cases(path: Path, case: dict) -> None:
    obj = load_resource(case["resource"], path.parent)
    _agree(obj, case_context(case, obj, path.parent), case["name"])


def test_the_daemonset_agreement_covers_every_compiled_rule_both_ways() -> None:
    denied: set[str] = set()
    admitted = 0
    for path, case in DS_CASES:
        obj = load_resource(case["resource"], path.parent)
        _webhook, vap = _agree(obj, case_context(case, obj, path.parent), case["name"])
        denied |= set(vap)
        admitted += not vap
    assert denied == set(COMPILED_RULES) and admitted >= 3


def _daemonset(tolerations: list[dict], **template_labels: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "ml"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent", **template_labels}},
                "spec": {"tolerations": tolerations, "containers": [{"name": "a", "image": "busybox:1.36"}]},
            },
        },
    }


WILDCARD = {"operator": "Exists"}
OWN = {"key": "spreadguard.io/team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"}
NLP = {"key": "spreadguard.io/team", "operator": "Equal", "value": "nlp", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("old", "new", "denied"),
    [
        (None, [WILDCARD], ["wildcard-toleration"]),  # CREATE
        ([OWN], [OWN, NLP], ["foreign-team-toleration"]),  # a toleration added by an UPDATE
        ([WILDCARD], [WILDCARD, OWN], ["wildcard-toleration"]),  # a changed template is judged whole
        ([WILDCARD], [WILDCARD], []),  # an UPDATE that leaves the template alone (webhook: a warning)
        ([OWN], [OWN], []),
    ],
    ids=["create", "update-adds-foreign", "update-changes-template", "update-same-template", "own-team"],
)
def test_daemonset_backstop_on_create_and_update(old: list | None, new: list, denied: list[str]) -> None:
    obj = _daemonset(new)
    if old is not None and old == new:
        obj["metadata"]["labels"] = {"tier": "infra"}  # an UPDATE of the DaemonSet's own metadata only
    ctx = Context(
        operation="UPDATE" if old is not None else "CREATE",
        namespace="ml",
        username="mallory",
        namespace_labels={"spreadguard.io/team": "vision"},
        old_object=_daemonset(old) if old is not None else None,
    )
    webhook, vap = _agree(obj, ctx, "daemonset")
    assert vap == webhook == denied
