"""node-name-taint: ``spec.nodeName`` naming a node the pod may not use. The kubelet ignores NoSchedule
taints for a pod that names its node, so naming another team's node (or one GPU health checks tainted)
walks past the taint. Judged when the cluster view knows the node."""

from __future__ import annotations

from webhook.engine.target import Finding, Target

ID = "node-name-taint"
DEFAULT_ACTION = "deny"
DEFAULT_TAINT_KEY = "spreadguard.io/team"


def check(t: Target) -> list[Finding]:
    node = t.spec.get("nodeName")
    view = t.context.cluster
    if not isinstance(node, str) or not node or view is None or not view.synced:
        return []
    taints = view.taints_of(node)
    if taints is None:
        return []
    team_cfg = t.policy.mutate.teamTolerations
    team_key = team_cfg.taintKey if team_cfg else DEFAULT_TAINT_KEY
    health = t.policy.mutate.health
    avoid = set(health.avoidTaints) if health else set()
    for key, value, effect in taints:
        if key == team_key and value != (t.team or "") and not t.may_borrow():
            why = f"reserved for team {value}"
            owner = f"this pod belongs to team {t.team}" if t.team else "this pod belongs to no team"
        elif key in avoid:
            why, owner = "flagged by GPU health checks", "it would run on hardware known to be failing"
        else:
            continue
        return [
            Finding(
                t.path("spec", "nodeName"),
                f"{t.describe} names node {node}, which is tainted {key}={value}:{effect} ({why}); {owner}. "
                "The kubelet does not check NoSchedule taints for a pod that names its node. Fix: remove "
                "nodeName and let the scheduler place the pod",
            )
        ]
    return []
