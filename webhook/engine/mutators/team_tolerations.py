"""team-tolerations: let a team's pods onto the nodes tainted for that team
(``spreadguard.io/team=<team>:NoSchedule``); pods of a borrowing priority class tolerate every
team's taint so idle capacity can be used, in the namespaces the policy lets borrow."""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.target import Target

ID = "team-tolerations"


def mutate(t: Target) -> str | None:
    cfg = t.policy.mutate.teamTolerations
    if cfg is None or not cfg.enabled:
        return None
    existing = podspec.tolerations(t.spec)
    if t.may_borrow():
        if any(x.get("key") == cfg.taintKey and x.get("operator") == "Exists" for x in existing):
            return None
        wanted = {"key": cfg.taintKey, "operator": "Exists", "effect": cfg.effect}
        note = f"{t.describe}: may borrow any team's nodes (priority class {t.spec['priorityClassName']})"
    elif t.team:
        if any(podspec.tolerates(x, cfg.taintKey, t.team, cfg.effect) for x in existing):
            return None
        wanted = {"key": cfg.taintKey, "operator": "Equal", "value": t.team, "effect": cfg.effect}
        note = f"{t.describe}: tolerates team {t.team}'s nodes"
    else:
        return None
    podspec.child(podspec.path_to(t.template, "spec"), "tolerations", list).append(wanted)
    return note
