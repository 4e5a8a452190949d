"""AdmissionReview ``admission.k8s.io/v1`` in, AdmissionReview out: the one path every caller takes.

``parse_review`` turns a body (bytes, strict JSON) into a typed ``AdmissionRequest`` once; ``review``
answers it: it calls the engine and builds the response, nothing else (no HTTP, no metrics, no logs). The
Flask routes, the tests and the benchmarks all call ``review``.

``/admit`` answers in one call: the patch, or the denial (403, every violation named), and every warning;
the base install's mutating hooks call it, once per object. ``/mutate`` (the patch, and notes of what it
adds as warnings) and ``/validate`` (the denial or the warnings) split the same answer in two, for the
opt-in two-hook install (``manifests/components/validate-after-mutation``), whose validating hook also
judges what other mutating webhooks changed after spreadguard's reinvocation (docs/install.md).

Strict JSON: ``NaN``/``Infinity`` and duplicate keys are malformed (the API server never sends them; a
duplicate key would let the object we judge differ from the one stored), and so is nesting deeper than
the parser can follow. Each is an ``AdmissionError``: a 400 with a one-line reason.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.engine import decide
from webhook.engine.decide import Decision
from webhook.engine.placement import ClusterView
from webhook.engine.policy import Policy
from webhook.engine.target import Context

API_VERSION = "admission.k8s.io/v1"
# The largest review the API server can send for an object it accepted. Its own request body limit is
# 3 MiB (apiserver MaxRequestBodyBytes) for the object as submitted; in the review it encodes the object with
# Go's encoding/json, which writes each of & < > as the 6-byte \u0026 (x6 at worst), and an UPDATE carries
# oldObject as well (the stored object: at most etcd's 1.5 MiB request limit, x6 escaped). 3 MiB x 6 +
# 1.5 MiB x 6 = 27 MiB plus the envelope (userInfo, options): 32 MiB leaves room. Memory stays bounded:
# bodies are read with this cap (never more), and large ones are parsed one at a time per worker (app.py).
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_WARNINGS = 20
MAX_AUDIT_CHARS = 8192  # the API server caps the total size of warnings; keep the important ones
ENDPOINTS = ("mutate", "validate", "admit")


class AdmissionError(ValueError):
    """A malformed AdmissionReview; ``str(e)`` is a one-line reason for the 400 answer."""


@dataclass(frozen=True, slots=True)
class UserInfo:
    username: str = ""
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """The ``request`` of an AdmissionReview, checked and typed once (``from_body``)."""

    uid: str
    kind: str = ""  # request.kind.kind (the object's kind as the API server names it)
    group: str = ""  # request.kind.group
    resource: str = ""  # request.resource.resource
    sub_resource: str = ""
    operation: str = "CREATE"
    namespace: str = ""
    name: str = ""
    user: UserInfo = UserInfo()
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    dry_run: bool = False

    @classmethod
    def from_body(cls, body: Any) -> AdmissionRequest:
        """Check ``body`` is an AdmissionReview v1 request we can answer and type its ``request``."""
        if not isinstance(body, dict):
            raise AdmissionError(f"expected a JSON object (AdmissionReview), got {type(body).__name__}")
        if body.get("apiVersion") != API_VERSION:
            raise AdmissionError(f"apiVersion must be {API_VERSION!r}, got {_short(body.get('apiVersion'))}")
        if body.get("kind") != "AdmissionReview":
            raise AdmissionError(f"kind must be 'AdmissionReview', got {_short(body.get('kind'))}")
        req = body.get("request")
        if not isinstance(req, dict):
            raise AdmissionError("request is missing or not an object")
        uid = req.get("uid")
        if not isinstance(uid, str) or not uid:
            raise AdmissionError("request.uid is missing or not a non-empty string")
        for key in ("object", "oldObject"):
            if req.get(key) is not None and not isinstance(req[key], dict):
                raise AdmissionError(f"request.{key} must be an object or null, got {type(req[key]).__name__}")
        for key in ("operation", "namespace", "name", "subResource"):
            if req.get(key) is not None and not isinstance(req[key], str):
                raise AdmissionError(f"request.{key} must be a string, got {type(req[key]).__name__}")
        user = req.get("userInfo")
        if user is not None and not isinstance(user, dict):
            raise AdmissionError("request.userInfo must be an object")
        if req.get("dryRun") is not None and not isinstance(req["dryRun"], bool):
            raise AdmissionError("request.dryRun must be a boolean")
        gvk = _dict(req.get("kind"))
        user = user or {}
        groups = user.get("groups")
        return cls(
            uid=uid,
            kind=_str(gvk.get("kind")),
            group=_str(gvk.get("group")),
            resource=_str(_dict(req.get("resource")).get("resource")),
            sub_resource=req.get("subResource") or "",
            operation=req.get("operation") or "CREATE",
            namespace=req.get("namespace") or "",
            name=req.get("name") or "",
            user=UserInfo(
                username=_str(user.get("username")),
                groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
            ),
            object=req.get("object"),
            old_object=req.get("oldObject"),
            dry_run=bool(req.get("dryRun")),
        )

    @property
    def object_kind(self) -> str:
        """The kind of the object (``request.kind``, else the object's own ``kind``)."""
        return self.kind or _str(_dict(self.object).get("kind"))

    @property
    def object_name(self) -> str:
        """The object's name as a user knows it: ``request.name``, its name, or its ``generateName``."""
        meta = _dict(_dict(self.object or self.old_object).get("metadata"))
        return self.name or _str(meta.get("name")) or _str(meta.get("generateName"))

    @property
    def object_namespace(self) -> str:
        return self.namespace or _str(_dict(_dict(self.object or self.old_object).get("metadata")).get("namespace"))

    def context(self, cluster: ClusterView | None = None, grant_key: bytes | None = None) -> Context:
        """The engine's view of the request around the object."""
        return Context(
            operation=self.operation,
            namespace=self.namespace,
            username=self.user.username,
            groups=self.user.groups,
            dry_run=self.dry_run,
            old_object=self.old_object,
            cluster=cluster,
            resource=self.resource,
            subresource=self.sub_resource,
            grant_key=grant_key,
        )


def _reject_constant(name: str) -> Any:
    raise AdmissionError(f"body is not valid JSON: {name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise AdmissionError(f"body is not valid JSON: duplicate key {_short(key)}")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


# Go's encoding/json (the API server's) escapes these inside strings; orjson writes them as they are
_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def _go_escaped(out: bytes) -> bytes:
    for char, escape in _GO_ESCAPES:
        if char in out:
            out = out.replace(char, escape)
    return out


def api_server_bytes(value: Any) -> bytes:
    """``value`` written the way the API server writes a review body: compact JSON with ``<``, ``>``, ``&``,
    U+2028 and U+2029 escaped (Go's encoding/json) and a newline at the end (its json.Encoder). The captured
    reviews in tests/data/admission are byte for byte this; ``canonical`` reads exactly these."""
    return _go_escaped(dumps(value)) + b"\n"


def canonical(raw: bytes | bytearray) -> Any | None:
    """``raw`` decoded, if it is exactly what the API server writes for that value; else None.

    The fast path of ``loads_strict`` for the bodies that matter: a document that re-encodes to its own
    bytes cannot hold a duplicate key (decoding keeps one of the two, so the re-encoding would be shorter),
    and orjson refuses NaN, Infinity and nesting deeper than 1,024. Every body a real kube-apiserver sent
    in ``tests/data/admission`` takes it (``tests/server/test_review.py``). Anything else (pretty-printed
    JSON, floats Go formats differently, integers over 64 bits) returns None and is parsed by the checked
    path, with the same result and its clear errors; it only costs more.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    out = _go_escaped(orjson.dumps(value))
    extra = len(raw) - len(out)  # the API server ends the body with a newline
    if (extra == 0 or (extra == 1 and raw[-1] == 0x0A)) and raw.startswith(out):
        return value
    return None


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON: orjson, or the standard library for what orjson refuses (ints over 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate (only a checked-parser body can hold one): \u escapes
        return json.dumps(value, separators=(",", ":")).encode()


def loads_strict(raw: bytes | str) -> Any:
    """``json.loads`` refusing NaN/Infinity, duplicate keys and nesting too deep to follow (AdmissionError)."""
    if isinstance(raw, bytes | bytearray):
        value = canonical(raw)
        if value is not None:
            return value
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        return _DECODER.decode(text)
    except AdmissionError:
        raise
    except RecursionError:
        raise AdmissionError("body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdmissionError(f"body is not valid JSON: {exc}".splitlines()[0]) from None


def parse_review(raw: bytes) -> AdmissionRequest:
    """Decode (strict JSON) and type an AdmissionReview request body."""
    if not raw.strip():
        raise AdmissionError("empty request body: expected an AdmissionReview (admission.k8s.io/v1)")
    return AdmissionRequest.from_body(loads_strict(raw))


def denial_message(decision: Decision, req: AdmissionRequest) -> str:
    where = f"{req.object_namespace}/{req.object_name}" if req.object_namespace else req.object_name
    lines = [f"spreadguard denied {req.object_kind or 'object'} {where}: {len(decision.violations)} violation(s)"]
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
    if endpoint != "validate" and decision.dryrun_patch:
        text = json.dumps(decision.dryrun_patch, separators=(",", ":"))
        cut = MAX_AUDIT_CHARS - len("...(truncated)")
        audit["dryrun-patch"] = text if len(text) <= MAX_AUDIT_CHARS else text[:cut] + "...(truncated)"
    return audit


def respond(req: AdmissionRequest, decision: Decision, endpoint: str) -> dict[str, Any]:
    """The AdmissionReview response for ``decision`` on ``endpoint`` (mutate, validate or admit)."""
    response: dict[str, Any] = {"uid": req.uid, "allowed": True}
    warnings: list[str] = []
    denied = endpoint != "mutate" and bool(decision.violations)
    if endpoint != "validate":
        if decision.patch and not denied:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(dumps(decision.patch)).decode()
            warnings += [f"spreadguard added {n}" for n in decision.notes]
        warnings += [f"spreadguard {w}" for w in decision.dryrun + decision.info]
    if endpoint != "mutate":
        warnings += [f"spreadguard: {v.text()}" for v in decision.advisories]
        warnings += [f"spreadguard: exemption {e}" for e in decision.exemptions]
        if denied:
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


def allow_with_warning(uid: str, warning: str) -> dict[str, Any]:
    """An allowing AdmissionReview with one warning: how spreadguard answers when it cannot decide."""
    return {
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": True, "warnings": [warning]},
    }


class Answer(dict[str, Any]):
    """The AdmissionReview out (a plain JSON object), carrying the ``decision`` it was made from."""

    __slots__ = ("decision",)

    def __init__(self, payload: dict[str, Any], decision: Decision) -> None:
        super().__init__(payload)
        self.decision = decision


def review(
    request: AdmissionRequest | Mapping[str, Any],
    policies: list[Policy] | tuple[Policy, ...],
    endpoint: str,
    cluster: ClusterView | None = None,
    grant_key: bytes | None = None,
) -> Answer:
    """Answer one AdmissionReview for ``endpoint`` (mutate, validate, admit): the engine's decision, as a review.

    ``request``: a parsed ``AdmissionRequest`` (the server parses the body once) or an AdmissionReview body
    (a dict, checked here). ``cluster``: the node/namespace snapshot for this request, if any; ``grant_key``:
    the key that signs and checks exemption grants (engine/grants.py), if the server has one. DELETE
    carries only oldObject and CONNECT carries options: nothing to decide, allowed.
    """
    if endpoint not in ENDPOINTS:
        raise AdmissionError(f"unknown endpoint {endpoint!r}")
    req = request if isinstance(request, AdmissionRequest) else AdmissionRequest.from_body(request)
    if req.object is None:
        decision = Decision()
    else:
        decision = decide.evaluate(req.object, req.context(cluster, grant_key), list(policies))
    return Answer(respond(req, decision, endpoint), decision)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = [
    "API_VERSION",
    "MAX_BODY_BYTES",
    "AdmissionError",
    "AdmissionRequest",
    "Answer",
    "UserInfo",
    "allow_with_warning",
    "loads_strict",
    "parse_review",
    "respond",
    "review",
]
