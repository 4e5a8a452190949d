"""``/admit``: the single-hook answer is exactly what ``/mutate`` then ``/validate`` answer, in one call.

For every captured request and every example (allowed, mutated, denied): the admit answer carries the
mutate patch when the object is allowed, the validate denial (same status, same message) when not, and the
warnings of both; through the real server too.
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
