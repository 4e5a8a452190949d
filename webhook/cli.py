"""The ``spreadguard`` command: thin argparse shell around the package's functions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from webhook import __version__

EPILOG_MAIN = """examples:
  spreadguard certs generate --out certs/
  spreadguard serve --policies policies/ --tls-cert certs/tls.crt --tls-key certs/tls.key
  spreadguard evaluate -f examples/pytorchjob.yaml
  spreadguard policies check policies/
  spreadguard test
  kubectl kustomize overlays/prod | spreadguard audit -f -
  spreadguard audit --cluster -A -o policyreport
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


def _cmd_certs_bootstrap(args: argparse.Namespace) -> int:
    from webhook import bootstrap

    return bootstrap.run(args)


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
        reload_interval=args.reload_interval,
        metrics_dir=args.metrics_dir,
        cluster_cache=args.cluster_cache,
        kubeconfig=args.kubeconfig,
        kube_context=args.kube_context,
    )


def _load_policies_or_exit(directory: str) -> list | None:
    from webhook.policy import PolicyError, load_policies

    try:
        return load_policies(directory)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _read_manifests(path: str) -> list[dict]:
    import yaml

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    out: list[dict] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend(i for i in doc["items"] if isinstance(i, dict))
        elif isinstance(doc, dict):
            out.append(doc)
        else:
            raise ValueError(f"{path}: a document is a {type(doc).__name__}, not a Kubernetes object")
    return out


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    import yaml

    from webhook.engine import evaluate
    from webhook.target import Context

    policies = _load_policies_or_exit(args.policies)
    if policies is None:
        return 2
    try:
        objects = _read_manifests(args.filename)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"spreadguard: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    denied = False
    for obj in objects:
        meta = obj.get("metadata") or {}
        ctx = Context(
            operation=args.operation,
            namespace=args.namespace or meta.get("namespace") or "",
            username=args.user,
            groups=tuple(args.group),
        )
        decision = evaluate(obj, ctx, policies)
        denied |= not decision.allowed
        name = f"{obj.get('kind', '?')} {meta.get('namespace', '')}/{meta.get('name', meta.get('generateName', '?'))}"
        verdict = "allowed" if decision.allowed else "DENIED"
        print(f"# {name}: {verdict}; policies: {', '.join(decision.policies) or 'none matched'}", file=sys.stderr)
        for v in decision.violations:
            print(f"#   deny  {v.text()}", file=sys.stderr)
        for w in decision.warnings:
            print(f"#   warn  {w}", file=sys.stderr)
        for n in decision.notes:
            print(f"#   add   {n}", file=sys.stderr)
        if args.output == "patch":
            print(json.dumps(decision.patch, indent=2))
        elif args.output == "json":
            print(json.dumps(decision.mutated, indent=2))
        elif args.output == "yaml":
            print("---")
            print(yaml.safe_dump(decision.mutated, sort_keys=False), end="")
    return 1 if denied else 0


def _cmd_test(args: argparse.Namespace) -> int:
    import json

    from webhook.casefile import CaseError, run_cases

    policies = _load_policies_or_exit(args.policies)
    if policies is None:
        return 2
    try:
        results = run_cases(args.cases or str(Path(args.policies) / "tests"), policies)
    except CaseError as exc:
        print(f"spreadguard: error: {exc}", file=sys.stderr)
        return 2
    failed = [r for r in results if not r.passed]
    if args.output == "json":
        print(
            json.dumps(
                {
                    "results": [
                        {"file": r.file, "name": r.name, "passed": r.passed, "problems": r.problems} for r in results
                    ],
                    "summary": {"passed": len(results) - len(failed), "failed": len(failed)},
                },
                indent=2,
            )
        )
    else:
        width = max((len(r.name) for r in results), default=10)
        for r in results:
            print(f"{'PASS' if r.passed else 'FAIL'}  {r.name:<{width}}  {Path(r.file).name}")
            for problem in r.problems:
                print(f"      - {problem}")
            if r.diff:
                print("\n".join(f"      {line}" for line in r.diff.splitlines()))
        print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if not results:
        print("spreadguard: error: no test cases found", file=sys.stderr)
        return 2
    return 1 if failed else 0


def _cmd_policies_check(args: argparse.Namespace) -> int:
    policies = _load_policies_or_exit(args.directory)
    if policies is None:
        return 1
    for p in policies:
        print(f"ok  {p.name}  (mode {p.spec.mode})")
    return 0


