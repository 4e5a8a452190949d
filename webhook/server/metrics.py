"""Prometheus metrics (``GET /metrics``), correct across gunicorn's worker processes.

``serve.run`` turns on prometheus_client's multiprocess mode before the workers fork
(``enable_multiprocess``): each worker writes its values to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` and a scrape, whichever worker answers it, merges the files of every worker
(``MultiProcessCollector``): counters and histograms are summed over all workers, dead ones included; the
gauges use the ``live*`` modes, so a worker that exited (gunicorn's ``child_exit`` hook calls
``mark_dead``) stops counting. Without that directory (the Flask app used in-process) the metrics live in
this process only.

The metric objects are made lazily, on first use, in the process that uses them: the gunicorn master never
touches them, so no stale per-process file of the master enters the merge.

Metrics (all in the ``spreadguard_`` namespace):

``spreadguard_admission_requests_total{endpoint,operation,kind,decision}``
    AdmissionReview requests answered on ``/mutate``, ``/validate`` and ``/admit``; ``decision`` is ``allowed``,
    ``denied`` (``/validate`` or ``/admit`` refused it), ``mutated`` (a non-empty patch) or ``error``
    (malformed or oversized request: 400; internal error: allowed with a warning, fail-open).
``spreadguard_rule_violations_total{rule,policy,action}``
    Rule findings reported on ``/validate`` and ``/admit`` (where findings are judged; ``/mutate`` evaluates
    the same object and would count it twice): ``action`` ``deny`` for a finding that denied, ``warn`` for one
    reported as a warning (rule action ``warn``, policy in ``warn`` or ``dryrun`` mode).
``spreadguard_admission_failed_open_total{endpoint,reason}``
    Requests allowed without a decision: ``error`` (an exception in spreadguard), ``budget`` (not decided
    within the per-request time budget), ``busy`` (a large request waited too long for its turn). Each is
    also in ``spreadguard_admission_requests_total`` with ``decision="error"``.
``spreadguard_connections_refused_total{reason}``
    Connections or requests the worker refused or cut before answering them: ``handshake_timeout``,
    ``read_timeout``, ``write_timeout``, ``too_many_connections``, ``too_large``, ``bad_request``
    (``webhook.server.worker``).
``spreadguard_admission_duration_seconds{endpoint}``
    Histogram of the time from request body read to response ready, per admission request.
``spreadguard_policy_reloads_total{result}``
    Policy directory reloads after a change, ``success`` or ``failure``, counted per worker process
    (each worker watches and reloads on its own: with N workers one edit counts N).
``spreadguard_policy_last_reload_success``
    1 if the last reload succeeded (or none happened yet) in every live worker, else 0 (mode ``livemin``).
``spreadguard_policies_loaded``
    Number of policies in force (mode ``livemostrecent``).
``spreadguard_policy_reload_refused``
    1 while the directory on disk is not what is served because a reload was refused (broken, empty, or
    removing a policy whose file is still there), in any live worker (mode ``livemax``).
``spreadguard_certificate_expiry_timestamp_seconds``
    notAfter of the serving certificate on disk (what new connections are served), as a Unix time; read at
    scrape time (mode ``livemostrecent``).
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

ENV = "PROMETHEUS_MULTIPROC_DIR"
NAMESPACE = "spreadguard"
CONTENT_TYPE = CONTENT_TYPE_LATEST
ENDPOINTS = ("mutate", "validate", "admit")
DECISIONS = ("allowed", "denied", "mutated", "error")
# admission latencies are ~1 ms here; the API server's webhook timeout is at most 30 s, ours a few seconds
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
UNKNOWN = "unknown"
FAILED_OPEN_REASONS = ("error", "budget", "busy")
REFUSED_REASONS = (
    "handshake_timeout",
    "read_timeout",
    "write_timeout",
    "too_many_connections",
    "too_large",
    "bad_request",
)


class Metrics:
    """The metric objects, registered in their own registry (used directly only in single-process mode)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "admission_requests",
            "AdmissionReview requests answered, by endpoint, operation, kind and decision.",
            ["endpoint", "operation", "kind", "decision"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.violations = Counter(
            "rule_violations",
            "Rule findings reported on /admit and /validate, by rule id, policy and action (deny or warn).",
            ["rule", "policy", "action"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.duration = Histogram(
            "admission_duration_seconds",
            "Time to answer an AdmissionReview request, by endpoint.",
            ["endpoint"],
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.failed_open = Counter(
            "admission_failed_open",
            "Admission requests allowed without a decision, by endpoint and reason (error, budget, busy).",
            ["endpoint", "reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.refused = Counter(
            "connections_refused",
            "Connections or requests refused before a request thread saw them, by reason.",
            ["reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.reloads = Counter(
            "policy_reloads",
            "Policy directory reloads after a change, by result (success or failure), per worker.",
            ["result"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.last_reload_success = Gauge(
            "policy_last_reload_success",
            "1 if the last policy reload succeeded in every worker (or none ran).",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livemin",
        )
        self.reload_refused = Gauge(
            "policy_reload_refused",
            "1 while a refused reload leaves the served policies different from the directory.",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.policies_loaded = Gauge(
            "policies_loaded",
            "Number of policies in force.",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.cert_expiry = Gauge(
            "certificate_expiry_timestamp_seconds",
            "Expiry (notAfter) of the serving certificate, Unix time.",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        # the series exist (at 0) before the first event, so rate() and alerts see them from the start
        for endpoint in ENDPOINTS:
            self.duration.labels(endpoint)
        for result in ("success", "failure"):
            self.reloads.labels(result)
        for endpoint in ENDPOINTS:
            for reason in FAILED_OPEN_REASONS:
                self.failed_open.labels(endpoint, reason)
        for reason in REFUSED_REASONS:
            self.refused.labels(reason)


_lock = threading.Lock()
_metrics: Metrics | None = None


def get() -> Metrics:
    """This process's metric objects, made on first use."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics


def multiprocess_dir() -> str | None:
    """The multiprocess directory in use, or None in single-process mode."""
    directory = os.environ.get(ENV)
    return directory if directory and values.ValueClass is not values.MutexValue else None


def enable_multiprocess(directory: str) -> None:
    """Share metrics between processes through ``directory`` (call before forking; wipes old ``*.db`` files).

    Files of an earlier run would add its counts to this one's, so the directory is emptied of them.
    """
    global _metrics
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)
    os.environ[ENV] = directory
    with _lock:
        values.ValueClass = values.get_value_class()  # in case prometheus_client was imported before
        _metrics = None


def mark_dead(pid: int) -> None:
    """Drop the live gauges of an exited worker (gunicorn ``child_exit`` hook, in the master)."""
    directory = multiprocess_dir()
    if directory:
        multiprocess.mark_process_dead(pid, directory)


def render() -> bytes:
    """The exposition text of every worker's metrics (or this process's, in single-process mode)."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)
    return generate_latest(get().registry)


@dataclass(frozen=True)
class Finding:
    rule: str
    policy: str
    action: str  # deny | warn


def observe_admission(
    endpoint: str,
    operation: str,
    kind: str,
    decision: str,
    seconds: float,
    findings: Iterable[Finding] = (),
    failed_open: str = "",
) -> None:
    """Count one answered AdmissionReview request, its rule findings, and why it failed open (if it did)."""
    m = get()
    m.requests.labels(endpoint, operation or UNKNOWN, kind or UNKNOWN, decision).inc()
    m.duration.labels(endpoint).observe(seconds)
    for f in findings:
        m.violations.labels(f.rule, f.policy, f.action).inc()
    if failed_open:
        m.failed_open.labels(endpoint, failed_open).inc()


def refused(reason: str) -> None:
    """Count a connection or request refused before a request thread saw it."""
    get().refused.labels(reason).inc()


def reload_result(ok: bool, policies: int | None = None) -> None:
    """Record a reload attempt after a change of the policy directory (a refused one is ``ok=False``)."""
    m = get()
    m.reloads.labels("success" if ok else "failure").inc()
    m.last_reload_success.set(1 if ok else 0)
    m.reload_refused.set(0 if ok else 1)
    if ok and policies is not None:
        m.policies_loaded.set(policies)


def worker_started(policies: int, last_reload_ok: bool = True) -> None:
    """Set the gauges of a worker that starts serving ``policies`` policies."""
    m = get()
    m.last_reload_success.set(1 if last_reload_ok else 0)
    m.reload_refused.set(0 if last_reload_ok else 1)
    m.policies_loaded.set(policies)


class CertExpiry:
    """Sets the certificate expiry gauge from a certificate file, re-parsing it only when the file changed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple | None = None
        self._value: float | None = None
        self._lock = threading.Lock()

    def refresh(self) -> float | None:
        from webhook.certs.files import CertError, load_not_after

        try:
            st = os.stat(self.path)
        except OSError:
            return self._value
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._value = load_not_after(self.path).timestamp()
                    self._stamp = stamp
                except (CertError, OSError, ValueError):
                    pass  # half-replaced or unreadable: keep the last value, retry on the next scrape
            if self._value is not None:
                get().cert_expiry.set(self._value)
            return self._value
