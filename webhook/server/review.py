"""AdmissionReview ``admission.k8s.io/v1`` in, AdmissionReview out. Pure: no HTTP here.

``/mutate`` answers with the patch (and notes of what it adds as warnings); ``/validate`` answers
with the denial (403, every violation named) or the warnings. Splitting them this way means the
validating hook also judges what other mutating webhooks changed after ours.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from webhook.engine.decide import Decision, evaluate
from webhook.engine.policy import Policy
from webhook.engine.target import Context

API_VERSION = "admission.k8s.io/v1"
MAX_BODY_BYTES = 3 * 1024 * 1024
MAX_WARNINGS = 20
MAX_AUDIT_CHARS = 8192  # the API server caps the total size of warnings; keep the important ones
ENDPOINTS = ("mutate", "validate")


class AdmissionError(ValueError):
    """A malformed AdmissionReview; ``str(e)`` is a one-line reason for the 400 answer."""


def parse_review(raw: bytes) -> dict[str, Any]:
    """Decode and check the shape of an AdmissionReview request body."""
    if len(raw) > MAX_BODY_BYTES:
        raise AdmissionError(f"body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES} bytes (3 MiB)")
    if not raw.strip():
        raise AdmissionError("empty body: expected an AdmissionReview JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdmissionError(f"body is not valid JSON: {exc}".splitlines()[0]) from None
    check_review(body)
    return body


def check_review(body: Any) -> None:
    """Raise AdmissionError unless ``body`` is an AdmissionReview v1 request we can answer."""
    if not isinstance(body, dict):
        raise AdmissionError(f"expected a JSON object (AdmissionReview), got {type(body).__name__}")
    if body.get("apiVersion") != API_VERSION:
        raise AdmissionError(f"apiVersion must be {API_VERSION!r}, got {body.get('apiVersion')!r}")
    if body.get("kind") != "AdmissionReview":
        raise AdmissionError(f"kind must be 'AdmissionReview', got {body.get('kind')!r}")
    req = body.get("request")
    if not isinstance(req, dict):
        raise AdmissionError("request is missing or not an object")
    if not isinstance(req.get("uid"), str) or not req["uid"]:
        raise AdmissionError("request.uid is missing or not a non-empty string")
    for key in ("object", "oldObject"):
        if req.get(key) is not None and not isinstance(req[key], dict):
            raise AdmissionError(f"request.{key} must be an object or null, got {type(req[key]).__name__}")
    for key in ("operation", "namespace", "name"):
        if req.get(key) is not None and not isinstance(req[key], str):
            raise AdmissionError(f"request.{key} must be a string, got {type(req[key]).__name__}")
    user = req.get("userInfo")
    if user is not None and not isinstance(user, dict):
        raise AdmissionError("request.userInfo must be an object")
    if req.get("dryRun") is not None and not isinstance(req["dryRun"], bool):
        raise AdmissionError("request.dryRun must be a boolean")


def context_of(req: dict[str, Any]) -> Context:
    user = req.get("userInfo") or {}
    raw_groups = user.get("groups")
    groups: list[Any] = raw_groups if isinstance(raw_groups, list) else []
    return Context(
        operation=req.get("operation") or "CREATE",
        namespace=req.get("namespace") or "",
        username=str(user.get("username") or ""),
        groups=tuple(str(g) for g in groups),
        dry_run=bool(req.get("dryRun")),
        old_object=req.get("oldObject") if isinstance(req.get("oldObject"), dict) else None,
        resource=str((req.get("resource") or {}).get("resource") or "")
        if isinstance(req.get("resource"), dict)
        else "",
        subresource=str(req.get("subResource") or ""),
    )


def denial_message(decision: Decision, req: dict[str, Any]) -> str:
    obj = req.get("object") or {}
    kind = obj.get("kind") or (req.get("kind") or {}).get("kind") or "object"
    meta = obj.get("metadata") or {}
    name = meta.get("name") or req.get("name") or meta.get("generateName") or ""
    ns = req.get("namespace") or meta.get("namespace") or ""
    where = f"{ns}/{name}" if ns else name
    lines = [f"spreadguard denied {kind} {where}: {len(decision.violations)} violation(s)"]
    lines += [f"- {v.text()}" for v in decision.violations]
    return "\n".join(lines)


def _cap(warnings: list[str]) -> list[str]:
    if len(warnings) <= MAX_WARNINGS:
        return warnings
    return warnings[: MAX_WARNINGS - 1] + [f"spreadguard: {len(warnings) - MAX_WARNINGS + 1} more warnings not shown"]


def audit_annotations(decision: Decision, endpoint: str) -> dict[str, str]:
    """Keys for the API server's audit log (it prefixes them with the webhook's name)."""
    audit: dict[str, str] = {}
    if decision.policies:
        audit["policies"] = ",".join(f"{p}({decision.modes.get(p, '?')})" for p in decision.policies)
    if decision.violations:
        audit["violations"] = ",".join(sorted({v.rule for v in decision.violations}))
    if decision.advisories:
        audit["warnings"] = ",".join(sorted({v.rule for v in decision.advisories}))
    if decision.exemptions:
        audit["exemptions"] = "; ".join(decision.exemptions)[:MAX_AUDIT_CHARS]
    if endpoint == "mutate" and decision.dryrun_patch:
        text = json.dumps(decision.dryrun_patch, separators=(",", ":"))
        cut = MAX_AUDIT_CHARS - len("...(truncated)")
        audit["dryrun-patch"] = text if len(text) <= MAX_AUDIT_CHARS else text[:cut] + "...(truncated)"
    return audit


def respond(req: dict[str, Any], decision: Decision, endpoint: str) -> dict[str, Any]:
    """The AdmissionReview response for ``decision`` on ``endpoint`` (mutate or validate)."""
    response: dict[str, Any] = {"uid": req["uid"], "allowed": True}
    warnings: list[str] = []
    if endpoint == "mutate":
        if decision.patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(decision.patch).encode()).decode()
            warnings += [f"spreadguard added {n}" for n in decision.notes]
        warnings += [f"spreadguard {w}" for w in decision.dryrun + decision.info]
    else:
        warnings += [f"spreadguard: {v.text()}" for v in decision.advisories]
        warnings += [f"spreadguard: exemption {e}" for e in decision.exemptions]
        if decision.violations:
            response["allowed"] = False
            response["status"] = {
                "code": 403,
                "reason": "Forbidden",
                "message": denial_message(decision, req),
            }
    if warnings:
        response["warnings"] = _cap(warnings)
    audit = audit_annotations(decision, endpoint)
    if audit:
        response["auditAnnotations"] = audit
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def review(body: dict[str, Any], policies: list[Policy], endpoint: str) -> dict[str, Any]:
    """Answer one AdmissionReview request for ``endpoint`` ("mutate" or "validate")."""
    check_review(body)
    if endpoint not in ENDPOINTS:
        raise AdmissionError(f"unknown endpoint {endpoint!r}")
    req = body["request"]
    obj = req.get("object")
    if not isinstance(obj, dict):  # DELETE carries oldObject only; CONNECT carries options
        return respond(req, Decision(), endpoint)
    return respond(req, evaluate(obj, context_of(req), policies), endpoint)
