"""``spreadguard evaluate``: the engine over manifests, offline."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from webhook.cli.common import formatter, load_policies_or_exit, read_manifests


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    import yaml

    from webhook.engine.decide import evaluate
    from webhook.engine.target import Context

    policies = load_policies_or_exit(args.policies)
    if policies is None:
        return 2
    try:
        objects = read_manifests(args.filename)
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


def register(sub: Any) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="show what spreadguard adds to and decides about manifests (offline)",
        description="Run the engine over manifest files exactly as the webhook would on CREATE, print the "
        "decision on stderr and the mutated objects (or the JSON patch) on stdout. Exit code: 0 allowed, "
        "1 denied, 2 bad input.",
        epilog="examples:\n  spreadguard evaluate -f examples/pytorchjob.yaml\n"
        "  kubectl kustomize overlays/prod | spreadguard evaluate -f - -o patch",
        formatter_class=formatter,
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
