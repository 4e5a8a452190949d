"""Policy test cases: an input manifest and the expected effect, kept as YAML beside the policies
(``policies/tests/*.yaml``) and run by ``spreadguard test`` and by pytest.

A case file holds a list of cases::

    - name: pytorchjob workers get hostname anti-affinity
      resource: examples/pytorchjob.yaml      # a path (relative to the repo/case file) or an inline object
      request: {operation: CREATE, username: alice, groups: [ml-team]}   # optional
      # request.nodes: [{name, labels, taints, allocatable, unschedulable}] gives a cluster view
      # request.grantKey: the key that signs exemption grants (as `serve --grant-key` reads it from a file)
      expect:
        allowed: true                          # or false
        violations: [single-node-pinning]      # rule ids that deny (exactly these, any order)
        warnings: [foreign-team-toleration]    # rule ids that only warn (exactly these)
        object: {...}                          # deep subset the mutated object must contain
        absent: [spec.x.y]                     # dotted paths that must not exist after mutation
        notes: ["instead of required"]         # fragments of what the mutation notes say
        patch: empty                           # "empty": nothing is added
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from webhook.engine import yamlio
from webhook.engine.decide import Decision, evaluate
from webhook.engine.placement import ClusterView, classify_records, cordoned, node_from_api, record
from webhook.engine.policy import Policy
from webhook.engine.target import Context


@dataclass
class CaseResult:
    file: str
    name: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    diff: str = ""
    decision: Decision | None = None


def _subset_problems(want: Any, got: Any, path: str) -> list[str]:
    """Where ``got`` does not contain ``want``: dicts by key, lists element-wise with equal length."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path or '(object)'}: expected a mapping, got {json.dumps(got)}"]
        out = []
        for key, value in want.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in got:
                out.append(f"{sub}: missing")
            else:
                out.extend(_subset_problems(value, got[key], sub))
        return out
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: expected {json.dumps(want)}, got {json.dumps(got)}"]
        return [
            p for i, (w, g) in enumerate(zip(want, got, strict=True)) for p in _subset_problems(w, g, f"{path}[{i}]")
        ]
    if want != got:
        return [f"{path}: expected {json.dumps(want)}, got {json.dumps(got)}"]
    return []


def _lookup(obj: Any, dotted: str) -> tuple[bool, Any]:
    cur = obj
    for part in _split(dotted):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and part < len(cur):
            cur = cur[part]
        else:
            return False, None
    return True, cur


def _split(dotted: str) -> list[str | int]:
    """``spec.a[0].b`` -> ["spec", "a", 0, "b"]; keys with dots go in brackets: ``labels[x.io/y]``."""
    out: list[str | int] = []
    for name, bracket in _TOKEN.findall(dotted):
        token = name or bracket
        out.append(int(token) if token.isdigit() else token)
    return out


_TOKEN = re.compile(r"([^.\[\]]+)|\[([^\]]+)\]")


def _cluster(nodes: list[dict[str, Any]]) -> ClusterView:
    """A synced cluster view from ``request.nodes``: ``{name, labels, taints, allocatable, unschedulable}``."""
    infos = [
        node_from_api(
            {
                "metadata": {
                    "name": n.get("name", f"node-{i}"),
                    "labels": {"kubernetes.io/hostname": n.get("name", f"node-{i}"), **(n.get("labels") or {})},
                },
                "spec": {"taints": n.get("taints") or [], "unschedulable": bool(n.get("unschedulable"))},
                "status": {"allocatable": n.get("allocatable") or {}},
            }
        )
        for i, n in enumerate(nodes)
    ]
    records = [record(n) for n in infos]
    return ClusterView(synced=True, classes=classify_records(records), cordoned=cordoned(records))


def case_context(case: dict[str, Any], obj: dict[str, Any], base: Path) -> Context:
    """The admission request a case describes (``request:``), around its resource ``obj``."""
    req = case.get("request") or {}
    if not isinstance(req, dict):
        raise ValueError("request must be a mapping")
    return Context(
        operation=req.get("operation", "CREATE"),
        namespace=req.get("namespace") or (obj.get("metadata") or {}).get("namespace") or "",
        username=req.get("username", ""),
        groups=tuple(req.get("groups") or ()),
        namespace_labels=req.get("namespaceLabels") or {},
        old_object=load_resource(req["oldObject"], base) if req.get("oldObject") else None,
        cluster=_cluster(req["nodes"]) if "nodes" in req else None,
        grant_key=str(req["grantKey"]).encode() if req.get("grantKey") else None,
    )


