"""unschedulable-spread: required hostname anti-affinity for more pods (replicas plus a rolling update's
surge) than the cluster has eligible nodes: the rest would stay Pending forever.

Fires when the group's template carries such a term (its author's or one spreadguard added when the
group was smaller: an UPDATE that raises the replicas is judged too), or when the policy says
``onShortage: deny`` (otherwise spreadguard injects preferred instead, and says why).
"""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.placement import shortage
from webhook.engine.target import Finding, Target

ID = "unschedulable-spread"
DEFAULT_ACTION = "deny"


def _required_self(t: Target, key: str) -> bool:
    labels = t.labels
    return any(
        term.get("topologyKey") == key and podspec.term_selects(term, labels, t.namespace)
        for term in podspec.pod_affinity_terms(t.spec, "podAntiAffinity", required=True)
    )


def check(t: Target) -> list[Finding]:
    cfg = t.policy.mutate.antiAffinity
    if cfg is None or not cfg.enabled or not t.spreads:
        return []  # a gang (unless spreadGangs) or singleton gets no anti-affinity to be short of nodes for
    denying_policy = cfg.mode == "required" and cfg.onShortage == "deny"
    if not denying_policy and not _required_self(t, cfg.topologyKey):
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
