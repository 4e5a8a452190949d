"""The ``spreadguard`` command: thin argparse shell around the package's functions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from webhook import __version__

EPILOG_MAIN = """examples:
  spreadguard certs generate --out certs/
  spreadguard serve --policies policies/ --tls-cert certs/tls.crt --tls-key certs/tls.key
  spreadguard evaluate -f examples/pytorchjob.yaml
  spreadguard policies check policies/
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _cmd_certs_generate(args: argparse.Namespace) -> int:
    from webhook import certs

    try:
        result = certs.ensure_certs(args.out, dns=args.dns, ips=args.ip, days=args.days, force=args.force)
    except certs.CertError as exc:
        print(f"spreadguard: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{result.action}: {result.ca_path}, {result.cert_path}, {result.key_path} "
        f"(serving certificate valid until {result.not_after:%Y-%m-%d})",
        file=sys.stderr,
    )
    print(result.ca_bundle_b64)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from webhook import serve

    return serve.run(
        policies=args.policies,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        bind=args.bind,
        workers=args.workers,
        threads=args.threads,
        log_level=args.log_level,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spreadguard",
        description="Admission webhook that keeps deep-learning training highly available: injects "
        "pod anti-affinity, topology spread and team tolerations, and rejects single points of failure.",
        epilog=EPILOG_MAIN,
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"spreadguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    certs_p = sub.add_parser(
        "certs",
        help="make TLS certificates",
        description="Make TLS certificates for the webhook server.",
        epilog="example:\n  spreadguard certs generate --out certs/ --dns spreadguard.spreadguard.svc",
        formatter_class=_formatter,
    )
    certs_sub = certs_p.add_subparsers(dest="certs_command", metavar="ACTION")
    gen = certs_sub.add_parser(
        "generate",
        help="create a CA and a serving certificate signed by it",
        description="Create (or keep, or renew) a development CA and a serving certificate signed by it. "
        "SANs always include localhost and 127.0.0.1. Writes ca.crt, tls.crt and tls.key (mode 0600); "
        "prints the base64 CA bundle for a webhook configuration's caBundle on stdout. Valid certificates "
        "are kept; ones expiring within 30 days are renewed; --force replaces them.",
        epilog="examples:\n  spreadguard certs generate --out certs/\n"
        "  spreadguard certs generate --out certs/ --dns spreadguard.spreadguard.svc --days 365",
        formatter_class=_formatter,
    )
    gen.add_argument("--out", default="certs/", help="directory to write to (default: certs/)")
    gen.add_argument("--dns", action="append", default=[], metavar="NAME", help="extra DNS SAN (repeatable)")
    gen.add_argument("--ip", action="append", default=[], metavar="ADDR", help="extra IP SAN (repeatable)")
    gen.add_argument("--days", type=int, default=365, help="validity of the serving certificate (default: 365)")
    gen.add_argument("--force", action="store_true", help="replace existing certificates even if valid")
    gen.set_defaults(func=_cmd_certs_generate)

    serve_p = sub.add_parser(
        "serve",
        help="run the admission webhook server (gunicorn, TLS)",
        description="Run the webhook: POST /mutate and /validate (AdmissionReview admission.k8s.io/v1), "
        "GET /healthz and /readyz, over TLS 1.2+ with HTTP keep-alive, served by gunicorn threaded workers.",
        epilog="example:\n  spreadguard serve --policies policies/ --tls-cert certs/tls.crt --tls-key certs/tls.key "
        "--bind 127.0.0.1:8443",
        formatter_class=_formatter,
    )
    serve_p.add_argument("--policies", default="policies/", help="policy directory (default: policies/)")
    serve_p.add_argument("--tls-cert", default="certs/tls.crt", help="serving certificate (default: certs/tls.crt)")
    serve_p.add_argument("--tls-key", default="certs/tls.key", help="serving key (default: certs/tls.key)")
    serve_p.add_argument("--bind", default="127.0.0.1:8443", help="HOST:PORT (default: 127.0.0.1:8443)")
    serve_p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default: 2)")
    serve_p.add_argument("--threads", type=int, default=8, help="threads per worker (default: 8)")
    serve_p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve_p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # a group command without its action: show that group's help
        target = {"certs": "certs"}.get(getattr(args, "command", None) or "")
        parser.parse_args([target, "--help"] if target else ["--help"])
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
