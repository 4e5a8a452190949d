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


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers of ``parser`` by name."""
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # no command, or a group command without its action: that level's help on stderr, usage error
        group = getattr(args, "command", None)
        helper = _subcommands(parser).get(group) if group else parser
        (helper or parser).print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
