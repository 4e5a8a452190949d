"""Runs the default policies' own test cases (policies/tests/*.yaml) and checks they cover every
kind and every rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.casefile import load_cases, load_resource, run_case
from webhook.policy import load_policies
from webhook.rules import RULES
from webhook.workloads import KINDS, kind_of

REPO = Path(__file__).resolve().parents[1]
CASES = load_cases(REPO / "policies" / "tests")
POLICIES = load_policies(REPO / "policies")


@pytest.mark.parametrize(("path", "case"), CASES, ids=[c.get("name", "?") for _, c in CASES])
def test_policy_case(path: Path, case: dict) -> None:
    result = run_case(case, POLICIES, path.parent, str(path))
    assert result.passed, "\n".join(result.problems) + ("\n" + result.diff if result.diff else "")


def test_every_kind_has_a_case() -> None:
    covered = {(k.group, k.kind) for _, c in CASES if (k := kind_of(load_resource(c["resource"], REPO)))}
    assert set(KINDS) - covered == set()


def test_every_rule_is_denied_once_and_has_a_near_miss() -> None:
    denied = {r for _, c in CASES for r in (c.get("expect") or {}).get("violations") or []}
    assert denied == set(RULES)
    near_misses = [c for _, c in CASES if c["name"].startswith("near miss")]
    assert len(near_misses) >= len(RULES)


def test_a_broken_expectation_fails() -> None:
    """The runner itself can fail: a wrong expectation is reported with what was found."""
    case = {"name": "wrong", "resource": "examples/pytorchjob.yaml", "expect": {"allowed": False}}
    result = run_case(case, POLICIES, REPO, "inline")
    assert not result.passed
    assert result.problems == ["allowed: expected False, got True"]
