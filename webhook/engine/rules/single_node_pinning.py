"""single-node-pinning: a group of several replicas that can only run on one node."""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.target import Finding, Target

ID = "single-node-pinning"
DEFAULT_ACTION = "deny"

FIX = (
    "one node failure stops every replica. Fix: remove the pin, or select a pool of nodes by a "
    "label they share (e.g. node.kubernetes.io/instance-type) so replicas land on different nodes"
)


def check(t: Target) -> list[Finding]:
    if not t.multi:
        return []
    pin = podspec.pinned_host(t.spec)
    if pin is None:
        return []
    steps, host = pin
    return [Finding(t.path("spec", *steps), f"{t.describe} can only run on node {host}: {FIX}")]
