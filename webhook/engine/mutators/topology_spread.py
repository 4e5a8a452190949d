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
larger than the policy's. A weaker one (``maxSkew: 1000``, ``ScheduleAnyway`` for a ``DoNotSchedule``
policy) would otherwise let a tenant switch the spreading off. When the policy's constraint is needed:

- its pair (key, whenUnsatisfiable) is free: it is added (beside a weaker constraint of the other
  pair: both apply, the scheduler honours each);
- the pair holds the template's own constraint selecting the group, with a larger ``maxSkew``: that
  constraint is tightened in place to the policy's ``maxSkew`` (a second one for the pair is
  invalid; the tenant's selector, ``matchLabelKeys``, ``minDomains`` and node policies are kept, and
  ``minDomains`` stays valid as whenUnsatisfiable does not change). Dropping theirs for ours would
  discard what they chose; adding ours under the other pair would either ask ``DoNotSchedule`` of a
  ``ScheduleAnyway`` policy (pods Pending where the policy accepts skew) or be weaker than asked;
- the pair holds a constraint for other pods: nothing can be added without an invalid spec, and it is
  not the group's to tighten; a warning says so.

A constraint spreadguard added or tightened earlier in this evaluation (an earlier policy: past the
end of the submitted list, or differing from the submitted one at its index) wins, as for every
mutator: a later policy adds nothing on the same key.
"""

from __future__ import annotations

from typing import Any

from webhook.engine import podspec
from webhook.engine.policy import SpreadConstraint
from webhook.engine.target import Target

ID = "topology-spread"


def _selector_keys(selector: dict[str, Any]) -> set[str]:
    keys = set(selector.get("matchLabels") or {})
    keys |= {str(e.get("key")) for e in selector.get("matchExpressions") or [] if isinstance(e, dict)}
    return keys


def _strict_enough(x: dict[str, Any], c: SpreadConstraint) -> bool:
    """Whether constraint ``x`` (same key, selecting the group) spreads at least as tightly as ``c``."""
    skew = x.get("maxSkew")
    if not isinstance(skew, int) or isinstance(skew, bool) or not 0 < skew <= c.maxSkew:
        return False
    return c.whenUnsatisfiable != "DoNotSchedule" or x.get("whenUnsatisfiable") == "DoNotSchedule"


def _describe(x: dict[str, Any]) -> str:
    return f"{x.get('whenUnsatisfiable')}, maxSkew {x.get('maxSkew')}"


def mutate(t: Target) -> str | None:
    if not t.group.selector or t.placement_owner or not t.spreads:
        return None
    labels = t.labels
    added: list[str] = []
    revision = t.kind.revision_label
    raw = t.submitted_spec.get("topologySpreadConstraints")
    submitted = raw if isinstance(raw, list) else []
    for c in t.policy.mutate.topologySpread:
        if t.group.replicas is not None and t.group.replicas < c.minReplicas:
            continue
        raw = t.spec.get("topologySpreadConstraints")
        on_key = [
            (i, x)
            for i, x in enumerate(raw if isinstance(raw, list) else [])
            if isinstance(x, dict) and x.get("topologyKey") == c.topologyKey
        ]
        selecting = [(i, x) for i, x in on_key if podspec.term_selects(x, labels, t.namespace)]
        if any(i >= len(submitted) or x != submitted[i] for i, x in selecting):
            continue  # spreadguard's own, from an earlier policy of this evaluation: it wins
        if any(_strict_enough(x, c) for _, x in selecting):
            continue  # the template's own spreads the group at least as tightly
        wanted = f"{c.whenUnsatisfiable}, maxSkew {c.maxSkew}"
        occupant = next((x for _, x in on_key if x.get("whenUnsatisfiable") == c.whenUnsatisfiable), None)
        if occupant is not None:  # the pair is taken: a second constraint for it is invalid
            skew = occupant.get("maxSkew")
            if any(x is occupant for _, x in selecting) and isinstance(skew, int) and not isinstance(skew, bool):
                occupant["maxSkew"] = c.maxSkew
                added.append(
                    f"{c.topologyKey} (the template's own constraint ({c.whenUnsatisfiable}, maxSkew {skew}) "
                    f"tightened to maxSkew {c.maxSkew})"
                )
            else:
                t.info.append(
                    f"{t.describe}, class {t.placement}: not spread over {c.topologyKey} ({wanted}): the template's "
                    f"constraint for that key and {c.whenUnsatisfiable} ({_describe(occupant)}) does not select the "
                    "group's pods, and the API allows one per key and whenUnsatisfiable"
                )
            continue
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
        weaker = "; ".join(_describe(x) for _, x in selecting)
        added.append(
            f"{c.topologyKey} ({wanted}; the template's own ({weaker}) does not keep the pods apart)"
            if weaker
            else c.topologyKey
        )
    if not added:
        return None
    return f"{t.describe}, class {t.placement}: spread over {', '.join(added)} (nodes it cannot use do not count)"
