"""health-avoidance: keep GPU pods off nodes that health checks flagged, with required node
affinity ``NotIn`` for each label the policy lists (added to every term the user wrote)."""

from __future__ import annotations

from typing import Any

from webhook.engine import podspec
from webhook.engine.target import Target

ID = "health-avoidance"


def _has(term: dict[str, Any], key: str, values: list[str]) -> bool:
    return any(
        isinstance(e, dict)
        and e.get("key") == key
        and e.get("operator") == "NotIn"
        and isinstance(e.get("values") or [], list)
        and set(values) <= {v for v in e.get("values") or [] if isinstance(v, str)}
        for e in term.get("matchExpressions") or []
    )


def _well_formed(terms: list[dict[str, Any]]) -> bool:
    """Every term's ``matchExpressions`` is absent or a list (a loosely typed CRD can carry anything)."""
    return all(isinstance(term.get("matchExpressions"), list | None) for term in terms)


def mutate(t: Target) -> str | None:
    cfg = t.policy.mutate.health
    if cfg is None or not cfg.avoidNodeLabels or not t.gpu:
        return None
    terms = podspec.required_node_terms(t.spec)
    if not _well_formed(terms):
        return None  # nothing can be added safely; the API server's schema refuses such a template
    added = []
    for avoid in cfg.avoidNodeLabels:
        if terms and all(_has(term, avoid.key, avoid.values) for term in terms):
            continue
        expr = {"key": avoid.key, "operator": "NotIn", "values": list(avoid.values)}
        if not terms:
            required = podspec.path_to(
                t.template, "spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"
            )
            terms = podspec.child(required, "nodeSelectorTerms", list)
            terms.append({"matchExpressions": [expr]})
        else:  # terms are ORed: the expression must hold in each of them
            for term in terms:
                if not _has(term, avoid.key, avoid.values):
                    podspec.child(term, "matchExpressions", list).append(dict(expr, values=list(avoid.values)))
        added.append(f"{avoid.key} NotIn {','.join(avoid.values)}")
    return f"{t.describe}: avoids nodes flagged by health checks ({'; '.join(added)})" if added else None
