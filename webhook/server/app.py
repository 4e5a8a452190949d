"""Flask routes: ``POST /mutate``, ``POST /validate``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

The HTTP layer only: size limits, JSON errors, fail-open on internal errors, and the record of each
decision (one JSON log line and the metrics of ``webhook.metrics``). AdmissionReview handling itself is
``webhook.admission`` and ``webhook.engine``. The loaded policies live in one immutable ``State`` object
kept in ``app.extensions["spreadguard"]``, so a reload (``webhook.reload``) swaps them with a single
assignment (``set_state``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from webhook.engine import decide as engine
from webhook.engine import workloads
from webhook.server import metrics
from webhook.server import review as admission
from webhook.server.logs import DECISIONS
from webhook.server.reload import (
    DEFAULT_INTERVAL_SECONDS,
    PolicyWatcher,
    ReloadStatus,
    State,
    load_state,
    reload_once,
)

__all__ = [
    "ReloadStatus",
    "State",
    "create_app",
    "get_state",
    "load_state",
    "master_before_fork",
    "set_state",
    "worker_started",
]

log = logging.getLogger("spreadguard.app")
decisions = logging.getLogger(DECISIONS)

EXTENSION = "spreadguard"
WORKER_READY = "worker ready"  # logged by each worker once it serves (after its first policy check)
# An oversized body is read and thrown away (in chunks) up to this many bytes so the client gets the 400
# on a healthy connection instead of a reset while it is still sending; beyond it the connection is dropped.
DISCARD_LIMIT = 4 * admission.MAX_BODY_BYTES
# Flask's MAX_CONTENT_LENGTH. One byte over the limit: werkzeug 3 silently truncates a chunked body at
# MAX_CONTENT_LENGTH instead of raising 413, so reading limit + 1 bytes is how an oversized one shows.
READ_CAP = admission.MAX_BODY_BYTES + 1
_CHUNK = 64 * 1024
_MAX_ERROR_CHARS = 500
_MAX_WARNING_CHARS = 240


def get_state(app: Flask) -> State:
    """The app's current state (one attribute read: safe against a concurrent ``set_state``)."""
    return app.extensions[EXTENSION]


def set_state(app: Flask, state: State) -> None:
    """Swap the app's state atomically (a single assignment)."""
    app.extensions[EXTENSION] = state


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
        log.debug("/%s: rejected a body of %d bytes from %s", endpoint, declared, request.remote_addr)
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
        log.info(
            "/%s: rejected a chunked body over %d bytes from %s",
            endpoint,
            admission.MAX_BODY_BYTES,
            request.remote_addr,
        )
        _discard_body(max(len(data), admission.MAX_BODY_BYTES))
        return _too_large()
    return data


def _uid_of(body: dict[str, Any] | None, raw: bytes) -> str | None:
    """The request uid if it can be known, from the parsed ``body`` or, failing that, from ``raw``."""
    if body is None:
        try:
            body = json.loads(raw)
        except Exception:
            return None
    req = body.get("request") if isinstance(body, dict) else None
    uid = req.get("uid") if isinstance(req, dict) else None
    return uid if isinstance(uid, str) and uid else None


def _fail_open(uid: str, exc: BaseException) -> dict[str, Any]:
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


_KNOWN_KINDS = frozenset(kind for _group, kind in workloads.KINDS)


def _kind_label(kind: str) -> str:
    """The ``kind`` metric label: a kind spreadguard knows, else ``other`` (label values stay bounded)."""
    return kind if kind in _KNOWN_KINDS else ("unknown" if not kind else "other")


