"""Exemptions: ``spreadguard.io/exempt: "<id>[,<id>...]"`` plus ``spreadguard.io/exempt-reason`` skip
those rules or mutations, when an authorised user's approval is proven (docs/threat-model.md).

An exemption holds when:

1. the request's user may grant it: a user in ``exemptions.allowedUsers`` or in one of ``allowedGroups``
   (with a reason, when ``requireReason``); spreadguard then records a signed grant in the workload's
   pod templates (``webhook.engine.grants``, mutator ``exemption-inheritance``);
2. a controller (``exemptions.controllers`` username globs) creates a child of its controller owner
   (a Pod of a Job, the ReplicaSet of a Deployment, the Job of a CronJob) carrying a grant that verifies
   for that owner; not for Pod UPDATEs, whose owner references anyone may edit;
3. on UPDATE of a workload, its pod template carries the grant spreadguard recorded for this very
   workload when it admitted the approved version.

An unchanged annotation proves nothing by itself: one admitted while spreadguard was down, in dryrun or
before installation carries no grant. Without a grant key (offline) only 1. holds.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from webhook.engine import grants
from webhook.engine.policy import Policy
from webhook.engine.target import Context
from webhook.engine.workloads import Kind

EXEMPT = "spreadguard.io/exempt"
REASON = "spreadguard.io/exempt-reason"
GRANT = grants.GRANT
PATH = f"metadata.annotations[{EXEMPT}]"
MAX_IDS_CHARS = 1024  # longer than every id together: not read (bounded work)


@dataclass(frozen=True)
class Request:
    ids: frozenset[str]
    reason: str
    raw: str
    grant: object = None  # the grant carried beside it (a pod's own, or the pod template's)
    from_template: bool = False  # read from the pod template of a controller-made child workload


@dataclass(frozen=True)
class Verdict:
    granted: bool
    how: str  # who granted it, when granted; why not, otherwise
    stamp: bool = False  # record a grant for this workload in its pod templates
    advisory: bool = False  # a controller's child without proof: judged without the exemption, not refused


def _annotations(obj: dict[str, Any] | None) -> dict[str, Any]:
    meta = (obj or {}).get("metadata") or {}
    ann = meta.get("annotations") if isinstance(meta, dict) else None
    return ann if isinstance(ann, dict) else {}


def parse_ids(raw: object) -> frozenset[str] | None:
    if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_IDS_CHARS:
        return None
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _request(ann: dict[str, Any], grant: object, from_template: bool = False) -> Request | None:
    ids = parse_ids(ann.get(EXEMPT))
    if ids is None:
        return None
    reason_raw = ann.get(REASON)
    reason = reason_raw if isinstance(reason_raw, str) else ""
    return Request(ids, reason.strip(), str(ann[EXEMPT]), grant, from_template)


def controller_owner(obj: dict[str, Any]) -> tuple[str, str, str] | None:
    """(API group, kind, name) of the object's controller ownerReference, or None."""
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    for o in owners if isinstance(owners, list) else []:
        if isinstance(o, dict) and o.get("controller") is True:
            return grants.api_group(o.get("apiVersion")), str(o.get("kind") or ""), str(o.get("name") or "")
    return None


def requested(obj: dict[str, Any], templates: list[dict[str, Any]] | None = None) -> Request | None:
    """The exemption an object asks for, or None: its own annotation (with the grant its pod template or,
    for a Pod, itself carries); for a controller-made child without one, its pod template's."""
    template_ann = [_annotations(t) for t in templates or []]
    grant = next((a[GRANT] for a in template_ann if GRANT in a), None) if templates else _annotations(obj).get(GRANT)
    req = _request(_annotations(obj), grant)
    if req is not None or not templates or controller_owner(obj) is None:
        return req
    return next((r for a in template_ann if (r := _request(a, a.get(GRANT), True)) is not None), None)


