"""The native backstop (webhook/engine/backstop.py): the ValidatingAdmissionPolicy that `spreadguard policies
compile` makes from the policies. Shipped in manifests/ and kept in sync with the compiler; every CEL
expression compiles; and, evaluated with cel-python the way the API server runs a ValidatingAdmissionPolicy
(matchConditions, then variables, then validations; an error denies: failurePolicy Fail), it agrees with the
webhook's decisions on every captured Pod request and every Pod of the policy cases.

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
from webhook.engine.backstop import COMPILED_RULES, compile_policies
from webhook.engine.cases import case_context, load_cases, load_resource
from webhook.engine.decide import Decision, evaluate
from webhook.engine.policy import load_policies
from webhook.engine.target import Context
from webhook.server.review import AdmissionRequest

celpy = pytest.importorskip("celpy", reason="cel-python is not installed: the backstop's CEL is not evaluated")

SHIPPED = REPO / "manifests" / "base" / "isolation-backstop.yaml"
POLICIES = load_policies(REPO / "policies")
COMPILED = compile_policies(POLICIES)
VAP = next(o for o in COMPILED if o["kind"] == "ValidatingAdmissionPolicy")
ENV = celpy.Environment()


def _program(expression: str) -> Any:
    return ENV.program(ENV.compile(expression))


PROGRAMS = {
    "conditions": [(c["name"], _program(c["expression"])) for c in VAP["spec"]["matchConditions"]],
    "variables": [(v["name"], _program(v["expression"])) for v in VAP["spec"]["variables"]],
    "validations": [(v, _program(v["expression"])) for v in VAP["spec"]["validations"]],
}


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
    ]
    assert docs[1]["spec"] == {"policyName": docs[0]["metadata"]["name"], "validationActions": ["Deny"]}


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


def test_every_expression_compiles() -> None:
    for validation in VAP["spec"]["validations"]:
        _program(validation["expression"])
        if "messageExpression" in validation:
            _program(validation["messageExpression"])
    assert {
        v["message" if "message" in v else "messageExpression"].split("]")[0].strip("'[")
        for v in VAP["spec"]["validations"]
    } == set(COMPILED_RULES)


def test_backstop_excludes_what_the_webhooks_exclude() -> None:
    webhooks = [d for d in yaml.safe_load_all((REPO / "manifests" / "base" / "webhooks.yaml").read_text()) if d]
    pods = next(
        h
        for d in webhooks
        if d["kind"] == "ValidatingWebhookConfiguration"
        for h in d["webhooks"]
        if h["name"] == "pods.spreadguard.io"
    )
    assert VAP["spec"]["matchConstraints"]["namespaceSelector"] == pods["namespaceSelector"]
    hook_conditions = {c["name"]: c["expression"] for c in pods["matchConditions"]}
    for condition in VAP["spec"]["matchConditions"]:
        # the webhook's copies also test request.kind (its configuration lists more than pods)
        assert condition["name"] in hook_conditions, condition["name"]


def _namespace(name: str, labels: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}},
    }


def _cel_map(values: dict[str, Any]) -> Any:
    return celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in values.items()})


def backstop(request: dict, namespace: dict) -> list[str]:
    """What the ValidatingAdmissionPolicy answers: the messages of the failed validations ([] = admitted)."""
    activation: dict[str, Any] = {
        "request": celpy.json_to_cel(request),
        "object": celpy.json_to_cel(request.get("object")),
        "oldObject": celpy.json_to_cel(request.get("oldObject")),
        "namespaceObject": celpy.json_to_cel(namespace),
    }
    for _name, program in PROGRAMS["conditions"]:
        if not bool(program.evaluate(activation)):
            return []
    variables: dict[str, Any] = {}
    for name, program in PROGRAMS["variables"]:  # in order: each may use the ones before it
        activation["variables"] = _cel_map(variables)
        value = program.evaluate(activation)
        assert not isinstance(value, celpy.CELEvalError), f"variable {name}: {value}"
        variables[name] = value
    activation["variables"] = _cel_map(variables)
    failed = []
    for validation, program in PROGRAMS["validations"]:
        verdict = program.evaluate(activation)
        assert not isinstance(verdict, celpy.CELEvalError), f"{validation['expression']}: {verdict}"
        if not bool(verdict):
            failed.append(
                validation.get("message") or str(_program(validation["messageExpression"]).evaluate(activation))
            )
    return failed


def _request(obj: dict, ctx: Context) -> dict:
    return {
        "uid": "x",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
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
    vap = backstop(_request(obj, ctx), _namespace(ctx.namespace, ctx.namespace_labels))
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
