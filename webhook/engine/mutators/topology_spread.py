"""topology-spread: ``topologySpreadConstraints`` from the policy (e.g. zones for serving),
selecting the group's own pods; only for groups whose class spreads (never a gang across zones).

Each constraint must pass the API server's validation (pkg/apis/core/validation,
validateTopologySpreadConstraints): one constraint per (topologyKey, whenUnsatisfiable) pair,
``matchLabelKeys`` only beside a ``labelSelector`` and never naming a key the selector uses.
``nodeTaintsPolicy: Honor`` keeps nodes the pod cannot use (other teams', health-tainted) out of the
domains; ``matchLabelKeys`` with the controller's revision label counts only the current rollout.
"""

from __future__ import annotations

from typing import Any

from webhook.engine import podspec
from webhook.engine.target import Target

ID = "topology-spread"


def _selector_keys(selector: dict[str, Any]) -> set[str]:
    keys = set(selector.get("matchLabels") or {})
    keys |= {str(e.get("key")) for e in selector.get("matchExpressions") or [] if isinstance(e, dict)}
    return keys


def mutate(t: Target) -> str | None:
    if not t.group.selector or t.placement_owner or not t.spreads:
        return None
    labels = t.labels
    added = []
    revision = t.kind.revision_label
    for c in t.policy.mutate.topologySpread:
        if t.group.replicas is not None and t.group.replicas < c.minReplicas:
            continue
        existing = [x for x in t.spec.get("topologySpreadConstraints") or [] if isinstance(x, dict)]
        if any(
            x.get("topologyKey") == c.topologyKey
            and (podspec.term_selects(x, labels, t.namespace) or x.get("whenUnsatisfiable") == c.whenUnsatisfiable)
            for x in existing
        ):
            continue  # already spread, or the pair (key, whenUnsatisfiable) is taken: a duplicate is invalid
        constraint: dict[str, Any] = {
            "maxSkew": c.maxSkew,
            "topologyKey": c.topologyKey,
            "whenUnsatisfiable": c.whenUnsatisfiable,
            "labelSelector": t.group.selector,
            "nodeTaintsPolicy": "Honor",
        }
        if revision and revision not in _selector_keys(t.group.selector):
            constraint["matchLabelKeys"] = [revision]
        podspec.child(podspec.path_to(t.template, "spec"), "topologySpreadConstraints", list).append(constraint)
        added.append(c.topologyKey)
    if not added:
        return None
    return f"{t.describe}, class {t.placement}: spread over {', '.join(added)} (nodes it cannot use do not count)"
