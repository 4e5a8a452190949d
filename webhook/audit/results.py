"""What the audit says about one resource (``Result``), the running totals, input errors, diffs."""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import yaml

from webhook.audit.blast import Blast
from webhook.engine.decide import Violation


@dataclass(frozen=True, slots=True)
class Ref:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def to_json(self) -> dict[str, str]:
        return {"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace, "name": self.name}


def ref_of(obj: dict[str, Any], namespace: str = "") -> Ref:
    meta = obj.get("metadata") or {}
    return Ref(
        str(obj.get("apiVersion") or ""),
        str(obj.get("kind") or ""),
        str(meta.get("namespace") or namespace or ""),
        str(meta.get("name") or meta.get("generateName") or ""),
        str(meta.get("uid") or ""),
    )


@dataclass
class Result:
    """What enforce would do with one resource."""

    resource: Ref
    source: str
    allowed: bool = True
    violations: list[Violation] = field(default_factory=list)  # would deny
    advisories: list[Violation] = field(default_factory=list)  # findings that would only warn
    warnings: list[str] = field(default_factory=list)  # one line per advisory (and dryrun addition)
    notes: list[str] = field(default_factory=list)  # what the patch adds, how the kind is handled
    patch: list[dict[str, Any]] = field(default_factory=list)
    blast: list[Blast] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    diff: str | None = None

    @property
    def status(self) -> str:
        return "deny" if not self.allowed else "warn" if self.warnings else "pass"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "resource": self.resource.to_json(),
            "source": self.source,
            "allowed": self.allowed,
            "violations": [_violation_json(v) for v in self.violations],
            "warnings": list(self.warnings),
            "advisories": [_violation_json(v) for v in self.advisories],
            "patch": self.patch,
            "blastRadius": [b.to_json() for b in self.blast],
            "policies": list(self.policies),
            "notes": list(self.notes),
        }
        if self.diff is not None:
            out["diff"] = self.diff
        return out


def _violation_json(v: Violation) -> dict[str, str]:
    return {"rule": v.rule, "policy": v.policy, "path": v.path, "message": v.message}


@dataclass(frozen=True)
class InputError:
    source: str
    message: str

    def text(self) -> str:
        return f"{self.source}: {self.message}"


def unified_diff(before: dict[str, Any], after: dict[str, Any], label: str) -> str:
    """The object before and after mutation as YAML, unified diff ('' when nothing changes)."""
    if before == after:
        return ""
    dump = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    a = yaml.dump(before, Dumper=dump, sort_keys=False).splitlines(keepends=True)
    b = yaml.dump(after, Dumper=dump, sort_keys=False).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, f"{label} (as written)", f"{label} (after spreadguard)"))


@dataclass
class Totals:
    resources: int = 0
    allowed: int = 0
    denied: int = 0
    warned: int = 0  # allowed, with warnings
    violations: int = 0
    warnings: int = 0
    patched: int = 0
    patch_ops: int = 0
    by_rule: Counter = field(default_factory=Counter)

    def add(self, r: Result) -> None:
        self.resources += 1
        self.allowed += r.allowed
        self.denied += not r.allowed
        self.warned += r.allowed and bool(r.warnings)
        self.violations += len(r.violations)
        self.warnings += len(r.warnings)
        self.patched += bool(r.patch)
        self.patch_ops += len(r.patch)
        self.by_rule.update(v.rule for v in [*r.violations, *r.advisories])