class _Record:
    """What one admission request did, for its log line and its metrics (filled in as the request goes)."""

    __slots__ = ("endpoint", "started", "req", "decision", "error", "exc")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.started = time.perf_counter()
        self.req: dict[str, Any] = {}
        self.decision: engine.Decision | None = None
        self.error = ""  # why the request got no decision (400) or failed (internal error)
        self.exc: BaseException | None = None  # an internal error: logged with its traceback

    def outcome(self) -> str:
        d = self.decision
        if d is None:
            return "error"
        if self.endpoint == "validate":
            return "denied" if d.violations else "allowed"
        return "mutated" if d.patch else "allowed"

    def findings(self) -> list[metrics.Finding]:
        d = self.decision
        if d is None or self.endpoint != "validate":  # findings are judged (and counted) on /validate
            return []
        return [metrics.Finding(v.rule, v.policy, "deny") for v in d.violations] + [
            metrics.Finding(v.rule, v.policy, "warn") for v in d.advisories
        ]

    def finish(self) -> None:
        seconds = time.perf_counter() - self.started
        req = self.req
        kind: dict[str, Any] = _dict(req.get("kind"))
        obj: dict[str, Any] = _dict(req.get("object"))
        kind_name = str(kind.get("kind") or obj.get("kind") or "")
        operation = str(req.get("operation") or "")
        outcome = self.outcome()
        try:
            metrics.observe_admission(
                self.endpoint, operation, _kind_label(kind_name), outcome, seconds, self.findings()
            )
        except Exception:  # metrics must never fail a request
            log.exception("recording metrics failed")
        level = logging.ERROR if self.exc is not None else logging.INFO
        if decisions.isEnabledFor(level):
            decisions.log(
                level,
                "admission %s",
                outcome,
                exc_info=self.exc,
                extra={"fields": self._fields(kind_name, operation, obj, outcome, seconds)},
            )

    def _fields(self, kind: str, operation: str, obj: dict[str, Any], outcome: str, seconds: float) -> dict[str, Any]:
        req, d = self.req, self.decision
        judged = d if self.endpoint == "validate" else None  # findings are judged on /validate only
        meta: dict[str, Any] = _dict(obj.get("metadata"))
        user: dict[str, Any] = _dict(req.get("userInfo"))
        fields: dict[str, Any] = {
            "uid": req.get("uid"),
            "endpoint": self.endpoint,
            "operation": operation or None,
            "kind": kind or None,
            "namespace": req.get("namespace") or meta.get("namespace") or None,
            "name": req.get("name") or meta.get("name") or meta.get("generateName") or None,
            "user": user.get("username"),
            "decision": outcome,
            "rules": sorted({v.rule for v in judged.violations}) if judged else [],
            "warnings": sorted({v.rule for v in judged.advisories}) if judged else [],
            "policies": list(d.policies) if d else [],
            "patch_ops": len(d.patch) if d and self.endpoint == "mutate" else 0,
            "dry_run": bool(req.get("dryRun")),
            "duration_ms": round(seconds * 1000, 3),
        }
        if d is not None:
            debug = decisions.isEnabledFor(logging.DEBUG)
            exemptions = getattr(d, "exemptions", None)
            if exemptions:  # every exemption used is logged (who granted it and why are in the text)
                fields["exemptions"] = [str(e) for e in exemptions]
            if self.endpoint == "mutate":
                # dryrun policies: what they would have changed, as lines; the would-be patch at debug
                dryrun_patch = getattr(d, "dryrun_patch", None) or []
                if d.dryrun:
                    fields["dryrun_changes"] = list(d.dryrun)
                if dryrun_patch:
                    fields["dryrun_patch_ops"] = len(dryrun_patch)
                if debug and d.patch:
                    fields["patch"] = d.patch
                if debug and dryrun_patch:
                    fields["dryrun_patch"] = dryrun_patch
        if self.error:
            fields["error"] = self.error
        return fields


def _answer(app: Flask, endpoint: str, record: _Record) -> Response:
    raw = _read_body(endpoint)
    if isinstance(raw, Response):
        record.error = f"request body exceeds {admission.MAX_BODY_BYTES} bytes"
        return raw
    if not raw.strip():
        record.error = "empty request body"
        return _error("empty request body: expected an AdmissionReview (admission.k8s.io/v1)")
    body: dict[str, Any] | None = None
    try:
        body = admission.parse_review(raw)
        req = body["request"]
        record.req = req
        policies = list(get_state(app).policies)  # one read: this request sees one policy set, whole
        obj = req.get("object")
        # DELETE carries oldObject only; CONNECT carries options: nothing to decide
        ctx = admission.context_of(req)
        cache = get_cluster(app)
        if cache is not None:  # one snapshot for the whole request; never waits on the API
            ctx = replace(ctx, cluster=cache.view())
        key = app.extensions.get(GRANT_KEY)
        if key:  # signs and checks exemption grants (webhook/engine/grants.py)
            ctx = replace(ctx, grant_key=key)
        decision = engine.evaluate(obj, ctx, policies) if isinstance(obj, dict) else engine.Decision()
        payload = admission.respond(req, decision, endpoint)
        record.decision = decision
        return _json(payload)
    except admission.AdmissionError as exc:
        record.error = one_line(f"malformed AdmissionReview: {exc}")
        return _error(str(exc) or "malformed AdmissionReview")
    except Exception as exc:
        uid = _uid_of(body, raw)
        if not record.req and uid:
            record.req = {"uid": uid}
        record.exc = exc
        record.error = one_line(f"internal error, {'allowed' if uid else 'answered 400'}: {type(exc).__name__}: {exc}")
        if uid is None:
            return _error(f"spreadguard internal error and no request uid: {type(exc).__name__}: {exc}")
        return _json(_fail_open(uid, exc))


