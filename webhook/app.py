"""Flask routes: ``POST /mutate``, ``POST /validate``, ``GET /healthz``, ``GET /readyz``.

The HTTP layer only: size limits, JSON errors, fail-open on internal errors. AdmissionReview handling
itself is ``webhook.admission``. The loaded policies live in one immutable ``State`` object kept in
``app.extensions["spreadguard"]``, so a reload swaps them with a single assignment (``set_state``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from webhook import admission
from webhook.policy import Policy, load_policies

log = logging.getLogger("spreadguard.app")

EXTENSION = "spreadguard"
# An oversized body is read and thrown away (in chunks) up to this many bytes so the client gets the 400
# on a healthy connection instead of a reset while it is still sending; beyond it the connection is dropped.
DISCARD_LIMIT = 4 * admission.MAX_BODY_BYTES
# Flask's MAX_CONTENT_LENGTH. One byte over the limit: werkzeug 3 silently truncates a chunked body at
# MAX_CONTENT_LENGTH instead of raising 413, so reading limit + 1 bytes is how an oversized one shows.
READ_CAP = admission.MAX_BODY_BYTES + 1
_CHUNK = 64 * 1024
_MAX_ERROR_CHARS = 500
_MAX_WARNING_CHARS = 240


@dataclass(frozen=True)
class State:
    """What the routes serve from; replaced as a whole, never mutated."""

    policies: tuple[Policy, ...] = ()
    source: str = ""
    ready: bool = False
    names: tuple[str, ...] = ()


def get_state(app: Flask) -> State:
    """The app's current state (one attribute read: safe against a concurrent ``set_state``)."""
    return app.extensions[EXTENSION]


def set_state(app: Flask, state: State) -> None:
    """Swap the app's state atomically (a single assignment)."""
    app.extensions[EXTENSION] = state


def load_state(policies_dir: str | Path) -> State:
    """Load the policy directory into a ready ``State``; raises ``PolicyError`` listing every problem."""
    policies = tuple(load_policies(policies_dir))
    return State(policies=policies, source=str(policies_dir), ready=True, names=tuple(p.name for p in policies))


def one_line(text: object, limit: int = _MAX_ERROR_CHARS) -> str:
    """``text`` with all whitespace runs (newlines included) collapsed to one space, cut to ``limit``."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status, mimetype="application/json")


def _error(message: str, status: int = 400) -> Response:
    return _json({"error": one_line(message)}, status)


def _discard_body(already: int = 0) -> None:
    """Read and drop what is left of the request body, up to ``DISCARD_LIMIT`` bytes in total."""
    stream = request.environ.get("wsgi.input")
    if stream is None:
        return
    budget = DISCARD_LIMIT - already
    try:
        while budget > 0:
            chunk = stream.read(min(_CHUNK, budget))
            if not chunk:
                return
            budget -= len(chunk)
    except Exception:  # the client went away: nothing left to protect
        log.debug("discarding an oversized body failed", exc_info=True)


def _too_large(size: int | None = None) -> Response:
    what = f"request body of {size} bytes" if size is not None else "request body"
    return _error(f"{what} exceeds the limit of {admission.MAX_BODY_BYTES} bytes")


def _read_body(endpoint: str) -> bytes | Response:
    """The raw body, or a 400 response when it is larger than ``admission.MAX_BODY_BYTES``."""
    declared = request.content_length
    if declared is not None and declared > admission.MAX_BODY_BYTES:
        log.info("/%s: rejected a body of %d bytes from %s", endpoint, declared, request.remote_addr)
        if declared <= DISCARD_LIMIT:
            _discard_body()
        return _too_large(declared)
    try:
        # reads at most MAX_CONTENT_LENGTH (the limit + 1) bytes, also for chunked bodies
        data = request.get_data(cache=False)
        over = len(data) > admission.MAX_BODY_BYTES
    except RequestEntityTooLarge:  # in case a later werkzeug raises instead of truncating
        data, over = b"", True
    if over:
        log.info("/%s: rejected a chunked body over %d bytes from %s", endpoint, admission.MAX_BODY_BYTES,
                 request.remote_addr)
        _discard_body(max(len(data), admission.MAX_BODY_BYTES))
        return _too_large()
    return data


def _uid_of(body: dict | None, raw: bytes) -> str | None:
    """The request uid if it can be known, from the parsed ``body`` or, failing that, from ``raw``."""
    if body is None:
        try:
            body = json.loads(raw)
        except Exception:
            return None
    req = body.get("request") if isinstance(body, dict) else None
    uid = req.get("uid") if isinstance(req, dict) else None
    return uid if isinstance(uid, str) and uid else None


def _fail_open(uid: str, exc: BaseException) -> dict:
    """An allowing AdmissionReview for a request spreadguard failed on: never block a healthy cluster."""
    reason = one_line(f"{type(exc).__name__}: {exc}", _MAX_WARNING_CHARS)
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": True,
            "warnings": [f"spreadguard internal error, request allowed: {reason}"],
        },
    }


def _handle(app: Flask, endpoint: str) -> Response:
    raw = _read_body(endpoint)
    if isinstance(raw, Response):
        return raw
    if not raw.strip():
        return _error("empty request body: expected an AdmissionReview (admission.k8s.io/v1)")
    body: dict | None = None
    try:
        body = admission.parse_review(raw)
        return _json(admission.review(body, list(get_state(app).policies), endpoint))
    except admission.AdmissionError as exc:
        log.info("/%s: rejected malformed AdmissionReview from %s: %s", endpoint, request.remote_addr, one_line(exc))
        return _error(str(exc) or "malformed AdmissionReview")
    except Exception as exc:
        uid = _uid_of(body, raw)
        log.exception("/%s: internal error (uid %s); %s", endpoint, uid, "allowing" if uid else "answering 400")
        if uid is None:
            return _error(f"spreadguard internal error and no request uid: {type(exc).__name__}: {exc}")
        return _json(_fail_open(uid, exc))


def create_app(policies_dir: str | Path) -> Flask:
    """The webhook's Flask app serving the policies in ``policies_dir``.

    Raises ``webhook.policy.PolicyError`` (every problem as ``file:line: field: message``) when the
    directory does not load, so a broken policy set never serves.
    """
    app = Flask("spreadguard")
    app.config["MAX_CONTENT_LENGTH"] = READ_CAP
    set_state(app, load_state(policies_dir))

    @app.post("/mutate")
    def mutate() -> Response:
        return _handle(app, "mutate")

    @app.post("/validate")
    def validate() -> Response:
        return _handle(app, "validate")

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        state = get_state(app)
        if not state.ready:
            return _json({"status": "not ready", "policies": []}, 503)
        return _json({"status": "ready", "policies": list(state.names)})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # 404, 405 (keeping its Allow header), a 413 raised anywhere (always 400 here), ...
        if isinstance(exc, RequestEntityTooLarge):
            return _too_large()
        detail = f"{request.method} {request.path}"
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            detail += f" (allowed: {', '.join(sorted(allowed))})"
        response = exc.get_response()
        response.set_data(json.dumps({"error": one_line(f"{exc.code} {exc.name}: {detail}")}, separators=(",", ":")))
        response.mimetype = "application/json"
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(f"internal error: {type(exc).__name__}", 500)

    return app
