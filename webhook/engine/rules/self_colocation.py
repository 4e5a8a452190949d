"""self-colocation: required pod affinity of a group to itself on the hostname key, which forces
every replica onto one node."""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.target import Finding, Target

ID = "self-colocation"
DEFAULT_ACTION = "deny"


def check(t: Target) -> list[Finding]:
    if not t.multi:
        return []
    labels = t.labels
    out = []
    for i, term in enumerate(podspec.pod_affinity_terms(t.spec, "podAffinity", required=True)):
        if term.get("topologyKey") == podspec.HOSTNAME and podspec.term_selects(term, labels, t.namespace):
            path = t.path("spec", "affinity", "podAffinity", "requiredDuringSchedulingIgnoredDuringExecution", i)
            out.append(
                Finding(
                    path,
                    f"{t.describe} requires its pods on the same node as each other, so every replica "
                    "lands on one node and one node failure stops them all. Fix: drop this term, or make it "
                    "preferred, or use a rack/zone topology key to keep replicas close without sharing a node",
                )
            )
    return out
