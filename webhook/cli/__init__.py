"""The ``spreadguard`` command: one module per sub-command, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import os
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


def _leaf(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub-)command that ``args`` chose: ``spreadguard policies check`` -> check's."""
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _leaf(action.choices[chosen], args)
    return parser


# flags people try from other servers and CLIs -> what spreadguard calls them
FLAG_HINTS = {
    "--port": "--bind HOST:PORT",
    "--host": "--bind HOST:PORT",
    "--listen": "--bind HOST:PORT",
    "--address": "--bind HOST:PORT",
    "--cert": "--tls-cert FILE",
    "--key": "--tls-key FILE",
    "--file": "-f/--filename",
    "--policy": "--policies DIR",
    "--output": "-o/--output",
}


def _hint(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """A "did you mean" for the first unknown flag: a known alias, else the closest option of this command."""
    import difflib

    options = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]  # noqa: SLF001
    for arg in unknown:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("-"):
            continue
        if flag in FLAG_HINTS and FLAG_HINTS[flag].split()[0].split("/")[-1] in options:
            given = arg.partition("=")[2] or next(iter(unknown[unknown.index(arg) + 1 :]), "")
            example = f" (e.g. --bind 127.0.0.1:{given})" if flag == "--port" and given.isdigit() else ""
            return f"{flag} is not an option here; did you mean {FLAG_HINTS[flag]}{example}?"
        close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
        if close:
            return f"did you mean {close[0]}?"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # the usage of the command the flag was given to, not the top level's (as argparse would print)
        leaf = _leaf(parser, args)
        leaf.print_usage(sys.stderr)
        hint = _hint(leaf, unknown)
        print(f"{leaf.prog}: error: unrecognized arguments: {' '.join(unknown)}", file=sys.stderr)
        if hint:
            print(f"hint: {hint} (see {leaf.prog} --help)", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        # no command, or a group command without its action: that level's help on stderr, usage error
        _leaf(parser, args).print_help(sys.stderr)
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`spreadguard evaluate ... | head`): stop quietly, as `yes | head` does.
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
