"""Flask routes: ``POST /mutate``, ``POST /validate``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

The HTTP layer only: the body read with a cap, JSON errors, the time budget and fail-open on spreadguard's
own errors, and the record of each request (one JSON log line and the metrics of ``webhook.server.metrics``).
The AdmissionReview itself is parsed and answered by ``webhook.server.review`` (one path). The loaded
policies live in one immutable ``State`` object kept in ``app.extensions["spreadguard"]``, so a reload
(``webhook.server.reload``) swaps them with a single assignment (``set_state``).

Failing open: an engine exception, a request over its time budget, or a large request that cannot get its
turn in time is *allowed* with a warning on both endpoints (the hooks are ``failurePolicy: Ignore``: an
error answer or no answer would admit the object as well, without a trace). Each is counted in
``spreadguard_admission_failed_open_total{endpoint,reason}`` and logged once with the object's identity
(uid, kind, namespace, name, user); ``manifests/components/alerts`` alerts on it. Isolation rules do not fail
closed here (docs/install.md, "Failing open").
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from webhook.engine import decide as engine
from webhook.engine import workloads
from webhook.server import budget, logs, metrics
from webhook.server import review as admission
from webhook.server.logs import DECISIONS
from webhook.server.reload import (
    DEFAULT_INTERVAL_SECONDS,
    PolicyWatcher,
    State,
    load_state,
    reload_once,
)

__all__ = [
    "State",
    "create_app",
    "get_state",
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
# (Under gunicorn, spreadguard's worker refuses an oversized body before a thread sees it: ``worker.py``.)
DISCARD_LIMIT = admission.MAX_BODY_BYTES + 8 * 1024 * 1024
# Bodies above this size are parsed and decided one at a time per worker process: a JSON document costs
# several times its size in Python objects, so this bounds a worker's memory whatever the clients send.
LARGE_BODY_BYTES = 4 * 1024 * 1024
_large_bodies = threading.BoundedSemaphore(1)
_CHUNK = 1024 * 1024
_MAX_ERROR_CHARS = 500
_MAX_WARNING_CHARS = 240


_ADMISSION_PATHS = {"/mutate": "mutate", "/validate": "validate", "/admit": "admit"}
_STATUS_LINES = {200: "200 OK", 400: "400 Bad Request", 500: "500 Internal Server Error"}


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


def error_body(message: str) -> bytes:
    """The body of every error answer: ``{"error": "<one line>"}``."""
    return json.dumps({"error": one_line(message)}, separators=(",", ":")).encode()


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status, mimetype="application/json")


def _error(message: str, status: int = 400) -> Response:
    return Response(error_body(message), status=status, mimetype="application/json")


def too_large_message(size: int | None = None) -> str:
    what = f"request body of {size} bytes" if size is not None else "request body"
    return f"{what} exceeds the limit of {admission.MAX_BODY_BYTES} bytes"


def record_refusal(endpoint: str, message: str) -> None:
    """Count and log an admission request refused before it reached the app (``worker.py``: too large)."""
    record = Record(endpoint)
    record.error = one_line(message)
    record.finish()


def _discard(stream: Any, budget: int) -> None:
    """Read and drop up to ``budget`` more bytes of the request body."""
    try:
        while budget > 0:
            chunk = stream.read(min(_CHUNK, budget))
            if not chunk:
                return
            budget -= len(chunk)
    except Exception:  # the client went away: nothing left to protect
        log.debug("discarding an oversized body failed", exc_info=True)


def read_body(environ: dict[str, Any]) -> bytes | None:
    """The request body, read with a cap: at most ``MAX_BODY_BYTES`` + 1 bytes are ever held; None when larger.

    A declared ``Content-Length`` over the limit is refused before reading; a chunked body is read until it
    passes the limit. What is left of a refused body is drained (up to ``DISCARD_LIMIT``) so the connection
    stays usable for the next request.
    """
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    limit = admission.MAX_BODY_BYTES
    try:
        declared = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        declared = -1
    if declared > limit:
        if declared <= DISCARD_LIMIT:
            _discard(stream, declared)
        return None
    if declared >= 0:
        data = stream.read(declared) if declared else b""
        return bytes(data)
    buf = bytearray()
    while len(buf) <= limit:
        chunk = stream.read(min(_CHUNK, limit + 1 - len(buf)))
        if not chunk:
            return bytes(buf)
        buf += chunk
    _discard(stream, DISCARD_LIMIT - len(buf))
    return None


_KNOWN_KINDS = frozenset(kind for _group, kind in workloads.KINDS)


def _kind_label(kind: str) -> str:
    """The ``kind`` metric label: a kind spreadguard knows, else ``other`` (label values stay bounded)."""
    return kind if kind in _KNOWN_KINDS else ("unknown" if not kind else "other")


class Record:
    """What one admission request did, for its log line and its metrics (filled in as the request goes)."""

    __slots__ = ("endpoint", "started", "req", "decision", "error", "exc", "failed_open", "level")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.started = time.perf_counter()
        self.req: admission.AdmissionRequest | None = None
        self.decision: engine.Decision | None = None
        self.error = ""  # why the request got no decision (400) or failed (internal error)
        self.exc: BaseException | None = None  # an internal error: logged with its traceback
        self.failed_open = ""  # why the request was allowed undecided: error, budget, busy
        self.level = logging.INFO

    def outcome(self) -> str:
        d = self.decision
        if d is None:
            return "error"
        if self.endpoint != "mutate" and d.violations:
            return "denied"
        return "mutated" if d.patch and self.endpoint != "validate" else "allowed"

    def findings(self) -> list[metrics.Finding]:
        d = self.decision
        if d is None or self.endpoint == "mutate":  # findings are judged (and counted) on /validate, /admit
            return []
        return [metrics.Finding(v.rule, v.policy, "deny") for v in d.violations] + [
            metrics.Finding(v.rule, v.policy, "warn") for v in d.advisories
        ]

    def finish(self) -> None:
        seconds = time.perf_counter() - self.started
        req = self.req
        kind_name = req.object_kind if req else ""
        operation = req.operation if req else ""
        outcome = self.outcome()
        try:
            metrics.observe_admission(
                self.endpoint, operation, _kind_label(kind_name), outcome, seconds, self.findings(), self.failed_open
            )
        except Exception:  # metrics must never fail a request
            log.exception("recording metrics failed")
        level = logging.ERROR if self.exc is not None else self.level
        if decisions.isEnabledFor(level):
            fields = self._fields(kind_name, operation, outcome, seconds)
            # the common case skips logging's record machinery (the same line: logs.write_line)
            if self.exc is not None or not logs.write_line(decisions, level, f"admission {outcome}", fields):
                decisions.log(level, "admission %s", outcome, exc_info=self.exc, extra={"fields": fields})

    def _fields(self, kind: str, operation: str, outcome: str, seconds: float) -> dict[str, Any]:
        req, d = self.req, self.decision
        judged = d if self.endpoint != "mutate" else None  # findings are judged on /validate and /admit
        fields: dict[str, Any] = {
            "uid": req.uid if req else None,
            "endpoint": self.endpoint,
            "operation": operation or None,
            "kind": kind or None,
            "namespace": (req.object_namespace or None) if req else None,
            "name": (req.object_name or None) if req else None,
            "user": req.user.username if req else None,
            "decision": outcome,
            "rules": sorted({v.rule for v in judged.violations}) if judged else [],
            "warnings": sorted({v.rule for v in judged.advisories}) if judged else [],
            "policies": list(d.policies) if d else [],
            "patch_ops": len(d.patch) if d and self.outcome() == "mutated" else 0,
            "dry_run": bool(req.dry_run) if req else False,
            "duration_ms": round(seconds * 1000, 3),
        }
        if d is not None:
            if d.exemptions:  # every exemption used is logged (who granted it and why are in the text)
                fields["exemptions"] = [str(e) for e in d.exemptions]
            if self.endpoint != "validate":
                # dryrun policies: what they would have changed, as lines; the would-be patch at debug
                debug = decisions.isEnabledFor(logging.DEBUG)
                if d.dryrun:
                    fields["dryrun_changes"] = list(d.dryrun)
                if d.dryrun_patch:
                    fields["dryrun_patch_ops"] = len(d.dryrun_patch)
                if debug and d.patch:
                    fields["patch"] = d.patch
                if debug and d.dryrun_patch:
                    fields["dryrun_patch"] = d.dryrun_patch
        if self.failed_open:
            fields["failed_open"] = self.failed_open
        if self.error:
            fields["error"] = self.error
        return fields


Answered = tuple[int, bytes]  # HTTP status and JSON body of an admission answer


def _ok(payload: dict[str, Any]) -> Answered:
    return 200, admission.dumps(payload)


def _bad(message: str, status: int = 400) -> Answered:
    return status, error_body(message)


def _allow_undecided(record: Record, reason: str, warning: str) -> Answered:
    """Fail open: allow ``record.req`` with a warning, counted as ``reason`` (error, budget, busy)."""
    assert record.req is not None
    record.failed_open = reason
    return _ok(admission.allow_with_warning(record.req.uid, warning))


_UID = re.compile(rb'"request"\s*:\s*\{\s*"uid"\s*:\s*"([A-Za-z0-9._:-]{1,128})"')


def _uid_without_parsing(raw: bytes) -> str | None:
    """``request.uid`` where the API server writes it (first in ``request``), without parsing the body."""
    match = _UID.search(raw, 0, 64 * 1024)
    return match.group(1).decode() if match else None


def answer(app: Flask, endpoint: str, raw: bytes, record: Record) -> Answered:
    """Answer one AdmissionReview body: parse once, ``review`` it within the budget, fail open on our errors."""
    budget_seconds: float = app.config["SPREADGUARD_BUDGET_SECONDS"]
    large = len(raw) > LARGE_BODY_BYTES
    if large and not _large_bodies.acquire(timeout=budget_seconds):
        record.error = f"another large request is being decided; {len(raw)} bytes waited {budget_seconds} s"
        record.level = logging.WARNING
        uid = _uid_without_parsing(raw)  # parsing is what this request must wait for
        if uid is None:
            return _bad(record.error)
        record.req = admission.AdmissionRequest(uid=uid)
        return _allow_undecided(record, "busy", f"spreadguard was busy, request allowed unchecked: {record.error}")
    try:
        with budget.guard(budget_seconds):
            record.req = admission.parse_review(raw)
            cache = get_cluster(app)  # one snapshot for the whole request; never waits on the API
            policies = get_state(app).policies  # one read: this request sees one policy set, whole
            view = cache.view() if cache is not None else None
            key = app.extensions.get(GRANT_KEY)  # signs and checks exemption grants (engine/grants.py)
            result = admission.review(record.req, policies, endpoint, view, key or None)
        record.decision = result.decision
        return _ok(result)
    except admission.AdmissionError as exc:
        record.error = one_line(f"malformed AdmissionReview: {exc}")
        return _bad(str(exc) or "malformed AdmissionReview")
    except budget.BudgetExceeded:
        record.error = f"not decided within the budget of {budget_seconds} s"
        record.level = logging.WARNING
        if record.req is None:
            return _bad(f"request not read within the budget of {budget_seconds} s")
        return _allow_undecided(record, "budget", f"spreadguard ran out of time, request allowed: {record.error}")
    except Exception as exc:
        record.exc = exc
        reason = one_line(f"{type(exc).__name__}: {exc}", _MAX_WARNING_CHARS)
        record.error = one_line(f"internal error, {'allowed' if record.req else 'answered 400'}: {reason}")
        if record.req is None:
            return _bad(f"spreadguard internal error and no request uid: {reason}")
        return _allow_undecided(record, "error", f"spreadguard internal error, request allowed: {reason}")
    finally:
        if large:
            _large_bodies.release()


def handle(app: Flask, endpoint: str, environ: dict[str, Any]) -> Answered:
    """One admission request, from its WSGI environ to its answer, with its record (log line, metrics)."""
    record = Record(endpoint)
    try:
        raw = read_body(environ)
        if raw is None:
            record.error = f"request body exceeds {admission.MAX_BODY_BYTES} bytes"
            declared = str(environ.get("CONTENT_LENGTH") or "")
            return _bad(too_large_message(int(declared) if declared.isdigit() else None))
        return answer(app, endpoint, raw, record)
    except BaseException as exc:  # the client went away while sending: nothing to answer
        record.error = record.error or one_line(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        record.finish()


def handle_raw(app: Flask, endpoint: str, raw: bytes) -> Answered:
    """One admission request whose body is already read (``worker.py`` answers these in its main loop)."""
    record = Record(endpoint)
    try:
        return answer(app, endpoint, raw, record)
    finally:
        record.finish()


def _metrics_response(cert_expiry: metrics.CertExpiry | None) -> Response:
    if cert_expiry is not None:
        cert_expiry.refresh()
    return Response(metrics.render(), mimetype=None, content_type=metrics.CONTENT_TYPE)


def create_app(
    policies_dir: str | Path, tls_cert: str | Path | None = None, budget_seconds: float = budget.DEFAULT_SECONDS
) -> Flask:
    """The webhook's Flask app serving the policies in ``policies_dir``.

    Raises ``webhook.policy.PolicyError`` (every problem as ``file:line: field: message``) when the
    directory does not load, so a broken policy set never serves. ``tls_cert``, the serving certificate,
    is only read for the expiry metric. ``budget_seconds``: the time one admission request may take to be
    parsed and decided (0: unbounded) before it is allowed undecided (``webhook.server.budget``).
    """
    app = Flask("spreadguard")
    app.config["SPREADGUARD_BUDGET_SECONDS"] = budget_seconds
    set_state(app, load_state(policies_dir))
    cert_expiry = metrics.CertExpiry(str(tls_cert)) if tls_cert else None

    # The admission routes: answered before Flask's request context, routing and Response objects (their
    # per-request cost showed in the profile); every other path and method goes through Flask.
    @app.post("/mutate")
    def mutate() -> Response:
        status, body = handle(app, "mutate", request.environ)
        return Response(body, status=status, mimetype="application/json")

    @app.post("/validate")
    def validate() -> Response:
        status, body = handle(app, "validate", request.environ)
        return Response(body, status=status, mimetype="application/json")

    @app.post("/admit")
    def admit() -> Response:
        status, body = handle(app, "admit", request.environ)
        return Response(body, status=status, mimetype="application/json")

    flask_wsgi = app.wsgi_app

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
        endpoint = _ADMISSION_PATHS.get(environ.get("PATH_INFO", "")) if environ["REQUEST_METHOD"] == "POST" else None
        if endpoint is None:
            return flask_wsgi(environ, start_response)
        status, body = handle(app, endpoint, environ)
        start_response(
            _STATUS_LINES[status], [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    app.wsgi_app = wsgi_app  # type: ignore[method-assign]
    # spreadguard's gunicorn worker answers small admission requests itself, from the bytes it read
    app.extensions[INLINE_HANDLER] = partial(handle_raw, app)

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
        # 404, 405 (keeping its Allow header), ...
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
INLINE_HANDLER = "spreadguard.inline"  # handle_raw bound to the app, for worker.py
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
