"""Which controller identities a Pod's claimed owner is believed from (design.md, "Trust model").

An ownerReference is written by whoever creates the object, so it proves nothing by itself. A Pod
claiming a DaemonSet owner is treated as a per-node DaemonSet pod only when the DaemonSet controller
creates it; one claiming a Node owner (a static pod's mirror) only when that node's kubelet does.
"""

from __future__ import annotations

from typing import Any

from webhook.engine import workloads
from webhook.engine.target import Context

DAEMONSET_CONTROLLER = "system:serviceaccount:kube-system:daemon-set-controller"
NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"


def trusted_per_node(obj: dict[str, Any], ctx: Context) -> bool:
    """Whether ``obj``'s DaemonSet/Node ownerReference (if any) comes from that owner's controller."""
    owner = workloads.per_node_owner(obj)
    if owner is None:
        return False
    kind, name = owner
    if kind == "DaemonSet":
        return ctx.username == DAEMONSET_CONTROLLER
    node = (obj.get("spec") or {}).get("nodeName") if isinstance(obj.get("spec"), dict) else None
    return NODES_GROUP in ctx.groups and ctx.username == f"{NODE_USER_PREFIX}{name}" and (node is None or node == name)
