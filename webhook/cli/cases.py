"""``spreadguard test``: run the policy test cases."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from webhook.cli.common import formatter, load_policies_or_exit


def _cmd_test(args: argparse.Namespace) -> int:
    import json

    from webhook.engine.cases import CaseError, run_cases

    policies = load_policies_or_exit(args.policies)
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


def register(sub: Any) -> None:
    test_p = sub.add_parser(
        "test",
        help="run the policy test cases",
        description="Run policy test cases (an input manifest and its expected effect, as YAML) against the "
        "policies; print a pass/fail table with the problems and a diff for failures. Exit code: 0 all pass, "
        "1 a case failed, 2 bad input.",
        epilog="examples:\n  spreadguard test                       # policies/ and policies/tests/\n"
        "  spreadguard test --policies my-policies/ my-policies/tests/ -o json",
        formatter_class=formatter,
    )
    test_p.add_argument("cases", nargs="?", help="case file or directory (default: POLICIES/tests)")
    test_p.add_argument("--policies", default="policies/", help="policy directory (default: policies/)")
    test_p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    test_p.set_defaults(func=_cmd_test)