def load_resource(spec: Any, base: Path) -> dict[str, Any]:
    """A case's ``resource:`` (or ``oldObject:``): the object itself, or a path relative to ``base``, the
    case file's directory, then to each directory above it (``examples/x.yaml`` from ``policies/tests/``).

    ``base`` is made absolute first, so the answer never depends on the directory the command runs in.
    """
    if isinstance(spec, dict):
        return spec
    if isinstance(spec, str):
        base = base.resolve()
        for root in (base, *base.parents):
            candidate = root / spec
            if candidate.is_file():
                loaded = yaml.safe_load(candidate.read_text())
                if not isinstance(loaded, dict):
                    raise ValueError(f"resource file {candidate}: not a mapping")
                return loaded
        raise FileNotFoundError(f"resource file {spec!r} not found in {base} or a directory above it")
    raise ValueError("resource must be a path or a mapping")


def run_case(case: dict[str, Any], policies: list[Policy], base: Path, file: str) -> CaseResult:
    """Run one case; a malformed case is a failure that says what is wrong, never an exception."""
    name = str(case.get("name") or "(unnamed)")
    try:
        return _run_case(case, policies, base, file, name)
    except (OSError, ValueError, TypeError, AttributeError, KeyError, yaml.YAMLError) as exc:
        return CaseResult(file, name, False, [f"malformed case: {type(exc).__name__}: {exc}"])


def _run_case(case: dict[str, Any], policies: list[Policy], base: Path, file: str, name: str) -> CaseResult:
    obj = load_resource(case.get("resource"), base)
    if not isinstance(obj, dict):
        raise ValueError(f"resource must be one Kubernetes object (a mapping), got {type(obj).__name__}")
    decision = evaluate(obj, case_context(case, obj, base), policies)
    expect = case.get("expect") or {}
    if not isinstance(expect, dict):
        raise ValueError("expect must be a mapping")
    problems: list[str] = []
    if "allowed" in expect and expect["allowed"] != decision.allowed:
        problems.append(f"allowed: expected {expect['allowed']}, got {decision.allowed}")
    for key, found in (("violations", decision.violations), ("warnings", decision.advisories)):
        if key in expect:
            want, got = sorted(expect[key] or []), sorted(v.rule for v in found)
            if want != got:
                problems.append(f"{key}: expected {want}, got {got}")
    for fragment in expect.get("messages") or []:
        if not any(fragment in v.text() for v in decision.violations + decision.advisories):
            problems.append(f"no violation message contains {fragment!r}")
    for fragment in expect.get("notes") or []:
        if not any(fragment in n for n in decision.notes + decision.info + decision.dryrun):
            problems.append(f"no note contains {fragment!r}")
    mutated = decision.mutated if decision.mutated is not None else obj
    if "object" in expect:
        problems += _subset_problems(expect["object"], mutated, "")
    for dotted in expect.get("absent") or []:
        present, value = _lookup(mutated, dotted)
        if present:
            problems.append(f"{dotted}: expected absent, got {json.dumps(value)}")
    if expect.get("patch") == "empty" and decision.patch:
        problems.append(f"patch: expected empty, got {json.dumps(decision.patch)}")
    diff = ""
    if problems and decision.patch:
        before = yamlio.dump(obj, sort_keys=True).splitlines()
        after = yamlio.dump(mutated, sort_keys=True).splitlines()
        diff = "\n".join(difflib.unified_diff(before, after, "before", "after", lineterm="", n=2))
    return CaseResult(file, name, not problems, problems, diff, decision)


class CaseError(Exception):
    """A case file that cannot be read; the message names the file (and line)."""


def load_cases(directory: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every case of every ``*.yaml`` in ``directory`` (recursively), as (file, case)."""
    root = Path(directory)
    if not root.exists():
        raise CaseError(f"{root}: no such file or directory")
    files = [root] if root.is_file() else sorted(root.rglob("*.yaml"))
    out: list[tuple[Path, dict[str, Any]]] = []
    for path in files:
        try:
            docs = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else 1
            raise CaseError(f"{path}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CaseError(f"{path}: cannot read: {exc}") from None
        if isinstance(docs, dict):
            docs = docs.get("cases") or []
        if not isinstance(docs, list):
            raise CaseError(f"{path}:1: expected a list of cases")
        out.extend((path, case) for case in docs if isinstance(case, dict))
    return out


def run_cases(directory: str | Path, policies: list[Policy]) -> list[CaseResult]:
    return [run_case(case, policies, path.parent, str(path)) for path, case in load_cases(directory)]
