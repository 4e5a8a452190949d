"""topology-spread: ``topologySpreadConstraints`` from the policy (e.g. zones for serving),
selecting the group's own pods; only for groups whose class spreads (never a gang across zones).

Each constraint must pass the API server's validation (pkg/apis/core/validation,
validateTopologySpreadConstraints): ``maxSkew`` > 0, one constraint per (topologyKey,
whenUnsatisfiable) pair, ``minDomains`` only with ``DoNotSchedule``, ``matchLabelKeys`` only beside a
``labelSelector`` and never naming a key the selector uses (tests/engine/apirules.py encodes them).
``nodeTaintsPolicy: Honor`` keeps nodes the pod cannot use (other teams', health-tainted) out of the
domains; ``matchLabelKeys`` with the controller's revision label counts only the current rollout.

A constraint already in the template stands in for the policy's only when it is at least as strict:
same key, selects the group, ``DoNotSchedule`` when the policy asks ``DoNotSchedule``, ``maxSkew`` no
larger than the policy's (``spread_by``). A weaker one (``maxSkew: 1000``, ``ScheduleAnyway`` for a
``DoNotSchedule`` policy) would otherwise let a tenant switch the spreading off. When the policy's
constraint is needed:

- its pair (key, whenUnsatisfiable) is free: it is added, beside a weaker constraint of the other
  pair if there is one (both apply: the scheduler honours each);
- the pair is held by a constraint of the template (looser, or for other pods): a second one for the
  pair is invalid, and rewriting the tenant's is not spreadguard's to do (design: never remove or
  rewrite what the user wrote; add, or reject with a reason). Adding ours under the other pair is no
  answer either: ``DoNotSchedule`` for a ``ScheduleAnyway`` policy leaves pods Pending where the policy
  accepts skew, the reverse is weaker than asked. Nothing is added, and the rule ``weak-spread``
  rejects the object saying which constraint to tighten (or only warns, as the policy's action says).

A constraint spreadguard added earlier in this evaluation (an earlier policy; in the working copy past
the end of the submitted list) wins, as for every mutator: a later policy adds nothing on the same key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webhook.engine import podspec
from webhook.engine.policy import SpreadConstraint
from webhook.engine.target import Target

ID = "topology-spread"


def _selector_keys(selector: dict[str, Any]) -> set[str]:
    keys = set(selector.get("matchLabels") or {})
    keys |= {str(e.get("key")) for e in selector.get("matchExpressions") or [] if isinstance(e, dict)}
    return keys


def strict_enough(x: dict[str, Any], c: SpreadConstraint) -> bool:
    """Whether constraint ``x`` (same key, selecting the group) spreads at least as tightly as ``c``."""
    skew = x.get("maxSkew")
    if not isinstance(skew, int) or isinstance(skew, bool) or not 0 < skew <= c.maxSkew:
        return False
    return c.whenUnsatisfiable != "DoNotSchedule" or x.get("whenUnsatisfiable") == "DoNotSchedule"


def describe(x: dict[str, Any]) -> str:
    return f"{x.get('whenUnsatisfiable')}, maxSkew {x.get('maxSkew')}"


@dataclass
class Existing:
    """What the template has on one policy constraint's key."""

    spread: bool  # a constraint at least as strict, or spreadguard's own from an earlier policy
    weaker: list[dict[str, Any]]  # the template's own constraints selecting the group, looser than the policy's
    occupant: tuple[int, dict[str, Any]] | None  # (index, constraint) holding the policy's pair, when not spread


def spread_by(t: Target, c: SpreadConstraint) -> Existing:
    """The constraints of ``t``'s template on ``c``'s key, judged against ``c``. Mutators only append to the
    list, so an entry past the submitted list's length is spreadguard's (an earlier policy's)."""
    raw = t.submitted_spec.get("topologySpreadConstraints")
    own = len(raw) if isinstance(raw, list) else 0
    raw = t.spec.get("topologySpreadConstraints")
    labels, spread, weaker, occupant = t.labels, False, [], None
    for i, x in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(x, dict) or x.get("topologyKey") != c.topologyKey:
            continue
        if x.get("whenUnsatisfiable") == c.whenUnsatisfiable:
            occupant = (i, x)
        if not podspec.term_selects(x, labels, t.namespace):
            continue
        if i >= own or strict_enough(x, c):
            spread = True
        else:
            weaker.append(x)
    return Existing(spread, weaker, None if spread else occupant)


def mutate(t: Target) -> str | None:
    if not t.group.selector or t.placement_owner or not t.spreads:
        return None
    added: list[str] = []
    revision = t.kind.revision_label
    for c in t.policy.mutate.topologySpread:
        if t.group.replicas is not None and t.group.replicas < c.minReplicas:
            continue
        existing = spread_by(t, c)
        if existing.spread or existing.occupant is not None:
            continue  # spread already; or the pair is held: a duplicate is invalid (rule weak-spread judges it)
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
        weaker = "; ".join(describe(x) for x in existing.weaker)
        added.append(
            f"{c.topologyKey} ({c.whenUnsatisfiable}, maxSkew {c.maxSkew}; the template's own ({weaker}) does not "
            "keep the pods apart)"
            if weaker
            else c.topologyKey
        )
    if not added:
        return None
    return f"{t.describe}, class {t.placement}: spread over {', '.join(added)} (nodes it cannot use do not count)"
