"""Run the webhook under gunicorn: threaded workers, TLS 1.2+, long HTTP keep-alive, app preloaded.

Everything that can be checked before forking is checked here (bind address, files, the certificate and
key, the policies), so a broken setup ends with one readable message on stderr and an exit code:
2 for bad arguments or files, 1 for invalid policies.

Operations, per worker process: the TLS context is rebuilt when the certificate or key file changes (a
rotated certificate is served on new connections, without a restart, while open connections carry on with
the old one); the policy directory is watched and reloaded (``webhook.reload``); metrics are shared between
the workers through a prometheus_client multiprocess directory (``webhook.metrics``); logs are JSON lines on
stderr (``webhook.logs``).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import shutil
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from webhook.engine.policy import PolicyError
from webhook.server import logs, metrics
from webhook.server.budget import DEFAULT_SECONDS as DEFAULT_BUDGET_SECONDS
from webhook.server.reload import DEFAULT_INTERVAL_SECONDS

# Longer than the idle timeout of the kube-apiserver's webhook client (client-go transports: 90 s, from Go's
# http.DefaultTransport), so it is always the client that drops an idle connection, never the server just as
# the client reuses it.
KEEPALIVE_SECONDS = 120
GRACEFUL_TIMEOUT_SECONDS = 10
DEFAULT_MAX_CONNECTIONS = 1000
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2
LOG_LEVELS = ("debug", "info", "warning", "error")

log = logging.getLogger("spreadguard.serve")

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class ServeError(Exception):
    """A problem found before starting: one line for stderr, and the exit code."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def parse_bind(bind: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6); raises ``ValueError`` with a one-line reason."""
    host, sep, port_text = bind.rpartition(":")
    if not sep or not host or not port_text:
        raise ValueError(f"--bind {bind!r}: expected HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"--bind {bind!r}: port must be a number from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"--bind {bind!r}: {host} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"--bind {bind!r}: write an IPv6 host in brackets, e.g. [::1]:8443")
    elif not _HOSTNAME.match(host):
        raise ValueError(f"--bind {bind!r}: {host!r} is not a host name or IP address")
    return host, int(port_text)


class _ContextCache:
    """One server ``SSLContext`` per worker process, rebuilt when the certificate or key file changes.

    gunicorn's gthread worker asks for a context on every accepted connection; building one re-reads the key
    pair and the system CA store (about 1 ms) and makes TLS session resumption impossible, so it is cached.
    Each new connection ``stat``s both files (following symlinks: a Kubernetes Secret volume swaps a
    ``..data`` symlink, ``os.replace`` swaps the inode, an in-place write changes mtime and size) and a change
    builds a new context: new connections get the new certificate, open ones keep theirs.

    A pair that does not load while it is being replaced (``ensure_certs`` writes the key, then the
    certificate: in between they do not match; a file briefly missing) does not fail the connection: the
    last good context is served and the next connection tries again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._context: ssl.SSLContext | None = None
        self._failed: tuple | None = None  # the stamp of the last pair that did not load (warned once)

    @staticmethod
    def _stamp(conf: Any) -> tuple:
        def one(path: str | None) -> tuple:
            if not path:
                return ()
            st = os.stat(path)
            return (path, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)

        return os.getpid(), one(conf.certfile), one(conf.keyfile)

    def get(self, conf: Any, factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        try:
            stamp: tuple | None = self._stamp(conf)
        except OSError:
            stamp = None  # a file is missing right now (being replaced): no change to act on yet
        with self._lock:
            # a context made in another process (before a fork) is not reused: each worker makes its own
            current = self._context if self._key is not None and self._key[0] == os.getpid() else None
            if current is not None and (stamp is None or stamp == self._key):
                return current
            try:
                context = factory()
            except (ssl.SSLError, OSError, ValueError) as exc:
                if current is None:
                    raise  # nothing served before in this process: the pair must load
                if stamp != self._failed:
                    self._failed = stamp
                    log.warning(
                        "TLS certificate/key did not load (%s); serving the previous certificate until they do",
                        " ".join(str(exc).split()),
                        extra={"fields": {"certfile": conf.certfile, "keyfile": conf.keyfile}},
                    )
                return current
            context.minimum_version = MIN_TLS_VERSION
            if current is not None:
                _log_certificate("serving a new TLS certificate on new connections", conf.certfile)
            self._context, self._key, self._failed = context, stamp, None
            return context


def _log_certificate(message: str, certfile: str) -> None:
    fields: dict[str, Any] = {"certfile": certfile}
    try:
        from cryptography import x509

        with open(certfile, "rb") as handle:
            cert = x509.load_pem_x509_certificate(handle.read())
        fields.update(serial=format(cert.serial_number, "x"), not_after=cert.not_valid_after_utc.isoformat())
    except (OSError, ValueError):
        pass
    log.info(message, extra={"fields": fields})


_contexts = _ContextCache()


def ssl_context(conf: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """gunicorn ``ssl_context`` server hook: the default context with TLS 1.2 as the minimum, cached."""
    return _contexts.get(conf, default_ssl_context_factory)


def check_tls_files(tls_cert: str, tls_key: str) -> None:
    """Load the pair once now, so a bad file fails the start and not the first handshake."""
    for flag, path, marker, what in (
        ("--tls-cert", tls_cert, b"-----BEGIN CERTIFICATE-----", "certificate"),
        ("--tls-key", tls_key, b"PRIVATE KEY-----", "private key"),
    ):
        if not os.path.isfile(path):
            raise ServeError(f"{flag} {path}: no such file (make one with: spreadguard certs generate --out certs/)")
        try:
            with open(path, "rb") as handle:
                pem = handle.read()
        except OSError as exc:
            raise ServeError(f"{flag} {path}: cannot read: {exc.strerror or exc}") from None
        if marker not in pem:
            raise ServeError(f"{flag} {path}: no PEM {what} in this file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile=tls_cert, keyfile=tls_key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or " ".join(str(exc).split())
        if reason == "KEY_VALUES_MISMATCH":
            reason = "the key does not belong to the certificate"
        raise ServeError(f"cannot use TLS certificate {tls_cert} with key {tls_key}: {reason}") from None


class WebhookServer(BaseApplication):
    """gunicorn serving an already created WSGI app (the master loads it once, workers inherit it)."""

    def __init__(self, app: Callable, options: dict[str, Any]):
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable:
        return self._app


def gunicorn_options(
    bind: str,
    tls_cert: str,
    tls_key: str,
    workers: int,
    threads: int,
    log_level: str,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> dict[str, Any]:
    """The gunicorn settings spreadguard runs with."""
    options: dict[str, Any] = {
        "bind": [bind],
        # gthread with a non-blocking front stage: TLS handshake and request reads never hold a thread
        "worker_class": "webhook.server.worker.BoundedWorker",
        "workers": workers,
        "threads": threads,
        "keepalive": KEEPALIVE_SECONDS,
        "worker_connections": max_connections,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "certfile": tls_cert,
        "keyfile": tls_key,
        "ssl_context": ssl_context,
        "preload_app": True,
        "loglevel": log_level,
        "errorlog": "-",
        "accesslog": "-" if log_level == "debug" else None,
        "logger_class": logs.JsonGunicornLogger,
        "proc_name": "spreadguard",
        # gunicorn >= 25.1 opens a control socket at one fixed per-user path by default: two servers on
        # one machine (tests, benchmark, a dev server) would fight over it
        "control_socket_disable": True,
        "child_exit": _child_exit,
    }
    if os.path.isdir("/dev/shm"):
        options["worker_tmp_dir"] = "/dev/shm"  # heartbeat files off a possibly slow disk (containers)
    return options


def _child_exit(_server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook (in the master): the exited worker's live gauges stop counting."""
    try:
        metrics.mark_dead(worker.pid)
    except OSError:
        log.warning("could not drop the metrics of exited worker %s", worker.pid, exc_info=True)


def _pre_fork(app: Callable) -> Callable[[Any, Any], None]:
    """gunicorn ``pre_fork`` hook (in the master, before each worker is forked): policies up to date."""

    def pre_fork(_server: Any, _worker: Any) -> None:
        from webhook.server.app import master_before_fork

        try:
            master_before_fork(app)  # type: ignore[arg-type]
        except Exception:  # fork with what the master has
            log.exception("updating the policies before starting a worker failed")

    return pre_fork


def _post_fork(app: Callable, reload_interval: float) -> Callable[[Any, Any], None]:
    """gunicorn ``post_fork`` hook (in each new worker): its metrics and its policy watcher."""

    def post_fork(_server: Any, _worker: Any) -> None:
        from webhook.server.app import worker_started

        try:
            worker_started(app, reload_interval)  # type: ignore[arg-type]
        except Exception:  # serve anyway, with the policies loaded before the fork
            log.exception("worker start-up (metrics, policy watcher) failed; serving without them")

    return post_fork


def _metrics_dir(requested: str | None) -> tuple[str, bool]:
    """The multiprocess metrics directory to use, and whether it is a temporary one made here."""
    chosen = requested or os.environ.get(metrics.ENV)
    if chosen:
        try:
            metrics.enable_multiprocess(chosen)
        except OSError as exc:
            raise ServeError(f"--metrics-dir {chosen}: cannot use it: {exc.strerror or exc}") from None
        return chosen, False
    try:
        made = tempfile.mkdtemp(prefix="spreadguard-metrics-")
    except OSError as exc:
        raise ServeError(
            f"cannot create a metrics directory in {tempfile.gettempdir()}: {exc.strerror or exc} "
            "(give a writable one with --metrics-dir)"
        ) from None
    metrics.enable_multiprocess(made)
    return made, True


def _prepare(
    policies: str,
    tls_cert: str,
    tls_key: str,
    bind: str,
    workers: int,
    threads: int,
    log_level: str,
    reload_interval: float = DEFAULT_INTERVAL_SECONDS,
    cluster_cache: str = "auto",
    kubeconfig: str | None = None,
    kube_context: str | None = None,
    grant_key: str | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
) -> Callable:
    try:
        parse_bind(bind)
    except ValueError as exc:
        raise ServeError(str(exc)) from None
    if workers < 1 or threads < 1:
        raise ServeError(f"--workers and --threads must be at least 1 (got {workers} and {threads})")
    if max_connections < threads + 1:
        raise ServeError(f"--max-connections must be more than --threads ({threads}); got {max_connections}")
    if not (budget_seconds >= 0 and math.isfinite(budget_seconds)):
        raise ServeError(f"--budget must be 0 (unbounded) or a number of seconds (got {budget_seconds})")
    if log_level not in LOG_LEVELS:
        raise ServeError(f"--log-level {log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
    if not (reload_interval >= 0 and math.isfinite(reload_interval)):
        raise ServeError(f"--reload-interval must be 0 (no reload) or a number of seconds (got {reload_interval})")
    if not os.path.isdir(policies):
        raise ServeError(f"--policies {policies}: no such directory")
    check_tls_files(tls_cert, tls_key)
    from webhook.server.app import create_app

    try:
        app = create_app(policies, tls_cert=tls_cert, budget_seconds=budget_seconds)
    except PolicyError as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        raise ServeError(f"invalid policies in {policies} ({len(exc.problems)} problem(s)):\n{lines}", 1) from None
    if cluster_cache not in ("auto", "off"):
        raise ServeError(f"--cluster-cache {cluster_cache!r}: expected auto or off")
    if cluster_cache == "auto":
        from webhook.kube.informer import CacheConfigError, ClusterCache
        from webhook.server.app import set_cluster

        try:  # no network here: the workers list and watch after fork
            set_cluster(app, ClusterCache.from_environment(kubeconfig=kubeconfig, context=kube_context))
        except CacheConfigError as exc:
            raise ServeError(f"cluster cache: {exc}") from None
    if grant_key:
        from webhook.server.app import set_grant_key

        set_grant_key(app, read_grant_key(grant_key))
    return app


def read_grant_key(path: str) -> bytes | None:
    """The exemption grant key from ``path`` (a Secret's file; surrounding whitespace dropped).

    A missing file (the Secret is optional) means no key: exemptions are not passed on to pods, and a log
    line says so. A key shorter than ``grants.MIN_KEY_BYTES`` is an error: it could be guessed.
    """
    from webhook.engine import grants

    try:
        with open(path, "rb") as fh:
            key = fh.read(4096).strip()
    except FileNotFoundError:
        log.warning("--grant-key %s: no such file; exemptions are not passed on to pods (no grant key)", path)
        return None
    except OSError as exc:
        raise ServeError(f"--grant-key {path}: cannot read: {exc.strerror or exc}") from None
    if len(key) < grants.MIN_KEY_BYTES:
        raise ServeError(
            f"--grant-key {path}: the key has {len(key)} bytes; at least {grants.MIN_KEY_BYTES} are needed "
            "(e.g. `openssl rand -hex 32`)"
        )
    return key


def run(
    policies: str,
    tls_cert: str,
    tls_key: str,
    bind: str = "127.0.0.1:8443",
    workers: int = 2,
    threads: int = 8,
    log_level: str = "info",
    reload_interval: float = DEFAULT_INTERVAL_SECONDS,
    metrics_dir: str | None = None,
    cluster_cache: str = "auto",
    kubeconfig: str | None = None,
    kube_context: str | None = None,
    grant_key: str | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
) -> int:
    """Serve the webhook until stopped (SIGTERM/SIGINT); returns the process exit code.

    ``reload_interval``: seconds between checks of the policy directory (0: never reload).
    ``metrics_dir``: where the workers share their metrics (emptied at start); default
    ``$PROMETHEUS_MULTIPROC_DIR``, else a temporary directory removed at exit.
    ``cluster_cache``: "auto" watches nodes and namespaces when a cluster is configured (in-cluster
    service account, ``kubeconfig``/``kube_context``, or ``$KUBECONFIG``); "off": spec-only decisions.
    """
    logs.configure(log_level if log_level in LOG_LEVELS else "info")
    try:
        app = _prepare(
            policies,
            tls_cert,
            tls_key,
            bind,
            workers,
            threads,
            log_level,
            reload_interval,
            cluster_cache,
            kubeconfig,
            kube_context,
            grant_key,
            max_connections,
            budget_seconds,
        )
        directory, temporary = _metrics_dir(metrics_dir)
    except ServeError as exc:
        print(f"spreadguard serve: {exc}", file=sys.stderr)
        return exc.code
    master = os.getpid()
    options = gunicorn_options(bind, tls_cert, tls_key, workers, threads, log_level, max_connections)
    options["post_fork"] = _post_fork(app, reload_interval)
    if reload_interval > 0:
        options["pre_fork"] = _pre_fork(app)
    try:
        WebhookServer(app, options).run()
    except SystemExit as exc:
        if os.getpid() != master:  # a forked worker finishing: let it exit the way gunicorn meant
            raise
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        if temporary and os.getpid() == master:
            shutil.rmtree(directory, ignore_errors=True)
    return 0
