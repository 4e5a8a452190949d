"""What the commands share: the help formatter, policy loading and manifest reading."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def load_policies_or_exit(directory: str) -> list[Any] | None:
    from webhook.engine.policy import PolicyError, load_policies

    try:
        return load_policies(directory)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def input_error(source: str, message: str) -> None:
    """One input problem on stderr: ``spreadguard: error: FILE#doc N: what`` (an excerpt may follow)."""
    print(f"spreadguard: error: {source}: {message}", file=sys.stderr)
