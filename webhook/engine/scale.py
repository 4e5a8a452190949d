"""Scale subresources: ``deployments/scale``, ``statefulsets/scale``, ``replicasets/scale`` and
``leaderworkersets/scale`` (``kubectl scale``, the HPA).

The request carries an ``autoscaling/v1`` Scale, both as object and oldObject: name, namespace,
``spec.replicas`` and ``status.selector``, nothing of the pod template. What a template-based rule
needs (a pin to one node, GPU requests, tolerations) is not there, and the engine fetches nothing.
So the limit, stated in every note: from the Scale and the node view spreadguard can only tell that
more replicas than the cluster's schedulable nodes must share nodes. A scale that changes the
replicas of the object itself (an UPDATE of the Deployment: ``kubectl apply``/``edit``) is judged in
full (decide._rescaled), and each new pod still meets the Pod backstop.
"""

from __future__ import annotations

from typing import Any

from webhook.engine.target import Context

SCALE_GROUP = "autoscaling"


def is_scale(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("kind") == "Scale"
        and str(obj.get("apiVersion") or "").split("/", 1)[0] == SCALE_GROUP
    )


def _replicas(obj: dict[str, Any] | None) -> int | None:
    value = ((obj or {}).get("spec") or {}).get("replicas")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def judge(obj: dict[str, Any], ctx: Context) -> list[str]:
    """Warnings for a scale request: only a raise beyond the cluster's schedulable nodes is visible."""
    new, old = _replicas(obj), _replicas(ctx.old_object)
    if new is None or (old is not None and new <= old):
        return []
    name = str((obj.get("metadata") or {}).get("name") or "")[:253]
    what = f"{ctx.resource or 'object'}/{name}"
    view = ctx.cluster
    if view is None or not view.synced:
        return []
    nodes = view.node_count
    if new <= nodes:
        return []
    share = -(-new // max(nodes, 1))
    return [
        f"scale {what} {old if old is not None else '?'} -> {new}: the cluster has {nodes} schedulable nodes, so "
        f"replicas must share nodes (up to {share} on one) and one node failure takes several of them. "
        "Judged from the Scale alone (it carries no pod template): pinning and GPU fit are checked when the "
        "object itself is updated and on each new pod"
    ]
