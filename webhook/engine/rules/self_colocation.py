"""self-colocation: required pod affinity on the hostname key in a group of several replicas.

To the group itself, it forces every replica onto one node. To any other pod set (an "anchor"), it forces
every replica onto a node that runs one of those pods: onto the anchor's node when that is one pod (or pods
on one node), which the admission request cannot rule out (the webhook sees nodes, not pods).

Judged in every class, gangs included (as before for a gang's affinity to itself): spreadguard compacts a
gang with *preferred* hostname affinity only (mutators/gang_affinity.py), because a required one leaves a gang
that outgrows one node Pending forever, holding the GPUs its placed pods took, and ties its restart to the
selected pods' node. A gang that should share one node says so with a preferred term, which this rule never
judges.
"""

from __future__ import annotations

import json
from typing import Any

from webhook.engine import podspec
from webhook.engine.target import Finding, Target

ID = "self-colocation"
DEFAULT_ACTION = "deny"
_MAX_SHOWN = 160  # characters of a label selector quoted in a message


def check(t: Target) -> list[Finding]:
    if not t.multi:
        return []
    labels = t.labels
    out = []
    for i, term in enumerate(podspec.pod_affinity_terms(t.spec, "podAffinity", required=True)):
        if term.get("topologyKey") != podspec.HOSTNAME:
            continue
        path = t.path("spec", "affinity", "podAffinity", "requiredDuringSchedulingIgnoredDuringExecution", i)
        if podspec.term_selects(term, labels, t.namespace):
            message = (
                f"{t.describe} requires its pods on the same node as each other, so every replica "
                "lands on one node and one node failure stops them all. Fix: drop this term, or make it "
                "preferred, or use a rack/zone topology key to keep replicas close without sharing a node"
            )
        else:
            message = (
                f"{t.describe} requires each pod on a node that runs a pod selected by {_shown(term)} "
                f"(topologyKey {podspec.HOSTNAME}): when that is one pod, or pods on one node, every replica lands "
                "on that node and one node failure stops them all. Fix: make this term preferred, use a rack/zone "
                "topology key, or, if the selected pods run on every node of a pool (a DaemonSet), select that "
                "pool by a node label instead"
            )
        out.append(Finding(path, message))
    return out


def _shown(term: dict[str, Any]) -> str:
    """The term's pod selector as users read it (``app=anchor``), bounded in length."""
    selector = term.get("labelSelector")
    if not isinstance(selector, dict) or not selector:
        text = "no labelSelector"
    elif set(selector) == {"matchLabels"} and isinstance(selector["matchLabels"], dict):
        text = ", ".join(f"{k}={v}" for k, v in selector["matchLabels"].items())
    else:
        text = json.dumps(selector, sort_keys=True, default=str)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
