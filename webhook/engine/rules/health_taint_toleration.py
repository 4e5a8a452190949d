"""health-taint-toleration: a toleration of a taint that GPU health checks put on failing nodes."""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.target import Finding, Target

ID = "health-taint-toleration"
DEFAULT_ACTION = "deny"


def check(t: Target) -> list[Finding]:
    cfg = t.policy.mutate.health
    if cfg is None or not cfg.avoidTaints:
        return []
    out = []
    for i, tol in enumerate(podspec.tolerations(t.spec)):
        if tol.get("key") in cfg.avoidTaints:
            out.append(
                Finding(
                    t.path("spec", "tolerations", i),
                    f"{t.describe} tolerates {tol['key']}, the taint GPU health checks put on failing nodes: it would "
                    "be scheduled onto hardware known to be broken and fail mid-run. Fix: remove this toleration",
                )
            )
    return out
