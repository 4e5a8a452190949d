"""``/admit``, the base install's one call per object: exactly what ``/mutate`` then ``/validate`` answer.

For every captured request and every example (allowed, mutated, denied): the admit answer carries the
mutate patch when the object is allowed, the validate denial (same status, same message) when not, and the
warnings of both; through the real server too.

Pod UPDATEs: the base's pods hook calls /admit on the Pod UPDATEs that change tolerations (in the two-hook install
only the validating hook got them). For every Pod of the captured requests and examples, as stored after its
CREATE, with a toleration added: /admit answers what /validate answers (the same denial, rule id and message) and
never carries a patch (a Pod's spec is immutable but for added tolerations: ValidatePodSpecUpdate).
"""

from __future__ import annotations

import base64
import copy
import json

import jsonpatch
import pytest
import yaml
from conftest import FIXTURES_DIR, REPO, Server, admission_review

from webhook.engine.policy import load_policies
from webhook.server.review import review

POLICIES = load_policies(REPO / "policies")
EXAMPLES = sorted((REPO / "examples").rglob("*.yaml"))
CASES = [pytest.param(json.loads(p.read_text()), id=p.name) for p in sorted(FIXTURES_DIR.glob("*-mutate.json"))] + [
    pytest.param(admission_review(yaml.safe_load(p.read_text()), f"ex-{p.stem}"), id=str(p.relative_to(REPO)))
    for p in EXAMPLES
]


def after_patch(body: dict, response: dict) -> dict:
    """The AdmissionReview the validating hook gets: the object with the mutate patch applied."""
    patched = copy.deepcopy(body)
    ops = json.loads(base64.b64decode(response["patch"])) if "patch" in response else []
    patched["request"]["object"] = jsonpatch.apply_patch(body["request"]["object"], ops)
    return patched


@pytest.mark.parametrize("body", CASES)
def test_admit_is_mutate_then_validate(body: dict) -> None:
    mutated = review(body, POLICIES, "mutate")["response"]
    validated = review(after_patch(body, mutated), POLICIES, "validate")["response"]
    admitted = review(body, POLICIES, "admit")["response"]
    assert admitted["uid"] == body["request"]["uid"]
    assert admitted["allowed"] is validated["allowed"]
    if validated["allowed"]:
        assert admitted.get("patch") == mutated.get("patch")
    else:
        assert "patch" not in admitted
        assert admitted["status"] == validated["status"]
    mutate_warnings = (
        mutated.get("warnings", [])
        if validated["allowed"]
        else [w for w in mutated.get("warnings", []) if not w.startswith("spreadguard added ")]
    )
    expected = mutate_warnings + validated.get("warnings", [])
    got = admitted.get("warnings", [])
    if len(expected) <= 20:
        assert got == expected
    else:  # capped at 20: the last line says how many more
        assert got[:19] == expected[:19] and got[19].endswith("more warnings not shown")


FOREIGN = {"key": "spreadguard.io/team", "operator": "Equal", "value": "nlp", "effect": "NoSchedule"}
OWN = {"key": "spreadguard.io/team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"}
WILDCARD = {"operator": "Exists"}
EDITOR = {"username": "mallory", "groups": ["system:authenticated"]}


def pod_update(body: dict, added: list[dict], labels: dict[str, str] | None = None) -> dict:
    """A Pod UPDATE of the pod ``body`` creates, as stored (after the /admit patch of its CREATE): ``added``
    tolerations appended (all Kubernetes lets change in a pod's spec), ``labels`` set, by a user."""
    created = review(body, POLICIES, "admit")["response"]
    stored = after_patch(body, created)["request"]["object"]
    changed = copy.deepcopy(stored)
    changed["spec"]["tolerations"] = [*(changed["spec"].get("tolerations") or []), *added]
    changed["metadata"].setdefault("labels", {}).update(labels or {})
    update = copy.deepcopy(body)
    update["request"].update(
        uid=body["request"]["uid"] + "-update",
        operation="UPDATE",
        object=changed,
        oldObject=stored,
        userInfo=EDITOR,
        options={"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"},
    )
    return update


POD_CASES = [p for p in CASES if p.values[0]["request"]["kind"]["kind"] == "Pod"]
POD_UPDATES = [
    pytest.param(pod_update(p.values[0], added, labels), id=f"{p.id}-{change}")
    for p in POD_CASES
    for change, added, labels in (
        ("foreign-toleration", [FOREIGN], None),
        ("wildcard-toleration", [WILDCARD], None),
        ("label-only", [], {"touched": "yes"}),  # not sent (pod-update-changes-tolerations); if it were: admitted
    )
]


