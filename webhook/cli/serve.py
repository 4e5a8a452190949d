"""``spreadguard serve``."""

from __future__ import annotations

import argparse
from typing import Any

from webhook.cli.common import formatter


def _cmd_serve(args: argparse.Namespace) -> int:
    from webhook.server import serve

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
        max_connections=args.max_connections,
        budget_seconds=args.budget,
    )


def register(sub: Any) -> None:
    serve_p = sub.add_parser(
        "serve",
        help="run the admission webhook server (gunicorn, TLS)",
        description="Run the webhook: POST /mutate and /validate (AdmissionReview admission.k8s.io/v1; /admit does "
        "both in one call for the single-hook install), "
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
    serve_p.set_defaults(func=_cmd_serve)
