"""wildcard-toleration: ``operator: Exists`` with no key, on any pod of a governed namespace (team
isolation does not depend on what a pod requests)."""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.target import Finding, Target

ID = "wildcard-toleration"
DEFAULT_ACTION = "deny"


def check(t: Target) -> list[Finding]:
    out = []
    for i, tol in enumerate(podspec.tolerations(t.spec)):
        if not tol.get("key") and (tol.get("operator") or "Equal") == "Exists":
            out.append(
                Finding(
                    t.path("spec", "tolerations", i),
                    f"{t.describe} tolerates every taint (operator: Exists with no key): it "
                    "would land on nodes that GPU health checks tainted as failing and on every team's reserved "
                    "nodes. Fix: tolerate the specific taint keys you need instead",
                )
            )
    return out
