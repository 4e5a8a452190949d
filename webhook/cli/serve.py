"""``spreadguard serve``."""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from typing import Any

from webhook.cli.common import formatter


def bind_problem(bind: str) -> str | None:
    """Why ``bind`` cannot be listened on right now (in use, not ours, privileged), or None.

    Checked before gunicorn starts: gunicorn retries a busy address for seconds and then reports
    "Can't connect to (...)", which does not say that another server (a second ``make serve``) has it.
    """
    from webhook.server.serve import parse_bind

    try:
        host, port = parse_bind(bind)
    except ValueError as exc:
        return str(exc)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"--bind {bind}: cannot resolve {host!r}: {exc.strerror or exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does: TIME_WAIT is no conflict
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is already in use (another `spreadguard serve` or `make serve`?): "
                    f"stop it, or choose another address with --bind {host}:PORT"
                )
            if exc.errno == errno.EACCES:
                return f"--bind {bind}: permission denied (ports below 1024 need privileges; use e.g. {host}:8443)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"--bind {bind}: {host} is not an address of this machine"
            return f"--bind {bind}: {exc.strerror or exc}"
    return None


def _cmd_serve(args: argparse.Namespace) -> int:
    from webhook.server import serve

    problem = bind_problem(args.bind)
    if problem:
        print(f"spreadguard serve: {problem}", file=sys.stderr)
        return 2
    return serve.run(
        policies=args.policies,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        bind=args.bind,
        workers=args.workers,
        threads=args.threads,
        log_level=args.log_level,
        reload_interval=args.reload_interval,
        metrics_dir=args.metrics_dir,
        cluster_cache=args.cluster_cache,
        kubeconfig=args.kubeconfig,
        kube_context=args.kube_context,
        grant_key=args.grant_key,
        max_connections=args.max_connections,
        budget_seconds=args.budget,
    )


def register(sub: Any) -> None:
    serve_p = sub.add_parser(
        "serve",
        help="run the admission webhook server (gunicorn, TLS)",
        description="Run the webhook: POST /admit (AdmissionReview admission.k8s.io/v1: the patch, or the denial, "
        "and every warning, in one call: the base install), POST /mutate and /validate (the same answer in two "
        "calls, for the two-hook install), "
        "GET /healthz, /readyz and /metrics, over TLS 1.2+ with HTTP keep-alive, served by gunicorn threaded workers.",
        epilog="example:\n  spreadguard serve --policies policies/ --tls-cert certs/tls.crt --tls-key certs/tls.key "
        "--bind 127.0.0.1:8443",
        formatter_class=formatter,
    )
    serve_p.add_argument("--policies", default="policies/", help="policy directory (default: policies/)")
    serve_p.add_argument("--tls-cert", default="certs/tls.crt", help="serving certificate (default: certs/tls.crt)")
    serve_p.add_argument("--tls-key", default="certs/tls.key", help="serving key (default: certs/tls.key)")
    serve_p.add_argument("--bind", default="127.0.0.1:8443", help="HOST:PORT (default: 127.0.0.1:8443)")
    serve_p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default: 2)")
    serve_p.add_argument("--threads", type=int, default=8, help="threads per worker (default: 8)")
    serve_p.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        metavar="N",
        help="open connections per worker; at the cap a new one evicts the oldest that is not being answered "
        "(default: 1000)",
    )
    serve_p.add_argument(
        "--budget",
        type=float,
        default=2.5,
        metavar="SECONDS",
        help="time to parse and decide one admission request before it is allowed undecided, with a warning "
        "and a metric; keep it below the webhook's timeoutSeconds (default: 2.5; 0: unbounded)",
    )
    serve_p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve_p.add_argument(
        "--reload-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="check the policy directory for changes every SECONDS and reload it; 0: never (default: 2)",
    )
    serve_p.add_argument(
        "--metrics-dir",
        default=None,
        metavar="DIR",
        help="directory where the workers share their metrics, emptied at start (default: "
        "$PROMETHEUS_MULTIPROC_DIR, else a temporary directory)",
    )
    serve_p.add_argument(
        "--cluster-cache",
        choices=["auto", "off"],
        default="auto",
        help="auto (default): watch nodes and namespaces when a cluster is configured (in-cluster service "
        "account, --kubeconfig, or $KUBECONFIG) for schedulability checks and namespace teams/modes; "
        "off: decide from the spec alone",
    )
    serve_p.add_argument("--kubeconfig", help="kubeconfig for the cluster cache")
    serve_p.add_argument("--context", dest="kube_context", help="kubeconfig context for the cluster cache")
    serve_p.add_argument(
        "--grant-key",
        metavar="FILE",
        help="key that signs exemption grants, so pods inherit an exemption only with proof that an authorised "
        "user approved it for their owner (docs/threat-model.md); a missing file means no inheritance "
        "(default: none)",
    )
    serve_p.set_defaults(func=_cmd_serve, _parser=serve_p)
