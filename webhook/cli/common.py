"""What the commands share: the help formatter, policy loading and manifest reading."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
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


def read_manifests(path: str) -> list[dict[str, Any]]:
    import yaml

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    out: list[dict[str, Any]] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend(i for i in doc["items"] if isinstance(i, dict))
        elif isinstance(doc, dict):
            out.append(doc)
        else:
            raise ValueError(f"{path}: a document is a {type(doc).__name__}, not a Kubernetes object")
    return out
