"""Runs the default policies' own test cases (policies/tests/*.yaml) and checks they cover every
kind and every rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.engine.cases import load_cases, load_resource, run_case
from webhook.engine.policy import load_policies
from webhook.engine.workloads import KINDS, kind_of

REPO = Path(__file__).resolve().parents[2]
CASES = load_cases(REPO / "policies" / "tests")
POLICIES = load_policies(REPO / "policies")


@pytest.mark.parametrize(("path", "case"), CASES, ids=[c.get("name", "?") for _, c in CASES])
def test_policy_case(path: Path, case: dict) -> None:
    result = run_case(case, POLICIES, path.parent, str(path))
    assert result.passed, "\n".join(result.problems) + ("\n" + result.diff if result.diff else "")


def test_every_kind_has_a_case() -> None:
    covered = {(k.group, k.kind) for _, c in CASES if (k := kind_of(load_resource(c["resource"], REPO)))}
    assert set(KINDS) - covered == set()


def test_every_rule_trips_once_and_has_a_near_miss() -> None:
    from webhook.engine.rules import RULE_IDS

    expects = [c.get("expect") or {} for _, c in CASES]
    tripped = {r for e in expects for key in ("violations", "warnings") for r in e.get(key) or []}
    # unschedulable-spread trips on a replica raise under required anti-affinity (placement.yaml); its
    # onShortage: deny form needs a policy change: tests/engine/test_placement.py
    assert set(RULE_IDS) - tripped == set()
    near_misses = [c for _, c in CASES if c["name"].startswith("near miss")]
    assert len(near_misses) >= len(RULE_IDS)


def test_a_broken_expectation_fails() -> None:
    """The runner itself can fail: a wrong expectation is reported with what was found."""
    case = {"name": "wrong", "resource": "examples/pytorchjob.yaml", "expect": {"allowed": False}}
    result = run_case(case, POLICIES, REPO, "inline")
    assert not result.passed
    assert result.problems == ["allowed: expected False, got True"]


def _fields(schema: dict, node: dict, prefix: str = "") -> set[str]:
    """Every property name reachable in the policy schema."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].split("/")[-1]]
    out: set[str] = set()
    for sub in node.get("anyOf", []) + ([node["items"]] if isinstance(node.get("items"), dict) else []):
        out |= _fields(schema, sub, prefix)
    if isinstance(node.get("additionalProperties"), dict):
        out |= _fields(schema, node["additionalProperties"], prefix)
    for name, prop in (node.get("properties") or {}).items():
        out.add(name)
        out |= _fields(schema, prop, prefix)
    return out


def test_author_docs_cover_every_field_and_rule() -> None:
    from webhook.engine.mutators import MUTATOR_IDS
    from webhook.engine.policy import schema
    from webhook.engine.rules import RULE_IDS

    doc = (REPO / "docs" / "policies.md").read_text()
    missing = sorted(f for f in _fields(schema(), schema()) if f"{f}" not in doc)
    assert missing == []
    assert [r for r in RULE_IDS if f"`{r}`" not in doc] == []
    assert [m for m in MUTATOR_IDS if f"`{m}`" not in doc] == []
