"""``spreadguard certs generate|bootstrap``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from webhook.cli.common import formatter


def _cmd_certs_generate(args: argparse.Namespace) -> int:
    from webhook.certs import files as certs

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


def _cmd_certs_bootstrap(args: argparse.Namespace) -> int:
    from webhook.certs import bootstrap

    return bootstrap.run(args)


def register(sub: Any) -> None:
    certs_p = sub.add_parser(
        "certs",
        help="make TLS certificates",
        description="Make TLS certificates for the webhook server.",
        epilog="example:\n  spreadguard certs generate --out certs/ --dns spreadguard.spreadguard.svc",
        formatter_class=formatter,
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
        formatter_class=formatter,
    )
    gen.add_argument("--out", default="certs/", help="directory to write to (default: certs/)")
    gen.add_argument("--dns", action="append", default=[], metavar="NAME", help="extra DNS SAN (repeatable)")
    gen.add_argument("--ip", action="append", default=[], metavar="ADDR", help="extra IP SAN (repeatable)")
    gen.add_argument("--days", type=int, default=365, help="validity of the serving certificate (default: 365)")
    gen.add_argument("--force", action="store_true", help="replace existing certificates even if valid")
    gen.set_defaults(func=_cmd_certs_generate)
    boot = certs_sub.add_parser(
        "bootstrap",
        help="keep the serving certificate in a Secret and its CA in the webhook configurations (in-cluster)",
        description="Create, keep or renew the CA and serving certificate in a kubernetes.io/tls Secret (ca.crt, "
        "ca.key, tls.crt, tls.key; DNS SANs SERVICE, SERVICE.NAMESPACE, SERVICE.NAMESPACE.svc and "
        "SERVICE.NAMESPACE.svc.cluster.local), then set the caBundle of every webhook in the named "
        "Mutating/ValidatingWebhookConfigurations (each kind that exists under the name: the base install has "
        "only the mutating one). A certificate valid for longer than --renew-before is kept; "
        "otherwise it is renewed from the same CA. Writes nothing when nothing changed; safe to run from several "
        "pods at once. Exit code: 0 done, 1 the API server could not be reached or the work not finished, "
        "2 bad arguments, no cluster configuration, or forbidden.",
        epilog="examples:\n  spreadguard certs bootstrap --namespace spreadguard --service spreadguard "
        "--secret spreadguard-tls --webhook spreadguard\n"
        "  spreadguard certs bootstrap -n spreadguard --service spreadguard --secret spreadguard-tls "
        "--webhook spreadguard --kubeconfig ~/.kube/config --out certs/",
        formatter_class=formatter,
    )
    boot.add_argument("-n", "--namespace", required=True, help="namespace of the Service and the Secret")
    boot.add_argument("--service", required=True, help="name of the webhook's Service (for the DNS SANs)")
    boot.add_argument("--secret", required=True, help="name of the TLS Secret to create or keep")
    boot.add_argument(
        "--webhook",
        action="extend",
        nargs="+",
        required=True,
        metavar="NAME",
        help="Mutating/ValidatingWebhookConfiguration name whose caBundle to set (repeatable)",
    )
    boot.add_argument("--out", metavar="DIR", help="also write ca.crt, tls.crt and tls.key into DIR")
    boot.add_argument("--days", type=int, default=365, help="validity of a new serving certificate (default: 365)")
    boot.add_argument(
        "--renew-before",
        type=float,
        default=30,
        metavar="DAYS",
        help="renew a certificate expiring within DAYS (default: 30; certificates expiring "
        "within 30 days are always renewed)",
    )
    boot.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig to use (default: in-cluster, else $KUBECONFIG or ~/.kube/config)",
    )
    boot.set_defaults(func=_cmd_certs_bootstrap)
