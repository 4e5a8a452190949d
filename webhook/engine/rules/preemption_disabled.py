"""preemption-disabled: ``preemptionPolicy: Never`` masks capacity problems and starves the scheduler."""

from __future__ import annotations

from webhook.engine.target import Finding, Target

ID = "preemption-disabled"
DEFAULT_ACTION = "warn"


def check(t: Target) -> list[Finding]:
    if t.spec.get("preemptionPolicy") != "Never":
        return []
    return [
        Finding(
            t.path("spec", "preemptionPolicy"),
            f"{t.describe} sets preemptionPolicy: Never: it hides a capacity shortage instead of fixing it and keeps "
            "the scheduler from making room for higher-priority work. Fix: remove it and use a lower priority class",
        )
    ]
