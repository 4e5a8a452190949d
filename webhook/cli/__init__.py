"""The ``spreadguard`` command: one module per sub-command, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from webhook import __version__
from webhook.cli import audit, cases, certs, evaluate, policies, serve
from webhook.cli.common import formatter

EPILOG_MAIN = """examples:
  spreadguard certs generate --out certs/
  spreadguard serve --policies policies/ --tls-cert certs/tls.crt --tls-key certs/tls.key
  spreadguard evaluate -f examples/pytorchjob.yaml
  spreadguard policies check policies/
  spreadguard test
  kubectl kustomize overlays/prod | spreadguard audit -f -
  spreadguard audit --cluster -A -o policyreport
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spreadguard",
        description="Admission webhook that keeps deep-learning training highly available: injects "
        "pod anti-affinity, topology spread and team tolerations, and rejects single points of failure.",
        epilog=EPILOG_MAIN,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"spreadguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (certs, serve, evaluate, cases, policies, audit):
        command.register(sub)
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
