"""``spreadguard audit``: argparse wiring and the command (the work is in webhook/audit/ and webhook/kube/)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, TextIO

DESCRIPTION = """\
Report what spreadguard would change or reject, without changing anything: every resource is evaluated
by the webhook's engine with every policy treated as `enforce` (whatever mode it is deployed in), over
manifest files or a live cluster (read-only, paginated). Each result says allowed or denied, every
violation (rule, policy, field, message), every warning, the JSON patch, the blast radius of each
replica group (the share of replicas one node or zone failure can take) and PodDisruptionBudgets that
forbid every eviction. With --cluster, also the actual placement: per group, from where its pods run,
what one node or zone failure takes (gangs: nodes, zones and expected restarts), pending pods, drift,
and what each node's and zone's failure would cost.

table RESULT: pass; risk (admitted without findings, but one node failure can take every replica of a
group of several); warn (admitted with warnings); deny. Sources: FILE#doc N is the N-th document.

exit codes: 0 clean; 1 findings per --fail-on (default: violations); 2 usage error, or some input could
not be read, parsed or listed (the rest is still audited and reported)."""

EPILOG = """\
examples:
  spreadguard audit -f examples/                       # every manifest in a directory
  spreadguard audit -f manifests/ -R -o json           # recursively, as JSON
  kubectl kustomize overlays/prod | spreadguard audit -f -
  helm template my-release ./chart | spreadguard audit -f - --diff
  spreadguard audit --cluster -n ml                    # one namespace of the current context
  spreadguard audit --cluster -A -o policyreport | kubectl apply -f -
  spreadguard audit --cluster -A --top 20 -o json      # actual placement, every node in JSON
  spreadguard audit --cluster --context prod -A -o junit > audit.xml
  spreadguard audit -f examples/ --fail-on warnings    # CI: warnings fail too"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``audit`` to the ``spreadguard`` sub-commands."""
    from webhook.audit.auditor import FAIL_ON
    from webhook.audit.report import WRITERS
    from webhook.cli.common import formatter as _formatter

    p = subparsers.add_parser(
        "audit",
        help="report what enforce would change or reject (manifests or a live cluster)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_formatter,
    )
    src = p.add_argument_group("input (one of)")
    src.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        metavar="PATH",
        help="file, directory or - (stdin); YAML (multi-document), JSON, List objects; repeatable",
    )
    src.add_argument("-R", "--recursive", action="store_true", help="read directories recursively")
    src.add_argument("--cluster", action="store_true", help="list the objects of a live cluster (read-only)")
    live = p.add_argument_group("cluster")
    live.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    live.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    scope = live.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        metavar="NS",
        help="namespace to list (default: the context's); with -f, for objects that have none",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="list every namespace")
    live.add_argument(
        "--chunk-size",
        type=int,
        default=500,
        metavar="N",
        help="objects per list request (limit/continue paging; default: 500)",
    )
    p.add_argument("--policies", default="policies/", metavar="DIR", help="policy directory (default: policies/)")
    p.add_argument("-o", "--output", choices=list(WRITERS), default="table", help="report format (default: table)")
    p.add_argument("--diff", action="store_true", help="unified diff of each object before/after mutation (YAML)")
    p.add_argument(
        "--fail-on", choices=FAIL_ON, default="violations", help="what makes the exit code 1 (default: violations)"
    )
    p.add_argument(
        "--zones", type=int, default=3, metavar="N", help="zones assumed for zone-spread blast radius (default: 3)"
    )
    live.add_argument(
        "--node-failure-rate",
        type=float,
        default=19.0,
        metavar="R",
        help="node failures per 1000 nodes per day, for a gang's expected restarts (default: 19)",
    )
    live.add_argument(
        "--top", type=int, default=10, metavar="N", help="table: the N most harmful node/zone failures (default: 10)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="table: every finding and group under its row")
    p.add_argument("--user", default="", help="request user the exemptions are judged for (default: none)")
    p.add_argument("--group", action="append", default=[], help="request group (repeatable)")
    p.set_defaults(func=cmd_audit, _parser=p)
    return p


def _err(message: str) -> None:
    print(f"spreadguard: error: {message}", file=sys.stderr)


class _Progress:
    """A one-line progress indication on stderr, only when stderr is a terminal."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.on = stream.isatty()
        self.last = 0.0
        self.shown = False

    def page(self, kind: Any, count: int, audited: int) -> None:
        now = time.monotonic()
        if self.on and now - self.last > 0.2:
            self.stream.write(f"\r\033[Klisting {kind.resource}: {count} ... ({audited} resources audited)")
            self.stream.flush()
            self.last, self.shown = now, True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def cmd_audit(args: argparse.Namespace) -> int:
    from webhook.audit import auditor as audit
    from webhook.audit import manifests, placement, report
    from webhook.audit.results import InputError
    from webhook.engine.policy import PolicyError, load_policies
    from webhook.kube import listing as cluster

    if bool(args.filename) == bool(args.cluster):
        args._parser.print_usage(sys.stderr)
        _err("give manifests with -f PATH (or -f - for stdin), or --cluster")
        return 2
    if args.filename and (args.kubeconfig or args.context or args.all_namespaces):
        _err("--kubeconfig, --context and -A go with --cluster")
        return 2
    if args.chunk_size < 1 or args.zones < 1 or args.top < 1:
        _err("--chunk-size, --zones and --top must be at least 1")
        return 2
    if not 0 <= args.node_failure_rate <= 1000:
        _err("--node-failure-rate is per 1000 nodes per day: between 0 and 1000")
        return 2
    try:
        policies = load_policies(args.policies)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2

    actual = placement.Placement(policies, failure_rate=args.node_failure_rate) if args.cluster else None
    auditor = audit.Auditor(
        policies,
        zones=args.zones,
        diff=args.diff,
        username=args.user,
        groups=args.group,
        default_namespace=(args.namespace or "") if args.filename else "",
        pdbs_first=args.cluster,  # the scan lists PDBs first: no per-object index is kept
        placement=actual,
    )
    color = args.output == "table" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    writer = report.WRITERS[args.output](sys.stdout, fail_on=args.fail_on, color=color, verbose=args.verbose)
    notes: list[str] = []

    def error(e: InputError) -> None:
        print(f"spreadguard: error: {e.text()}", file=sys.stderr)
        writer.error(e)

    if args.filename:
        for doc in manifests.read_documents(args.filename, recursive=args.recursive):
            if doc.error is not None:
                error(InputError(doc.source, doc.error))
            elif doc.obj is not None:
                result = auditor.audit(doc.obj, doc.source)
                if result is not None:
                    writer.add(result)
    else:
        try:
            session = cluster.connect(args.kubeconfig, args.context)
            namespace = None if args.all_namespaces else (args.namespace or session.namespace)
            progress = _Progress(sys.stderr)

            def on_error(message: str) -> None:
                progress.clear()
                error(InputError("cluster", message))

            scan = cluster.Scan(
                session,
                namespace,
                chunk_size=args.chunk_size,
                on_error=on_error,
                on_page=lambda kind, count: progress.page(kind, count, auditor.totals.resources),
            )
            scan.discover()  # fails here, before any output, when there is no cluster to talk to
        except cluster.ClusterError as exc:
            _err(str(exc))
            return 2
        try:
            for ns in scan.namespaces():
                auditor.namespace(ns)
            assert actual is not None
            for node in scan.nodes():
                actual.node(node)
            for obj in scan.objects():
                result = auditor.audit(obj, "cluster")
                if obj.get("kind") == "Pod" and obj.get("apiVersion") == "v1":
                    actual.pod(obj)  # after the audit: a lone pod's own result is its would-be view
                if result is not None:
                    writer.add(result)
        except cluster.ClusterError as exc:  # lost the API server mid-scan: report what was audited
            progress.clear()
            error(InputError("cluster", str(exc)))
        progress.clear()
        notes = scan.notes
    for result in auditor.finish():
        writer.add(result)
    if actual is not None:
        writer.placement(actual.report(), args.top)
    summary = auditor.summary(writer.errors, notes)
    writer.close(summary)
    sys.stdout.flush()
    return audit.exit_code(summary, args.fail_on)
