"""single-node-pinning: a group of several replicas that can only run on one node."""

from __future__ import annotations

from webhook import podspec
from webhook.target import Finding, Target

ID = "single-node-pinning"
DEFAULT_ACTION = "deny"

FIX = (
    "one node failure stops every replica. Fix: remove the pin, or select a pool of nodes by a "
    "label they share (e.g. node.kubernetes.io/instance-type) so replicas land on different nodes"
)


def _pinned_host(t: Target) -> tuple[str, str] | None:
    """(path, host) of the first pin that leaves a single node, or None."""
    spec = t.spec
    if spec.get("nodeName"):
        return t.path("spec", "nodeName"), str(spec["nodeName"])
    host = (spec.get("nodeSelector") or {}).get(podspec.HOSTNAME)
    if host:
        return t.path("spec", "nodeSelector", podspec.HOSTNAME), str(host)
    terms = podspec.required_node_terms(spec)
    if terms:
        allowed: set[str] = set()
        for term in terms:  # terms are ORed: every one must restrict the host for a pin
            hosts = podspec.hosts_allowed_by_term(term)
            if hosts is None:
                return None
            allowed |= hosts
        if len(allowed) == 1:
            path = t.path("spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
            return path, next(iter(allowed))
    return None


def check(t: Target) -> list[Finding]:
    if not t.multi:
        return []
    pin = _pinned_host(t)
    if pin is None:
        return []
    path, host = pin
    return [Finding(path, f"{t.describe} can only run on node {host}: {FIX}")]
