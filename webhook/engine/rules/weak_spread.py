"""weak-spread: a template constraint that holds the place the policy's topology spread constraint needs
while spreading the group less, so spreadguard cannot add its own: the API allows one constraint per
(topologyKey, whenUnsatisfiable) pair (pkg/apis/core/validation, validateTopologySpreadConstraints).

A tenant could otherwise switch zone spreading off by writing ``maxSkew: 1000`` (or a constraint for
other pods) under the policy's pair. spreadguard never rewrites what the user wrote (design.md), so the
answer is this rule: deny with the fix (or warn, as the policy says) where the policy's constraint is
``DoNotSchedule``, a guarantee the tenant would evade; where it is ``ScheduleAnyway``, a preference the
scheduler may ignore anyway, the finding is a warning whatever the action, so a serving Deployment with
its own soft zone spread (say ``maxSkew: 2``) is admitted and told, not refused. A constraint at least as strict as
the policy's (same key, selects the group, ``DoNotSchedule`` when asked, ``maxSkew`` no larger) counts
as spread and does not trip it (mutators/topology_spread.py decides what stands in for the policy's).

Judged on the workload, where the tenant wrote it and can fix it; not at a Pod of a controller (group
size unknown): denying the pods of a workload admitted earlier (before spreadguard, or under warn)
would leave it with fewer replicas, worse than the weak spread.
"""

from __future__ import annotations

from webhook.engine.mutators.topology_spread import describe, spread_by
from webhook.engine.target import Finding, Target

ID = "weak-spread"
DEFAULT_ACTION = "deny"


def check(t: Target) -> list[Finding]:
    if not t.group.selector or t.placement_owner or not t.spreads or t.group.replicas is None:
        return []
    out = []
    for c in t.policy.mutate.topologySpread:
        if t.group.replicas < c.minReplicas:
            continue
        existing = spread_by(t, c)
        if existing.occupant is None:
            continue
        i, x = existing.occupant
        wanted = f"{c.whenUnsatisfiable}, maxSkew {c.maxSkew}"
        if any(x is w for w in existing.weaker):
            why = f"spreads the group more loosely ({describe(x)}) than the policy's ({wanted})"
            fix = f"lower its maxSkew to {c.maxSkew}"
        else:
            why = f"selects other pods than the group's ({describe(x)}), where the policy spreads the group ({wanted})"
            fix = "move it to the other whenUnsatisfiable or remove it"
        out.append(
            Finding(
                advisory=c.whenUnsatisfiable != "DoNotSchedule",
                path=t.path("spec", "topologySpreadConstraints", i),
                message=f"{t.describe}: this constraint on {c.topologyKey} {why} and holds the one place the API "
                f"allows for a constraint on ({c.topologyKey}, {c.whenUnsatisfiable}), so the group is not kept spread "
                f"over {c.topologyKey}. Fix: {fix}, or remove it and let spreadguard add its own",
            )
        )
    return out