def _cmd_policies_schema(args: argparse.Namespace) -> int:
    import json

    from webhook.policy import schema

    text = json.dumps(schema(), indent=2) + "\n"
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


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
    boot = certs_sub.add_parser(
        "bootstrap",
        help="keep the serving certificate in a Secret and its CA in the webhook configurations (in-cluster)",
        description="Create, keep or renew the CA and serving certificate in a kubernetes.io/tls Secret (ca.crt, "
        "ca.key, tls.crt, tls.key; DNS SANs SERVICE, SERVICE.NAMESPACE, SERVICE.NAMESPACE.svc and "
        "SERVICE.NAMESPACE.svc.cluster.local), then set the caBundle of every webhook in the named "
        "Mutating/ValidatingWebhookConfigurations. A certificate valid for longer than --renew-before is kept; "
        "otherwise it is renewed from the same CA. Writes nothing when nothing changed; safe to run from several "
        "pods at once. Exit code: 0 done, 1 the API server could not be reached or the work not finished, "
        "2 bad arguments, no cluster configuration, or forbidden.",
        epilog="examples:\n  spreadguard certs bootstrap --namespace spreadguard --service spreadguard "
        "--secret spreadguard-tls --webhook spreadguard\n"
        "  spreadguard certs bootstrap -n spreadguard --service spreadguard --secret spreadguard-tls "
        "--webhook spreadguard --kubeconfig ~/.kube/config --out certs/",
        formatter_class=_formatter,
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

    serve_p = sub.add_parser(
        "serve",
        help="run the admission webhook server (gunicorn, TLS)",
        description="Run the webhook: POST /mutate and /validate (AdmissionReview admission.k8s.io/v1), "
        "GET /healthz, /readyz and /metrics, over TLS 1.2+ with HTTP keep-alive, served by gunicorn threaded workers.",
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

    ev = sub.add_parser(
        "evaluate",
        help="show what spreadguard adds to and decides about manifests (offline)",
        description="Run the engine over manifest files exactly as the webhook would on CREATE, print the "
        "decision on stderr and the mutated objects (or the JSON patch) on stdout. Exit code: 0 allowed, "
        "1 denied, 2 bad input.",
        epilog="examples:\n  spreadguard evaluate -f examples/pytorchjob.yaml\n"
        "  kubectl kustomize overlays/prod | spreadguard evaluate -f - -o patch",
        formatter_class=_formatter,
    )
    ev.add_argument("-f", "--filename", required=True, help="YAML/JSON file (multi-document, List) or - for stdin")
    ev.add_argument("--policies", default="policies/", help="policy directory (default: policies/)")
    ev.add_argument(
        "-o",
        "--output",
        choices=["yaml", "json", "patch", "none"],
        default="yaml",
        help="what to print on stdout (default: yaml, the mutated objects)",
    )
    ev.add_argument("--operation", default="CREATE", choices=["CREATE", "UPDATE"], help="as which operation")
    ev.add_argument("-n", "--namespace", default="", help="namespace, when the manifest has none")
    ev.add_argument("--user", default="", help="request user (for exemptions)")
    ev.add_argument("--group", action="append", default=[], help="request group (repeatable)")
    ev.set_defaults(func=_cmd_evaluate)

    test_p = sub.add_parser(
        "test",
        help="run the policy test cases",
        description="Run policy test cases (an input manifest and its expected effect, as YAML) against the "
        "policies; print a pass/fail table with the problems and a diff for failures. Exit code: 0 all pass, "
        "1 a case failed, 2 bad input.",
        epilog="examples:\n  spreadguard test                       # policies/ and policies/tests/\n"
        "  spreadguard test --policies my-policies/ my-policies/tests/ -o json",
        formatter_class=_formatter,
    )
    test_p.add_argument("cases", nargs="?", help="case file or directory (default: POLICIES/tests)")
    test_p.add_argument("--policies", default="policies/", help="policy directory (default: policies/)")
    test_p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    test_p.set_defaults(func=_cmd_test)

    pol = sub.add_parser(
        "policies",
        help="check policy files, print their JSON Schema",
        description="Work with policy files.",
        epilog="examples:\n  spreadguard policies check policies/\n"
        "  spreadguard policies schema --write policies/schema.json",
        formatter_class=_formatter,
    )
    pol_sub = pol.add_subparsers(dest="policies_command", metavar="ACTION")
    chk = pol_sub.add_parser(
        "check",
        help="validate a policy directory",
        description="Validate every policy file; print every problem as FILE:LINE: FIELD: MESSAGE. "
        "Exit code: 0 valid, 1 problems found.",
        epilog="example:\n  spreadguard policies check policies/",
        formatter_class=_formatter,
    )
    chk.add_argument("directory", nargs="?", default="policies/", help="policy directory (default: policies/)")
    chk.set_defaults(func=_cmd_policies_check)
    sch = pol_sub.add_parser(
        "schema",
        help="print the policy JSON Schema",
        description="Print the JSON Schema of HAPolicy files (generated from the policy model).",
        epilog="example:\n  spreadguard policies schema --write policies/schema.json",
        formatter_class=_formatter,
    )
    sch.add_argument("--write", metavar="FILE", help="write to FILE instead of stdout")
    sch.set_defaults(func=_cmd_policies_schema)
    from webhook import audit_cli

    audit_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # no command, or a group command without its action: that level's help on stderr, usage error
        group = getattr(args, "command", None)
        helper = parser._subparsers._group_actions[0].choices.get(group) if group else parser  # noqa: SLF001
        (helper or parser).print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