def _handle(app: Flask, endpoint: str) -> Response:
    record = _Record(endpoint)
    try:
        return _answer(app, endpoint, record)
    except BaseException as exc:  # an HTTP error raised while reading (the error handlers answer it)
        record.error = record.error or one_line(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        record.finish()


def _metrics_response(cert_expiry: metrics.CertExpiry | None) -> Response:
    if cert_expiry is not None:
        cert_expiry.refresh()
    return Response(metrics.render(), mimetype=None, content_type=metrics.CONTENT_TYPE)


def create_app(policies_dir: str | Path, tls_cert: str | Path | None = None) -> Flask:
    """The webhook's Flask app serving the policies in ``policies_dir``.

    Raises ``webhook.policy.PolicyError`` (every problem as ``file:line: field: message``) when the
    directory does not load, so a broken policy set never serves. ``tls_cert``, the serving certificate,
    is only read for the expiry metric.
    """
    app = Flask("spreadguard")
    app.config["MAX_CONTENT_LENGTH"] = READ_CAP
    set_state(app, load_state(policies_dir))
    cert_expiry = metrics.CertExpiry(str(tls_cert)) if tls_cert else None

    @app.post("/mutate")
    def mutate() -> Response:
        return _handle(app, "mutate")

    @app.post("/validate")
    def validate() -> Response:
        return _handle(app, "validate")

    @app.get("/metrics")
    def metrics_page() -> Response:
        return _metrics_response(cert_expiry)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        state = get_state(app)
        if not state.ready:
            return _json({"status": "not ready", "policies": []}, 503)
        detail: dict[str, Any] = {"status": "ready", "policies": list(state.names)}
        if state.last_reload is not None:  # a change of the directory was seen: how loading it went
            detail["lastReload"] = state.last_reload.as_json()
        cache = get_cluster(app)  # ready either way: without a synced view decisions are spec-only
        detail["cluster"] = cache.status() if cache is not None else {"mode": "spec-only"}
        detail["worker"] = os.getpid()  # each gunicorn worker has its own cache and policy watcher
        return _json(detail)

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
        return response  # type: ignore[return-value]

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(f"internal error: {type(exc).__name__}", 500)

    return app


def master_before_fork(app: Flask) -> None:
    """In the gunicorn master, before it forks a worker (``pre_fork``): bring the policies up to date.

    A worker restarted long after the start then begins with the current good set rather than the one loaded
    at start-up (if the files are broken at that moment: with the last set the master could load). No
    metrics here: the master serves nothing.
    """
    reload_once(lambda: get_state(app), lambda state: set_state(app, state), observe=False)


CLUSTER = "spreadguard.cluster"
GRANT_KEY = "spreadguard.grant-key"


def set_grant_key(app: Flask, key: bytes | None) -> None:
    """The key that signs and checks exemption grants (None: nothing is passed on to pods)."""
    app.extensions[GRANT_KEY] = key


def set_cluster(app: Flask, cache: Any) -> None:
    """Attach a ``webhook.caches.ClusterCache`` (or None: spec-only decisions)."""
    app.extensions[CLUSTER] = cache


def get_cluster(app: Flask) -> Any:
    return app.extensions.get(CLUSTER)


def worker_started(app: Flask, reload_interval: float = DEFAULT_INTERVAL_SECONDS) -> PolicyWatcher | None:
    """Set up a freshly started server process (gunicorn ``post_fork``): metrics, policy watcher.

    Checks the policy directory once before the worker serves (the files may have changed since the master
    loaded them), then watches it every ``reload_interval`` seconds (0: no watching) in a daemon thread.
    """
    state = get_state(app)
    metrics.worker_started(len(state.policies), state.last_reload is None or state.last_reload.ok)
    cache = get_cluster(app)
    if cache is not None:
        cache.start()  # list + watch in this worker's own threads
    watcher = PolicyWatcher(lambda: get_state(app), lambda state: set_state(app, state), reload_interval or 1.0)
    watcher.check()  # records its own result in the metrics, if the files changed
    state = get_state(app)
    log.info(
        WORKER_READY,
        extra={
            "fields": {"policies": list(state.names), "directory": state.source, "reload_interval": reload_interval}
        },
    )
    if reload_interval > 0:
        return watcher.start()
    return None


def _dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (requests are untrusted)."""
    return value if isinstance(value, dict) else {}
