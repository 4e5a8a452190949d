"""``spreadguard policies check|schema``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from webhook.cli.common import formatter, load_policies_or_exit

SCHEMA_COMMENT = re.compile(r"^#\s*yaml-language-server:\s*\$schema=(\S+)")


def schema_hints(directory: str) -> list[str]:
    """``file:line`` hints for ``$schema=`` comments that point at a local file that is not there.

    A new policy directory copied from policies/ keeps ``$schema=./schema.json``; editors then
    validate against nothing until the schema is written next to it.
    """
    hints = []
    for path in sorted(Path(directory).glob("*.y*ml")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()[:5]
        except (OSError, UnicodeDecodeError):
            continue  # load_policies reports it
        for n, line in enumerate(lines, 1):
            m = SCHEMA_COMMENT.match(line)
            if m and "://" not in m.group(1) and not (path.parent / m.group(1)).is_file():
                target = path.parent / m.group(1)
                hints.append(
                    f"{path}:{n}: $schema={m.group(1)} points at nothing ({target} does not exist): "
                    f"write it with `spreadguard policies schema --write {target}`"
                )
    return hints


def _cmd_policies_check(args: argparse.Namespace) -> int:
    policies = load_policies_or_exit(args.directory)
    if policies is None:
        return 1
    for p in policies:
        print(f"ok  {p.name}  (mode {p.spec.mode})")
    for hint in schema_hints(args.directory):
        print(f"hint: {hint}", file=sys.stderr)
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
        description="Validate every policy file; print every problem as FILE:LINE: FIELD: MESSAGE (LINE is a "
        "line of the file; the audit names documents as FILE#doc N). Also hints at a `$schema=` comment that "
        "points at a missing schema file. Exit code: 0 valid, 1 problems found.",
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
