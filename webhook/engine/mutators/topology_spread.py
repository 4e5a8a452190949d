"""topology-spread: ``topologySpreadConstraints`` from the policy (e.g. zones for serving),
selecting the group's own pods."""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.target import Target

ID = "topology-spread"


def mutate(t: Target) -> str | None:
    if not t.group.selector or t.placement_owner:
        return None
    labels = t.labels
    added = []
    for c in t.policy.mutate.topologySpread:
        if t.group.replicas is not None and t.group.replicas < c.minReplicas:
            continue
        existing = [x for x in t.spec.get("topologySpreadConstraints") or [] if isinstance(x, dict)]
        if any(
            x.get("topologyKey") == c.topologyKey and podspec.term_selects(x, labels, t.namespace) for x in existing
        ):
            continue
        podspec.child(podspec.path_to(t.template, "spec"), "topologySpreadConstraints", list).append(
            {
                "maxSkew": c.maxSkew,
                "topologyKey": c.topologyKey,
                "whenUnsatisfiable": c.whenUnsatisfiable,
                "labelSelector": t.group.selector,
            }
        )
        added.append(c.topologyKey)
    return f"{t.describe}: spread over {', '.join(added)}" if added else None