def _owners_to_check(owner: tuple[str, str, str], obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The workloads a child's grant may be bound to: its controller owner, and for a Deployment's pod (owned
    by ReplicaSet ``<deployment>-<pod-template-hash>``, whose template spreadguard leaves as the Deployment
    wrote it) that Deployment."""
    out = [owner]
    group, kind, name = owner
    labels = (obj.get("metadata") or {}).get("labels") or {}
    pth = labels.get("pod-template-hash") if isinstance(labels, dict) else None
    if (group, kind) == ("apps", "ReplicaSet") and isinstance(pth, str) and pth and name.endswith(f"-{pth}"):
        out.append(("apps", "Deployment", name[: -len(pth) - 1]))
    return out


def deployment_replicaset(obj: dict[str, Any], kind: Kind) -> bool:
    """A ReplicaSet controlled by a Deployment: its template must stay equal to the Deployment's (the
    Deployment controller finds its ReplicaSets by comparing templates), so no grant is written into it."""
    owner = controller_owner(obj)
    return (
        (kind.group, kind.kind) == ("apps", "ReplicaSet") and owner is not None and owner[:2] == ("apps", "Deployment")
    )


def authorize(req: Request, policy: Policy, ctx: Context, obj: dict[str, Any], kind: Kind) -> Verdict:
    """Whether the request may use the exemption ``req`` under ``policy``, and why."""
    cfg = policy.spec.exemptions
    is_pod = kind.kind == "Pod" and not kind.group
    meta = obj.get("metadata") or {}
    namespace = ctx.namespace or str(meta.get("namespace") or "")
    name = str(meta.get("name") or "")
    stamp = not is_pod
    group = next((g for g in ctx.groups if g in cfg.allowedGroups), None)
    user_may = (ctx.username and ctx.username in cfg.allowedUsers) or group is not None
    if user_may and not req.from_template:
        if cfg.requireReason and not req.reason:
            return Verdict(False, f"it has no {REASON}: say why the exemption is needed")
        who = (
            f"user {ctx.username}"
            if ctx.username in cfg.allowedUsers
            else f"{ctx.username or 'the user'} (group {group})"
        )
        return Verdict(True, who, stamp)
    owner = controller_owner(obj)
    controller = any(fnmatch.fnmatchcase(ctx.username, pat) for pat in cfg.controllers)
    if owner is not None and controller and not (is_pod and ctx.operation == "UPDATE"):
        for g, k, n in _owners_to_check(owner, obj):
            if grants.verify(ctx.grant_key, req.grant, namespace, g, k, n, req.ids):
                return Verdict(
                    True, f"controller {ctx.username}: approved for its owner {k}/{n} (grant verified)", stamp
                )
        why = "no grant key is configured" if not ctx.grant_key else f"it carries no valid {GRANT} for that owner"
        return Verdict(
            False,
            f"controller {ctx.username} made it for its owner {owner[1]}/{owner[2]}, but {why}: no approval by an "
            "authorised user was recorded for that workload",
            advisory=True,
        )
    if ctx.operation == "UPDATE" and not is_pod and not req.from_template:
        if grants.verify(ctx.grant_key, req.grant, namespace, kind.group, kind.kind, name, req.ids):
            return Verdict(True, f"the approval recorded for {kind.kind}/{name} (grant verified)", stamp)
    who = (
        ", ".join(
            [f"groups {cfg.allowedGroups}"] * bool(cfg.allowedGroups)
            + [f"users {cfg.allowedUsers}"] * bool(cfg.allowedUsers)
        )
        or "nobody (the policy lists no exemptions.allowedGroups or allowedUsers)"
    )
    kept = (
        "; an exemption is kept on UPDATE only with the grant spreadguard records when it admits the approved workload"
        if ctx.operation == "UPDATE"
        else ""
    )
    # an annotation this update does not change was not applied by this user: judged without it, not refused
    unchanged = ctx.operation == "UPDATE" and _annotations(ctx.old_object).get(EXEMPT) == req.raw
    return Verdict(
        False,
        f"user {ctx.username or '(unknown)'} may not grant exemptions; may grant: {who}{kept}",
        advisory=unchanged,
    )


def message(req: Request, verdict: Verdict, policy: Policy) -> str:
    return (
        f"asks to skip {', '.join(sorted(req.ids))} but {verdict.how}. Without the exemption the policy's checks "
        f"apply. Fix: have someone allowed by policy {policy.name} apply it, or remove the annotation"
    )
