"""Exemptions: ``spreadguard.io/exempt: "<id>[,<id>...]"`` plus ``spreadguard.io/exempt-reason`` on an
object skip those rules or mutations, if the request's user may grant them under the policy.

Who may: a user in ``exemptions.allowedUsers`` or in one of ``allowedGroups``; on UPDATE, anyone,
when the annotation is unchanged since it was granted; and controllers (``exemptions.controllers``
username globs) creating an object with a controller ownerReference: the exemption then comes from
the owner's pod template, which spreadguard copied there when the owner was admitted.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from webhook.engine.policy import Policy
from webhook.engine.target import Context

EXEMPT = "spreadguard.io/exempt"
REASON = "spreadguard.io/exempt-reason"
PATH = f"metadata.annotations[{EXEMPT}]"


@dataclass(frozen=True)
class Request:
    ids: frozenset[str]
    reason: str
    raw: str


@dataclass(frozen=True)
class Verdict:
    granted: bool
    how: str  # who granted it, when granted; why not, otherwise


def _annotations(obj: dict[str, Any] | None) -> dict[str, Any]:
    meta = (obj or {}).get("metadata") or {}
    ann = meta.get("annotations")
    return ann if isinstance(ann, dict) else {}


def requested(obj: dict[str, Any]) -> Request | None:
    """The exemption an object asks for, or None."""
    ann = _annotations(obj)
    raw = ann.get(EXEMPT)
    if not isinstance(raw, str) or not raw.strip():
        return None
    ids = frozenset(part.strip() for part in raw.split(",") if part.strip())
    reason_raw = ann.get(REASON)
    reason = reason_raw if isinstance(reason_raw, str) else ""
    return Request(ids, reason.strip(), raw)


def _controller_owned(obj: dict[str, Any]) -> bool:
    owners = ((obj.get("metadata") or {}).get("ownerReferences")) or []
    return any(isinstance(o, dict) and o.get("controller") for o in owners)


def authorize(req: Request, policy: Policy, ctx: Context, obj: dict[str, Any]) -> Verdict:
    """Whether the request may use the exemption ``req`` under ``policy``, and why."""
    cfg = policy.spec.exemptions
    if ctx.operation == "UPDATE" and ctx.old_object is not None:
        old = _annotations(ctx.old_object)
        if old.get(EXEMPT) == req.raw:
            return Verdict(True, "unchanged since it was granted")
    if any(fnmatch.fnmatchcase(ctx.username, pat) for pat in cfg.controllers) and _controller_owned(obj):
        return Verdict(True, f"controller {ctx.username}, from its owner's pod template")
    if cfg.requireReason and not req.reason:
        return Verdict(False, f"it has no {REASON}: say why the exemption is needed")
    if ctx.username and ctx.username in cfg.allowedUsers:
        return Verdict(True, f"user {ctx.username}")
    group = next((g for g in ctx.groups if g in cfg.allowedGroups), None)
    if group:
        return Verdict(True, f"{ctx.username or 'the user'} (group {group})")
    who = (
        ", ".join(
            [f"groups {cfg.allowedGroups}"] * bool(cfg.allowedGroups)
            + [f"users {cfg.allowedUsers}"] * bool(cfg.allowedUsers)
        )
        or "nobody (the policy lists no exemptions.allowedGroups or allowedUsers)"
    )
    return Verdict(False, f"user {ctx.username or '(unknown)'} may not grant exemptions; may grant: {who}")


def message(req: Request, verdict: Verdict, policy: Policy) -> str:
    return (
        f"asks to skip {', '.join(sorted(req.ids))} but {verdict.how}. Without the exemption the policy's checks "
        f"apply. Fix: have someone allowed by policy {policy.name} apply it, or remove the annotation"
    )
