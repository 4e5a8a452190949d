"""foreign-team-toleration: a toleration for another team's taint (team isolation)."""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.target import Finding, Target

ID = "foreign-team-toleration"
DEFAULT_ACTION = "deny"
DEFAULT_TAINT_KEY = "spreadguard.io/team"


def check(t: Target) -> list[Finding]:
    cfg = t.policy.mutate.teamTolerations
    key = cfg.taintKey if cfg else DEFAULT_TAINT_KEY
    borrowing = cfg.borrowingPriorityClasses if cfg else []
    lenders = cfg.borrowingNamespaces if cfg else []
    own = f"team {t.team}" if t.team else "no team (label spreadguard.io/team)"
    out = []
    for i, tol in enumerate(podspec.tolerations(t.spec)):
        if tol.get("key") != key:
            continue
        op = tol.get("operator") or "Equal"
        if op == "Exists" and not t.may_borrow():
            what = "every team's taint"
            fix = (
                f"remove it; only pods of a borrowing priority class ({', '.join(borrowing) or 'none configured'}) "
                f"in the namespaces the policy lets borrow ({', '.join(lenders) or 'none'}) may use every team's nodes"
            )
        elif op == "Equal" and (tol.get("value") or "") != (t.team or ""):
            what = f"the taint of team {tol.get('value')!r}"
            fix = f"remove it; spreadguard adds the toleration for your own team ({key}=<your team>)"
        else:
            continue
        out.append(
            Finding(
                t.path("spec", "tolerations", i),
                f"{t.describe} tolerates {what} ({key}) but belongs to {own}: it would take nodes reserved for "
                f"another team. Fix: {fix}",
            )
        )
    return out
