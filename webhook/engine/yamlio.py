"""YAML as spreadguard writes it: block style, keys in the order written, and no anchors or aliases.

PyYAML's dumpers write an object that appears twice as ``&id001 ...`` and then ``*id001``; spreadguard's
mutators add the same selector to several places, so the second copy would be invisible to a reader
(and to tools that do not follow aliases). Every YAML that spreadguard prints goes through ``dump``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

_Base: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class Dumper(_Base):  # type: ignore[misc]
    """A safe dumper that writes every repeated object out in full (never an alias)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(obj: Any, *, sort_keys: bool = False) -> str:
    """One YAML document, without a ``---`` marker."""
    return str(yaml.dump(obj, Dumper=Dumper, sort_keys=sort_keys, default_flow_style=False, allow_unicode=True))


def dump_all(objs: Iterable[Any], *, sort_keys: bool = False) -> str:
    """YAML documents, each opened by ``---``."""
    return str(
        yaml.dump_all(
            objs, Dumper=Dumper, sort_keys=sort_keys, default_flow_style=False, allow_unicode=True, explicit_start=True
        )
    )
