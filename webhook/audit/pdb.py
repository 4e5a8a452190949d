"""PodDisruptionBudgets that forbid every eviction (``kubectl drain`` then waits forever)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from webhook.audit.results import Ref
from webhook.engine import labels as labelsel
from webhook.engine.decide import Violation

AUDIT_POLICY = "spreadguard-audit"  # the policy name audit-only findings are reported under
PDB_RULE = "pdb-blocks-eviction"


@dataclass(frozen=True, slots=True)
class GroupPods:
    """One audited group, as a PodDisruptionBudget sees it: its pods' labels and how many there are.
    Kept for every audited group until ``finish()`` (a few hundred bytes each)."""

    labels: dict[str, str]
    replicas: int
    ref: Ref
    group: str

    @property
    def what(self) -> str:
        return f"{self.ref} {self.group}"


def _intstr(value: Any) -> tuple[int | None, bool]:
    """(number, is_percent) of an IntOrString; (None, False) when absent or malformed."""
    if isinstance(value, bool) or value is None:
        return None, False
    if isinstance(value, int):
        return value, False
    if isinstance(value, str):
        text = value.strip()
        pct = text.endswith("%")
        digits = text[:-1] if pct else text
        if digits.isdigit():
            return int(digits), pct
    return None, False


def pdb_findings(pdb: dict[str, Any], selected: Sequence[GroupPods]) -> list[Violation]:
    """A PDB that forbids every eviction: ``maxUnavailable: 0`` / ``"0%"``, or ``minAvailable`` at least the
    replicas it selects (or ``"100%"``). Such a PDB makes ``kubectl drain`` hang on every node running one of
    its pods, so GPU health remediation and upgrades stall."""
    spec = pdb.get("spec") or {}
    total = sum(p.replicas for p in selected)
    what = ", ".join(p.what for p in selected) or "no audited workload"
    fix = (
        "draining a node that runs one of its pods (GPU health remediation, upgrades) waits forever. Fix: allow "
        "one disruption, e.g. maxUnavailable: 1, and let spreading keep the rest running"
    )
    out = []
    max_u, _pct_u = _intstr(spec.get("maxUnavailable"))
    if "maxUnavailable" in spec and max_u == 0:
        out.append(
            Violation(
                PDB_RULE,
                AUDIT_POLICY,
                "spec.maxUnavailable",
                f"maxUnavailable {spec['maxUnavailable']!r} forbids every eviction of the pods it "
                f"selects ({what}): {fix}",
            )
        )
    min_a, pct_a = _intstr(spec.get("minAvailable"))
    if min_a is not None and "maxUnavailable" not in spec:
        if pct_a and min_a >= 100:
            need, blocked = "100%", True
        elif pct_a:
            pods = math.ceil(min_a * total / 100)  # the disruption controller rounds up
            need, blocked = f"{spec['minAvailable']} (= {pods} pods)", total > 0 and pods >= total
        else:
            need, blocked = str(min_a), total > 0 and min_a >= total
        if blocked:
            out.append(
                Violation(
                    PDB_RULE,
                    AUDIT_POLICY,
                    "spec.minAvailable",
                    f"minAvailable {need} leaves no pod to evict among the {total} replica(s) it "
                    f"selects ({what}): {fix}",
                )
            )
    return out


def selects(pdb: dict[str, Any], labels: dict[str, str]) -> bool:
    """policy/v1 semantics: an empty selector selects every pod of the namespace, a missing one none."""
    selector = (pdb.get("spec") or {}).get("selector")
    if selector is None:
        return False
    if isinstance(selector, dict) and not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True
    return labelsel.matches(selector, labels)
