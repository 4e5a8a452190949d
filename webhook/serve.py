"""Run the webhook under gunicorn: threaded workers, TLS 1.2+, long HTTP keep-alive, app preloaded.

Everything that can be checked before forking is checked here (bind address, files, the certificate and
key, the policies), so a broken setup ends with one readable message on stderr and an exit code:
2 for bad arguments or files, 1 for invalid policies.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from webhook.policy import PolicyError

# Longer than the idle timeout of the kube-apiserver's webhook client (client-go transports: 90 s, from Go's
# http.DefaultTransport), so it is always the client that drops an idle connection, never the server just as
# the client reuses it.
KEEPALIVE_SECONDS = 120
GRACEFUL_TIMEOUT_SECONDS = 10
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2
LOG_LEVELS = ("debug", "info", "warning", "error")

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

    gunicorn's gthread worker asks for a new context on every accepted connection, which re-reads the
    key pair and the system CA store (about 1 ms) and makes TLS session resumption impossible.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._context: ssl.SSLContext | None = None

    @staticmethod
    def _stamp(conf: Any) -> tuple:
        def one(path: str | None) -> tuple:
            if not path:
                return ()
            st = os.stat(path)
            return (path, st.st_ino, st.st_mtime_ns, st.st_size)

        return os.getpid(), one(conf.certfile), one(conf.keyfile)

    def get(self, conf: Any, factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        stamp = self._stamp(conf)
        with self._lock:
            if self._context is None or stamp != self._key:
                context = factory()
                context.minimum_version = MIN_TLS_VERSION
                self._context, self._key = context, stamp
            return self._context


_contexts = _ContextCache()


def ssl_context(conf: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """gunicorn ``ssl_context`` server hook: the default context with TLS 1.2 as the minimum, cached."""
    return _contexts.get(conf, default_ssl_context_factory)


def check_tls_files(tls_cert: str, tls_key: str) -> None:
    """Load the pair once now, so a bad file fails the start and not the first handshake."""
    for flag, path, marker, what in (("--tls-cert", tls_cert, b"-----BEGIN CERTIFICATE-----", "certificate"),
                                     ("--tls-key", tls_key, b"PRIVATE KEY-----", "private key")):
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
    bind: str, tls_cert: str, tls_key: str, workers: int, threads: int, log_level: str
) -> dict[str, Any]:
    """The gunicorn settings spreadguard runs with."""
    options: dict[str, Any] = {
        "bind": [bind],
        "worker_class": "gthread",
        "workers": workers,
        "threads": threads,
        "keepalive": KEEPALIVE_SECONDS,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "certfile": tls_cert,
        "keyfile": tls_key,
        "ssl_context": ssl_context,
        "preload_app": True,
        "loglevel": log_level,
        "errorlog": "-",
        "accesslog": "-" if log_level == "debug" else None,
        "proc_name": "spreadguard",
        # gunicorn >= 25.1 opens a control socket at one fixed per-user path by default: two servers on
        # one machine (tests, benchmark, a dev server) would fight over it
        "control_socket_disable": True,
    }
    if os.path.isdir("/dev/shm"):
        options["worker_tmp_dir"] = "/dev/shm"  # heartbeat files off a possibly slow disk (containers)
    return options


def _configure_logging(log_level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S %z")
    )
    logger = logging.getLogger("spreadguard")
    logger.handlers[:] = [handler]
    logger.setLevel(log_level.upper())
    logger.propagate = False


def _prepare(
    policies: str, tls_cert: str, tls_key: str, bind: str, workers: int, threads: int, log_level: str
) -> Callable:
    try:
        parse_bind(bind)
    except ValueError as exc:
        raise ServeError(str(exc)) from None
    if workers < 1 or threads < 1:
        raise ServeError(f"--workers and --threads must be at least 1 (got {workers} and {threads})")
    if log_level not in LOG_LEVELS:
        raise ServeError(f"--log-level {log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
    if not os.path.isdir(policies):
        raise ServeError(f"--policies {policies}: no such directory")
    check_tls_files(tls_cert, tls_key)
    from webhook.app import create_app

    try:
        return create_app(policies)
    except PolicyError as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        raise ServeError(f"invalid policies in {policies} ({len(exc.problems)} problem(s)):\n{lines}", 1) from None


def run(
    policies: str,
    tls_cert: str,
    tls_key: str,
    bind: str = "127.0.0.1:8443",
    workers: int = 2,
    threads: int = 8,
    log_level: str = "info",
) -> int:
    """Serve the webhook until stopped (SIGTERM/SIGINT); returns the process exit code."""
    _configure_logging(log_level if log_level in LOG_LEVELS else "info")
    try:
        app = _prepare(policies, tls_cert, tls_key, bind, workers, threads, log_level)
    except ServeError as exc:
        print(f"spreadguard serve: {exc}", file=sys.stderr)
        return exc.code
    master = os.getpid()
    try:
        WebhookServer(app, gunicorn_options(bind, tls_cert, tls_key, workers, threads, log_level)).run()
    except SystemExit as exc:
        if os.getpid() != master:  # a forked worker finishing: let it exit the way gunicorn meant
            raise
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
