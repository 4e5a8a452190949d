"""``spreadguard policies check|schema``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from webhook.cli.common import formatter, load_policies_or_exit


def _cmd_policies_check(args: argparse.Namespace) -> int:
    policies = load_policies_or_exit(args.directory)
    if policies is None:
        return 1
    for p in policies:
        print(f"ok  {p.name}  (mode {p.spec.mode})")
    return 0


def _cmd_policies_schema(args: argparse.Namespace) -> int:
    import json

    from webhook.engine.policy import schema

    text = json.dumps(schema(), indent=2) + "\n"
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def register(sub: Any) -> None:
    pol = sub.add_parser(
        "policies",
        help="check policy files, print their JSON Schema",
        description="Work with policy files.",
        epilog="examples:\n  spreadguard policies check policies/\n"
        "  spreadguard policies schema --write policies/schema.json",
        formatter_class=formatter,
    )
    pol_sub = pol.add_subparsers(dest="policies_command", metavar="ACTION")
    chk = pol_sub.add_parser(
        "check",
        help="validate a policy directory",
        description="Validate every policy file; print every problem as FILE:LINE: FIELD: MESSAGE. "
        "Exit code: 0 valid, 1 problems found.",
        epilog="example:\n  spreadguard policies check policies/",
        formatter_class=formatter,
    )
    chk.add_argument("directory", nargs="?", default="policies/", help="policy directory (default: policies/)")
    chk.set_defaults(func=_cmd_policies_check)
    sch = pol_sub.add_parser(
        "schema",
        help="print the policy JSON Schema",
        description="Print the JSON Schema of HAPolicy files (generated from the policy model).",
        epilog="example:\n  spreadguard policies schema --write policies/schema.json",
        formatter_class=formatter,
    )
    sch.add_argument("--write", metavar="FILE", help="write to FILE instead of stdout")
    sch.set_defaults(func=_cmd_policies_schema)