def test_pod_updates_cover_captured_pods_and_examples() -> None:
    assert len(POD_CASES) >= 5 and any(p.id == "pod.yaml" or p.id.endswith("/pod.yaml") for p in POD_CASES)


@pytest.mark.parametrize("body", POD_UPDATES)
def test_admit_on_a_pod_update_answers_as_validate_and_never_patches(body: dict) -> None:
    admitted = review(body, POLICIES, "admit")["response"]
    validated = review(body, POLICIES, "validate")["response"]
    assert "patch" not in admitted and "patchType" not in admitted, "a Pod UPDATE may not change the spec"
    assert admitted["allowed"] is validated["allowed"]
    assert admitted.get("status") == validated.get("status")
    assert admitted.get("warnings") == validated.get("warnings")
    assert admitted.get("auditAnnotations", {}).get("violations") == validated.get("auditAnnotations", {}).get(
        "violations"
    )
    added = body["request"]["object"]["spec"]["tolerations"][len(body["request"]["oldObject"]["spec"]["tolerations"]) :]
    if FOREIGN in added:  # no pod here is of team nlp
        assert admitted["allowed"] is False
        assert "[foreign-team-toleration]" in admitted["status"]["message"]
    if not added:
        assert admitted["allowed"] is True


def test_pod_update_adding_another_teams_toleration_is_denied_by_rule_and_message() -> None:
    """A team vision pod (examples/pod.yaml) given team nlp's toleration: the one denial, naming the rule and the
    toleration added (index 1: after the team toleration spreadguard added at CREATE)."""
    update = pod_update(admission_review(yaml.safe_load((REPO / "examples/pod.yaml").read_text()), "u-1"), [FOREIGN])
    assert update["request"]["oldObject"]["spec"]["tolerations"] == [OWN], "spreadguard added the team's own"
    resp = review(update, POLICIES, "admit")["response"]
    assert resp["allowed"] is False and resp["status"]["code"] == 403
    first, rule, *more = resp["status"]["message"].splitlines()
    assert first == "spreadguard denied Pod ml/cuda-smoke-test: 1 violation(s)" and not more
    assert rule.startswith("- [foreign-team-toleration] spec.tolerations[1]: ") and "team 'nlp'" in rule
    assert resp["auditAnnotations"]["violations"] == "foreign-team-toleration"
    own = pod_update(admission_review(yaml.safe_load((REPO / "examples/pod.yaml").read_text()), "u-2"), [OWN])
    assert review(own, POLICIES, "admit")["response"] == review(own, POLICIES, "validate")["response"]


def test_examples_cover_allowed_mutated_and_denied() -> None:
    outcomes = set()
    for param in CASES:
        response = review(param.values[0], POLICIES, "admit")["response"]
        outcomes.add("denied" if not response["allowed"] else "mutated" if "patch" in response else "allowed")
    assert outcomes == {"allowed", "mutated", "denied"}


def test_admit_through_the_server(server: Server) -> None:
    denied = admission_review(
        yaml.safe_load((REPO / "examples/denied/foreign-team-toleration.yaml").read_text()), "a-1"
    )
    resp = server.post("/admit", denied).json()["response"]
    assert resp["allowed"] is False and "[foreign-team-toleration]" in resp["status"]["message"]
    job = admission_review(yaml.safe_load((REPO / "examples/pytorchjob.yaml").read_text()), "a-2")
    resp = server.post("/admit", job).json()["response"]
    assert resp["allowed"] is True and resp["patchType"] == "JSONPatch"
    assert any("[singleton-role]" in w for w in resp["warnings"])  # a validate warning, in the same answer
    assert server.get("/admit").status_code == 405


def test_admit_judges_a_pod_update_through_the_server(server: Server) -> None:
    """The real server: /admit and /validate give a Pod UPDATE the same answer, without a patch."""
    pod = yaml.safe_load((REPO / "examples/pod.yaml").read_text())
    for added, allowed in (([FOREIGN], False), ([OWN], True), ([], True)):
        update = pod_update(admission_review(pod, f"s-{len(added)}-{allowed}"), added, {"touched": "yes"})
        admitted = server.post("/admit", update).json()["response"]
        validated = server.post("/validate", update).json()["response"]
        assert admitted["allowed"] is allowed and "patch" not in admitted
        assert admitted == validated
