"""single-node-pinning: a group of several replicas that can only run on one node.

From the spec alone: ``nodeName``, a hostname ``nodeSelector``, or required node affinity allowing one host.
With a synced cluster view, also a node selection on any label (an instance id, a rack slot, a label of the
user's own) that only one node of the cluster carries.

What "allows" means here: the node selection alone (``nodeSelector`` and required node affinity), over every
node, schedulable or cordoned, whatever its taints and GPUs: a group whose selection leaves it one node is a
single point of failure whoever may use that node, and a selection that allows a cordoned node too is a pool
(the cordon is lifted after the drain). The expressions health avoidance adds (``NotIn`` the policy's flagged
values) are not counted: they follow health checks, not the user's choice. A cluster of one node is not a pin
(the selection excludes nothing). Gangs are judged like every group: a gang pinned to one node cannot restart
anywhere else when that node fails.
"""

from __future__ import annotations

from typing import Any

from webhook.engine import podspec
from webhook.engine.placement import selection_hosts
from webhook.engine.target import Finding, Target

ID = "single-node-pinning"
DEFAULT_ACTION = "deny"

FIX = (
    "one node failure stops every replica. Fix: remove the pin, or select a pool of nodes by a label they "
    "share (e.g. node.kubernetes.io/instance-type) so replicas land on different nodes"
)
AFFINITY = ("affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
_MAX_SHOWN = 160  # characters of the nodeSelector quoted in a message (the input's size is not the message's)


def check(t: Target) -> list[Finding]:
    if not t.multi:
        return []
    pin = podspec.pinned_host(t.spec)
    if pin is not None:
        steps, host = pin
        return [Finding(t.path("spec", *steps), f"{t.describe} can only run on node {host}: {FIX}")]
    return _pinned_by_labels(t)


def _pinned_by_labels(t: Target) -> list[Finding]:
    """A node selection that the cluster view shows only one node satisfying."""
    view = t.context.cluster
    if view is None or not view.synced or view.node_count + len(view.cordoned) < 2:
        return []
    selection = _user_selection(t)
    if not selection:
        return []
    hosts = selection_hosts(view, selection, t.context.meter)
    if hosts is None or len(hosts) != 1:
        return []
    host = hosts[0]
    state = " (cordoned)" if any(h == host for h, _taints, _labels in view.cordoned) else ""
    parts = []
    if selection.get("nodeSelector"):
        shown = ", ".join(f"{k}={v}" for k, v in selection["nodeSelector"].items())
        parts.append("nodeSelector " + (shown if len(shown) <= _MAX_SHOWN else shown[:_MAX_SHOWN] + "..."))
    if selection.get("affinity"):
        parts.append("required node affinity")
    steps = ("nodeSelector",) if selection.get("nodeSelector") else AFFINITY
    verb = "match" if len(parts) > 1 else "matches"
    return [
        Finding(
            t.path("spec", *steps),
            f"{t.describe} can only run on node {host}{state}: {' and '.join(parts)} {verb} no other node "
            f"of the cluster; {FIX}",
        )
    ]


def _user_selection(t: Target) -> dict[str, Any]:
    """The group's node selection as the user wrote it: ``nodeSelector`` and required node affinity, without
    the expressions health avoidance adds; {} when nothing narrows the nodes, or when the selection is not one
    the API server would accept for a Pod (a CRD's template is not validated like one): its pods would be
    rejected, so it pins nothing."""
    out: dict[str, Any] = {}
    selector = t.spec.get("nodeSelector")
    if selector is not None and not _strings(selector):
        return {}
    if selector:
        out["nodeSelector"] = selector
    cfg = t.policy.mutate.health
    avoid = [(a.key, set(a.values)) for a in cfg.avoidNodeLabels] if cfg is not None else []
    terms: list[dict[str, Any]] = []
    for term in podspec.required_node_terms(t.spec):
        given = term.get("matchExpressions") or []
        if not isinstance(given, list) or not all(_well_formed(e) for e in given):
            return {}
        exprs = [e for e in given if not _health(e, avoid)]
        if not exprs and not term.get("matchFields"):
            terms = []  # terms are ORed: one that asks nothing but health leaves every node
            break
        terms.append({**term, "matchExpressions": exprs})
    if terms:
        out["affinity"] = {"nodeAffinity": {AFFINITY[-1]: {"nodeSelectorTerms": terms}}}
    return out


def _health(expr: Any, avoid: list[tuple[str, set[str]]]) -> bool:
    """Whether ``expr`` only keeps pods off nodes flagged by health checks (what health avoidance adds)."""
    if not isinstance(expr, dict) or expr.get("operator") != "NotIn":
        return False
    values = expr.get("values") or []
    return isinstance(values, list) and any(
        expr.get("key") == key and all(isinstance(v, str) and v in flagged for v in values) for key, flagged in avoid
    )


def _strings(selector: Any) -> bool:
    return isinstance(selector, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in selector.items())


def _well_formed(expr: Any) -> bool:
    """A node selector requirement of the API's shape: string key and operator, a list of string values."""
    if not isinstance(expr, dict) or not isinstance(expr.get("key"), str) or not isinstance(expr.get("operator"), str):
        return False
    values = expr.get("values")
    return values is None or (isinstance(values, list) and all(isinstance(v, str) for v in values))
