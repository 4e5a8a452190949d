"""unschedulable-spread: required anti-affinity for more replicas than the cluster has eligible
nodes (only when the policy says ``onShortage: deny``; otherwise preferred is injected instead)."""

from __future__ import annotations

from webhook.engine.placement import shortage
from webhook.engine.target import Finding, Target

ID = "unschedulable-spread"
DEFAULT_ACTION = "deny"


def check(t: Target) -> list[Finding]:
    cfg = t.policy.mutate.antiAffinity
    if cfg is None or not cfg.enabled or cfg.mode != "required" or cfg.onShortage != "deny":
        return []
    short = shortage(t)
    if short is None:
        return []
    return [
        Finding(
            t.path("spec", "affinity"),
            f"{short}: required anti-affinity would leave replicas Pending "
            "forever. Fix: lower the replicas, widen the node selection, or let the policy use preferred",
        )
    ]
