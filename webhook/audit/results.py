"""What the audit says about one resource (``Result``), the running totals, input errors, diffs."""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from webhook.audit.blast import Blast
from webhook.engine import workloads, yamlio
from webhook.engine.decide import Violation

# kind names that more than one API group uses (Volcano's Job beside batch/v1 Job): shown with their group
_SHARED_KIND_NAMES = {name for name, n in Counter(kind for _, kind in workloads.KINDS).items() if n > 1}
_BUILTIN_GROUPS = ("", "apps", "batch", "policy")


def kind_label(api_version: str, kind: str) -> str:
    """``Job`` for batch/v1, ``Job.batch.volcano.sh`` for Volcano: a kind name alone must not be ambiguous."""
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    return f"{kind}.{group}" if kind in _SHARED_KIND_NAMES and group not in _BUILTIN_GROUPS else kind


@dataclass(frozen=True, slots=True)
class Ref:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        """``Kind namespace/name``, ``Kind name`` without a namespace (the same in evaluate and audit)."""
        kind = kind_label(self.api_version, self.kind)
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"

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
    notes: list[str] = field(default_factory=list)  # what the patch adds (and exemptions granted)
    info: list[str] = field(default_factory=list)  # how the kind is handled when it is special (TrainJob)
    patch: list[dict[str, Any]] = field(default_factory=list)
    blast: list[Blast] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    diff: str | None = None

    @property
    def status(self) -> str:
        """deny, warn, risk (admitted without findings, but one node failure can take a whole group of
        several replicas: say so rather than "pass" beside "can lose 100%"), or pass."""
        if not self.allowed:
            return "deny"
        if self.warnings:
            return "warn"
        if any(b.replicas > 1 and b.node_share >= 1 for b in self.blast):
            return "risk"
        return "pass"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "resource": self.resource.to_json(),
            "source": self.source,
            "status": self.status,
            "allowed": self.allowed,
            "violations": [_violation_json(v) for v in self.violations],
            "warnings": list(self.warnings),
            "advisories": [_violation_json(v) for v in self.advisories],
            "patch": self.patch,
            "blastRadius": [b.to_json() for b in self.blast],
            "policies": list(self.policies),
            "notes": list(self.notes),
            "info": list(self.info),
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
    a = yamlio.dump(before).splitlines(keepends=True)
    b = yamlio.dump(after).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, f"{label} (as written)", f"{label} (after spreadguard)"))


@dataclass
class Totals:
    resources: int = 0
    allowed: int = 0
    denied: int = 0
    warned: int = 0  # allowed, with warnings
    at_risk: int = 0  # allowed without findings, but a group of several replicas can be lost with one node
    info: int = 0  # notes on how a kind is handled (TrainJob)
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
        self.at_risk += r.status == "risk"
        self.info += len(r.info)
        self.violations += len(r.violations)
        self.warnings += len(r.warnings)
        self.patched += bool(r.patch)
        self.patch_ops += len(r.patch)
        self.by_rule.update(v.rule for v in [*r.violations, *r.advisories])
