"""``spreadguard audit``: what enforce would change or reject, over manifests or a live cluster.

Everything here is pure except the manifest reader: the engine (``webhook.engine.evaluate``) decides,
with copies of the policies whose mode is forced to ``enforce``; this module adds the audit-only parts
(blast radius per group, PodDisruptionBudgets that block every eviction) and the report formats.
Objects stream through ``Auditor.audit`` one at a time; nothing keeps them after their result is written.
"""

from __future__ import annotations

import difflib
import io
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from xml.etree import ElementTree as ET

import yaml

from webhook.engine import labels as labelsel
from webhook.engine import podspec, workloads, yamlio
from webhook.engine.decide import Violation, evaluate
from webhook.engine.policy import Policy
from webhook.engine.target import Context

AUDIT_POLICY = "spreadguard-audit"  # the policy name audit-only findings are reported under
PDB_RULE = "pdb-blocks-eviction"
ZONE_KEYS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
MODE_LABEL = "spreadguard.io/mode"
SUFFIXES = (".yaml", ".yml", ".json")
FAIL_ON = ("violations", "warnings", "never")

# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Document:
    """One object read from input (``obj``), or why a document could not be read (``error``)."""

    source: str  # "path#doc N" (documents count from 1), "path#doc N items[i]" for List items; stdin is "stdin"
    obj: dict[str, Any] | None = None
    error: str | None = None


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader that keeps timestamps as the strings Kubernetes sends (JSON-serialisable)."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def _marker(line: str, mark: str) -> bool:
    return line.startswith(mark) and (len(line) == 3 or line[3] in " \t\r\n")


def _yaml_chunks(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Split a YAML stream at document markers without parsing it: ``(first line, text)`` per chunk.

    A ``---`` or ``...`` at column 0 always ends a document in YAML (even a block scalar), so one bad
    document never hides the ones after it.
    """
    buf: list[str] = []
    start = 1
    for n, line in enumerate(lines, 1):
        if _marker(line, "---"):
            if buf:
                yield start, "".join(buf)
            buf, start = [line], n
        elif _marker(line, "..."):
            buf.append(line)
            yield start, "".join(buf)
            buf, start = [], n + 1
        else:
            buf.append(line)
    if buf:
        yield start, "".join(buf)


def _yaml_error(exc: yaml.YAMLError, start: int, chunk: str) -> str:
    """What is wrong, at which line of the file, and the lines around it with a caret (kept as lines)."""
    if isinstance(exc, yaml.reader.ReaderError):
        return f"not a text file (control character {exc.character!r} at offset {exc.position} of the document)"
    mark = getattr(exc, "problem_mark", None)
    what = (
        "; ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        or str(exc).splitlines()[0]
    )
    if mark is None:
        return f"not valid YAML: {what}"
    lines = chunk.splitlines()
    excerpt = []
    for i in range(max(mark.line - 2, 0), min(mark.line, len(lines) - 1) + 1):
        excerpt.append(f"  {start + i:>5} | {lines[i][:160]}")
    if mark.line < len(lines):
        excerpt.append(f"  {'':>5} | {' ' * min(mark.column, 160)}^")
    return f"not valid YAML at line {start + mark.line}, column {mark.column + 1}: {what}\n" + "\n".join(excerpt)


def _expand(doc: Any, source: str) -> Iterator[Document]:
    """A parsed document as objects: ``List`` items one by one, anything not an object as an error."""
    if not isinstance(doc, dict):
        yield Document(source, error=f"a {type(doc).__name__}, not a Kubernetes object")
        return
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        item_kind = kind[: -len("List")] if kind != "List" else None
        for i, item in enumerate(doc["items"]):
            if isinstance(item, dict) and item_kind and "kind" not in item:
                item = {"apiVersion": doc.get("apiVersion"), "kind": item_kind, **item}  # typed lists omit them
            yield from _expand(item, f"{source} items[{i}]")
        return
    if not isinstance(doc.get("apiVersion"), str) or not isinstance(kind, str):
        yield Document(source, error="not a Kubernetes object: apiVersion and kind are required")
        return
    yield Document(source, obj=doc)


def parse_stream(lines: Iterable[str], name: str) -> Iterator[Document]:
    """Every object in a YAML (multi-document) or JSON stream; documents are numbered from 1, empty
    ones (only comments) not counted. A document that does not parse yields an error and reading goes on."""
    it = iter(lines)
    head: list[str] = []
    for line in it:
        head.append(line)
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
    first = "".join(head).lstrip()[:1]
    if first in ("{", "["):
        text = "".join(head) + "".join(it)
        done = yield from _json_stream(text, name)
        if done:
            return
        it, head = iter(text.splitlines(keepends=True)), []
    doc_no = 0
    for start, chunk in _yaml_chunks(_chain(head, it)):
        try:
            doc = yaml.load(chunk, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            doc_no += 1
            yield Document(f"{name}#doc {doc_no}", error=_yaml_error(exc, start, chunk))
            continue
        if doc is None:
            continue
        doc_no += 1
        yield from _expand(doc, f"{name}#doc {doc_no}")


def _chain(head: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from head
    yield from rest


def _json_stream(text: str, name: str) -> Generator[Document, None, bool]:
    """Concatenated JSON values; returns False (nothing yielded) when the first is not JSON (try YAML)."""
    decoder = json.JSONDecoder()
    pos, doc_no = 0, 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return True
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if doc_no == 0:
                return False
            yield Document(
                f"{name}#doc {doc_no + 1}",
                error=f"not valid JSON: {exc.msg} (line {exc.lineno}, column "
                f"{exc.colno}); the rest of the file is not read",
            )
            return True
        doc_no += 1
        yield from _expand(doc, f"{name}#doc {doc_no}")


def _files(path: Path, recursive: bool) -> list[Path]:
    found = path.rglob("*") if recursive else path.iterdir()
    return sorted(f for f in found if f.suffix in SUFFIXES and f.is_file())


STDIN = "stdin"  # how ``-f -`` is named in every message


def read_documents(paths: Sequence[str], recursive: bool = False, stdin: TextIO | None = None) -> Iterator[Document]:
    """Objects from files, directories (``recursive``: their subdirectories too) and ``-`` (stdin).

    An argument that holds no document at all (an empty file, empty stdin) is an error, as in kubectl.
    """
    for arg in paths:
        seen = 0
        if arg == "-":
            stream = stdin if stdin is not None else _stdin()
            for doc in _decoded(parse_stream(stream, STDIN), STDIN):
                seen += 1
                yield doc
            if not seen:
                yield Document(STDIN, error="no objects: the input is empty")
            continue
        path = Path(arg)
        if path.is_dir():
            files = _files(path, recursive)
            if not files:
                hint = "" if recursive else " (use -R to read subdirectories)"
                yield Document(arg, error=f"no {', '.join('*' + s for s in SUFFIXES)} files in the directory{hint}")
                continue
            for f in files:
                for doc in _read_file(f):
                    seen += 1
                    yield doc
            if not seen:
                count = _n(len(files), "file")
                yield Document(arg, error=f"no objects: every file in the directory is empty ({count})")
        elif path.exists():
            for doc in _read_file(path):
                seen += 1
                yield doc
            if not seen:
                yield Document(arg, error="no objects: the file is empty")
        else:
            yield Document(arg, error="no such file or directory")


def _stdin() -> TextIO:
    """Standard input read as UTF-8 whatever the locale says (manifests are UTF-8)."""
    buffer = getattr(sys.stdin, "buffer", None)
    return io.TextIOWrapper(buffer, encoding="utf-8") if buffer is not None else sys.stdin


def _decoded(docs: Iterator[Document], name: str) -> Iterator[Document]:
    """``docs``, ending with an error (not an exception) when the input turns out not to be UTF-8 text."""
    try:
        yield from docs
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        yield Document(name, error=f"not a text file (byte 0x{byte} is not UTF-8): spreadguard reads YAML or JSON")


def _read_file(path: Path) -> Iterator[Document]:
    try:
        with path.open(encoding="utf-8") as fh:
            yield from _decoded(parse_stream(fh, str(path)), str(path))
    except OSError as exc:
        yield Document(str(path), error=f"cannot read: {exc.strerror or exc}")


# -------------------------------------------------------------------------------- policies


# ---------------------------------------------------------------------------- blast radius


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}".rstrip("0").rstrip(".") + "%"


@dataclass(frozen=True)
class Blast:
    """How much of one group a single node (and a single zone) can hold, as the template stands."""

    group: str
    path: str
    replicas: int
    per_node: int | None  # None: unbounded, every replica could land on one node
    node_reason: str
    per_zone: int | None
    zone_reason: str

    @property
    def node_share(self) -> float:
        return min(self.per_node or self.replicas, self.replicas) / self.replicas

    @property
    def zone_share(self) -> float:
        return min(self.per_zone or self.replicas, self.replicas) / self.replicas

    def node_text(self) -> str:
        n = self.replicas
        if n == 1:
            return f"{self.group}: 1 replica: one node failure loses 100%"
        head = f"{self.group}: {n} replicas"
        if self.per_node is None:
            return f"{head}, unbounded per node: all could share a node (one node failure can lose 100%)"
        if self.per_node >= n:
            return f"{head}, all on one node ({self.node_reason}): one node failure loses 100%"
        return f"{head}, at most {self.per_node} per node: one node failure loses {_pct(self.per_node, n)}"

    def zone_text(self) -> str:
        n = self.replicas
        if self.per_zone is None:
            return "zones unbounded: all could share a zone"
        if self.per_zone >= n:
            return f"all in one zone ({self.zone_reason})"
        return f"at most {self.per_zone} per zone: one zone failure loses {_pct(self.per_zone, n)}"

    def text(self) -> str:
        return self.node_text() if self.replicas == 1 else f"{self.node_text()}; {self.zone_text()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "path": self.path,
            "replicas": self.replicas,
            "maxPerNode": self.per_node,
            "nodeReason": self.node_reason,
            "nodeLossPercent": round(100 * self.node_share, 1),
            "maxPerZone": self.per_zone,
            "zoneReason": self.zone_reason,
            "zoneLossPercent": round(100 * self.zone_share, 1),
            "text": self.text(),
        }


def _pinned(spec: dict[str, Any], key: str) -> str | None:
    """The single value of node label ``key`` the pod is confined to (nodeName counts for hostname)."""
    if key == podspec.HOSTNAME and spec.get("nodeName"):
        return str(spec["nodeName"])
    value = (spec.get("nodeSelector") or {}).get(key)
    if value:
        return str(value)
    allowed: set[str] = set()
    for term in podspec.required_node_terms(spec):  # ORed: every term must confine the key
        values = podspec.hosts_allowed_by_term(term) if key == podspec.HOSTNAME else _term_values(term, key)
        if values is None:
            return None
        allowed |= values
    return next(iter(allowed)) if len(allowed) == 1 else None


def _term_values(term: dict[str, Any], key: str) -> set[str] | None:
    """Values of node label ``key`` one nodeSelectorTerm allows; None when it does not restrict ``key``."""
    values: set[str] | None = None
    for expr in term.get("matchExpressions") or []:
        if isinstance(expr, dict) and expr.get("key") == key and expr.get("operator") == "In":
            vals = set(expr.get("values") or [])
            values = vals if values is None else values & vals
    return values


def _self_terms(spec: dict[str, Any], section: str, required: bool, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [t for t in podspec.pod_affinity_terms(spec, section, required) if podspec.term_selects(t, labels)]


def _spreads(spec: dict[str, Any], keys: Sequence[str], labels: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for c in spec.get("topologySpreadConstraints") or []:
        if isinstance(c, dict) and c.get("topologyKey") in keys and podspec.term_selects(c, labels):
            out.append(c)
    return out


def _skew_bound(n: int, skew: int, domains: int) -> int:
    """Most pods one domain can hold when ``n`` pods spread over ``domains`` with ``maxSkew``."""
    return min(n, (n + (domains - 1) * skew) // domains)


def _node_bound(spec: dict[str, Any], labels: dict[str, str], n: int) -> tuple[int | None, str]:
    host = _pinned(spec, podspec.HOSTNAME)
    if host:
        anti = any(t.get("topologyKey") == podspec.HOSTNAME for t in _self_terms(spec, "podAntiAffinity", True, labels))
        return n, f"pinned to node {host}" + (", where its required anti-affinity lets only 1 run" if anti else "")
    if any(t.get("topologyKey") == podspec.HOSTNAME for t in _self_terms(spec, "podAffinity", True, labels)):
        return n, "required pod affinity to its own group on kubernetes.io/hostname"
    bounds: list[tuple[int, str]] = []
    for t in _self_terms(spec, "podAntiAffinity", True, labels):
        if t.get("topologyKey") in (podspec.HOSTNAME, *ZONE_KEYS):
            bounds.append((1, f"required anti-affinity on {t['topologyKey']}"))
    for c in _spreads(spec, (podspec.HOSTNAME,), labels):
        if c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule":
            skew = max(int(c.get("maxSkew") or 1), 1)
            bounds.append(
                (min(skew, n), f"topology spread on kubernetes.io/hostname, maxSkew {skew}, with at least {n} nodes")
            )
    if bounds:
        return min(bounds)
    if any(t.get("topologyKey") == podspec.HOSTNAME for t in _self_terms(spec, "podAntiAffinity", False, labels)):
        return None, "preferred anti-affinity only (best effort)"
    if _spreads(spec, (podspec.HOSTNAME,), labels):
        return None, "hostname spread is ScheduleAnyway (best effort)"
    return None, "no anti-affinity or spread on kubernetes.io/hostname"


def _zone_bound(
    spec: dict[str, Any], labels: dict[str, str], n: int, per_node: int | None, zones: int
) -> tuple[int | None, str]:
    if per_node is not None and per_node >= n:
        return n, "every replica on one node"
    for key in ZONE_KEYS:
        zone = _pinned(spec, key)
        if zone:
            return n, f"pinned to zone {zone}"
    if any(t.get("topologyKey") in ZONE_KEYS for t in _self_terms(spec, "podAffinity", True, labels)):
        return n, "required pod affinity to its own group on the zone"
    if any(t.get("topologyKey") in ZONE_KEYS for t in _self_terms(spec, "podAntiAffinity", True, labels)):
        return 1, "required anti-affinity on the zone"
    spreads = _spreads(spec, ZONE_KEYS, labels)
    hard = [c for c in spreads if c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule"]
    if hard:
        best: tuple[int, str] | None = None
        for c in hard:
            skew = max(int(c.get("maxSkew") or 1), 1)
            min_domains = int(c.get("minDomains") or 0)
            bound = min(skew, n) if min_domains > zones else _skew_bound(n, skew, zones)
            why = f"zone spread maxSkew {skew} (DoNotSchedule), {zones} zones assumed"
            if best is None or bound < best[0]:
                best = (bound, why)
        assert best is not None
        return best
    if spreads or any(t.get("topologyKey") in ZONE_KEYS for t in _self_terms(spec, "podAntiAffinity", False, labels)):
        return None, "zone spread is best effort (ScheduleAnyway or preferred)"
    return None, "no zone spread"


def blast_radius(obj: dict[str, Any], zones: int = 3, groups: Sequence[workloads.Group] | None = None) -> list[Blast]:
    """The blast radius of every group of ``obj`` (usually the mutated object) with a known replica count."""
    out = []
    for g in workloads.groups_of(obj) if groups is None else groups:
        if not g.replicas or g.replicas < 1:
            continue
        template = workloads.pod_template(obj, g)
        spec = podspec.spec_of(template) if isinstance(template, dict) else {}
        labels = podspec.pod_labels(template, g.selector) if isinstance(template, dict) else {}
        per_node, node_why = _node_bound(spec, labels, g.replicas)
        per_zone, zone_why = _zone_bound(spec, labels, g.replicas, per_node, zones)
        out.append(Blast(g.name, g.path_str or "(object)", g.replicas, per_node, node_why, per_zone, zone_why))
    return out


def worst(blasts: Sequence[Blast]) -> Blast | None:
    """The group one node failure hurts most (multi-replica groups first)."""
    if not blasts:
        return None
    return max(blasts, key=lambda b: (b.replicas > 1, b.node_share, b.replicas))


# ------------------------------------------------------------------------------- PDBs


@dataclass(frozen=True, slots=True)
class _Pods:
    """One audited group, as a PodDisruptionBudget sees it: its pods' labels and how many there are.
    Kept for every audited group until ``finish()`` (a few hundred bytes each)."""

    labels: dict[str, str]
    replicas: int
    ref: Ref
    group: str

    @property
    def what(self) -> str:
        return f"{self.ref} {self.group}"


def _intstr(value: Any) -> tuple[int | None, bool]:
    """(number, is_percent) of an IntOrString; (None, False) when absent or malformed."""
    if isinstance(value, bool) or value is None:
        return None, False
    if isinstance(value, int):
        return value, False
    if isinstance(value, str):
        text = value.strip()
        pct = text.endswith("%")
        digits = text[:-1] if pct else text
        if digits.isdigit():
            return int(digits), pct
    return None, False


def pdb_findings(pdb: dict[str, Any], selected: Sequence[_Pods]) -> list[Violation]:
    """A PDB that forbids every eviction: ``maxUnavailable: 0`` / ``"0%"``, or ``minAvailable`` at least the
    replicas it selects (or ``"100%"``). Such a PDB makes ``kubectl drain`` hang on every node running one of
    its pods, so GPU health remediation and upgrades stall."""
    spec = pdb.get("spec") or {}
    total = sum(p.replicas for p in selected)
    what = ", ".join(p.what for p in selected) or "no audited workload"
    fix = (
        "draining a node that runs one of its pods (GPU health remediation, upgrades) waits forever. Fix: allow "
        "one disruption, e.g. maxUnavailable: 1, and let spreading keep the rest running"
    )
    out = []
    max_u, _pct_u = _intstr(spec.get("maxUnavailable"))
    if "maxUnavailable" in spec and max_u == 0:
        out.append(
            Violation(
                PDB_RULE,
                AUDIT_POLICY,
                "spec.maxUnavailable",
                f"maxUnavailable {spec['maxUnavailable']!r} forbids every eviction of the pods it "
                f"selects ({what}): {fix}",
            )
        )
    min_a, pct_a = _intstr(spec.get("minAvailable"))
    if min_a is not None and "maxUnavailable" not in spec:
        if pct_a and min_a >= 100:
            need, blocked = "100%", True
        elif pct_a:
            pods = math.ceil(min_a * total / 100)  # the disruption controller rounds up
            need, blocked = f"{spec['minAvailable']} (= {pods} pods)", total > 0 and pods >= total
        else:
            need, blocked = str(min_a), total > 0 and min_a >= total
        if blocked:
            out.append(
                Violation(
                    PDB_RULE,
                    AUDIT_POLICY,
                    "spec.minAvailable",
                    f"minAvailable {need} leaves no pod to evict among the {total} replica(s) it "
                    f"selects ({what}): {fix}",
                )
            )
    return out


def _pdb_selects(pdb: dict[str, Any], labels: dict[str, str]) -> bool:
    """policy/v1 semantics: an empty selector selects every pod of the namespace, a missing one none."""
    selector = (pdb.get("spec") or {}).get("selector")
    if selector is None:
        return False
    if isinstance(selector, dict) and not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True
    return labelsel.matches(selector, labels)


# ------------------------------------------------------------------------------ results


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


@dataclass
class _Pdb:
    obj: dict[str, Any]
    source: str
    selected: list[_Pods] = field(default_factory=list)


class Auditor:
    """Audits objects one at a time; PodDisruptionBudgets are judged at ``finish()``, once every
    workload they may select has been seen.

    Each audited group is matched against the PDBs seen so far. So that a PDB coming later in the
    stream can be judged too, every group is also kept in a small index (~0.7 KB each); with
    ``pdbs_first`` (the cluster scan lists PDBs before anything else) no index is kept and memory
    stays flat however many objects stream through.
    """

    def __init__(
        self,
        policies: Sequence[Policy],
        *,
        zones: int = 3,
        diff: bool = False,
        username: str = "",
        groups: Sequence[str] = (),
        default_namespace: str = "",
        pdbs_first: bool = False,
    ):
        self.policies = list(policies)
        self.zones = max(zones, 1)
        self.diff = diff
        self.username = username
        self.groups = tuple(groups)
        self.default_namespace = default_namespace
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.skipped: Counter = Counter()  # reason -> count
        self.other_kinds: Counter = Counter()
        self.totals = Totals()
        self._covered: set[str] = set()  # uids of audited workloads (and their skipped children)
        self._index: dict[str, list[_Pods]] | None = None if pdbs_first else {}  # namespace -> groups
        self._pdbs: dict[str, list[_Pdb]] = {}  # namespace -> PDBs

    def namespace(self, obj: dict[str, Any]) -> None:
        """Remember a Namespace's labels (the team label feeds team tolerations)."""
        meta = obj.get("metadata") or {}
        labels = {k: str(v) for k, v in (meta.get("labels") or {}).items() if k != MODE_LABEL}
        self.namespace_labels[str(meta.get("name") or "")] = labels

    def audit(self, obj: dict[str, Any], source: str) -> Result | None:
        """The result for ``obj``, or None when it is not audited on its own (counted in ``skipped``)."""
        api_version, kind = str(obj.get("apiVersion") or ""), str(obj.get("kind") or "")
        group = api_version.split("/", 1)[0] if "/" in api_version else ""
        meta = obj.get("metadata") or {}
        if (group, kind) == ("", "Namespace"):
            self.namespace(obj)
            self.skipped["namespace (read for its labels)"] += 1
            return None
        if (group, kind) == ("policy", "PodDisruptionBudget"):
            pdb = _Pdb(obj, source)
            ns = ref_of(obj, self.default_namespace).namespace
            if self._index is not None:
                pdb.selected = [p for p in self._index.get(ns, []) if _pdb_selects(obj, p.labels)]
            self._pdbs.setdefault(ns, []).append(pdb)
            return None
        if workloads.kind_of(obj) is None:
            self.other_kinds[f"{kind}.{group}" if group else kind] += 1
            return None
        owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict)]
        if kind == "Pod" and any(o.get("kind") in workloads.POD_SKIP_OWNER_KINDS for o in owners):
            self.skipped["per-node pod (DaemonSet or static)"] += 1
            return None
        uid = str(meta.get("uid") or "")
        owner = next((o for o in owners if o.get("controller")), None)
        if owner is not None and owner.get("uid") and owner["uid"] in self._covered:
            if uid and kind != "Pod":
                self._covered.add(uid)
            self.skipped["owned by an audited workload"] += 1
            return None
        return self._evaluate(obj, source, kind, uid)

    def _evaluate(self, obj: dict[str, Any], source: str, kind: str, uid: str) -> Result:
        ref = ref_of(obj, self.default_namespace)
        ctx = Context(
            operation="CREATE",
            namespace=ref.namespace,
            username=self.username,
            groups=self.groups,
            namespace_labels=self.namespace_labels.get(ref.namespace, {}),
            force_mode="enforce",  # "what would enforce do", whatever mode the policies are deployed in
        )
        d = evaluate(obj, ctx, self.policies)
        mutated = d.mutated if d.mutated is not None else obj
        groups = workloads.groups_of(mutated)
        result = Result(
            resource=ref,
            source=source,
            allowed=d.allowed,
            violations=list(d.violations),
            advisories=list(d.advisories),
            warnings=[v.text() for v in d.advisories] + list(d.dryrun),
            notes=list(d.notes) + [f"exemption {e}" for e in getattr(d, "exemptions", [])],
            info=list(d.info),
            patch=d.patch,
            blast=blast_radius(mutated, self.zones, groups),
            policies=list(d.policies),
        )
        if self.diff:
            result.diff = unified_diff(obj, mutated, str(ref))
        if uid and kind != "Pod" and result.blast:
            self._covered.add(uid)
        for g in groups:
            if g.replicas:
                template = workloads.pod_template(mutated, g)
                labels = dict(podspec.pod_labels(template, g.selector)) if isinstance(template, dict) else {}
                pods = _Pods(labels, g.replicas, ref, g.name)
                for pdb in self._pdbs.get(ref.namespace, ()):
                    if _pdb_selects(pdb.obj, labels):
                        pdb.selected.append(pods)
                if self._index is not None:
                    self._index.setdefault(ref.namespace, []).append(pods)
        self.totals.add(result)
        return result

    def finish(self) -> list[Result]:
        """Results for the PodDisruptionBudgets seen, judged against every audited group they select."""
        out = []
        for pdb in (p for pdbs in self._pdbs.values() for p in pdbs):
            findings = pdb_findings(pdb.obj, pdb.selected)
            result = Result(
                ref_of(pdb.obj, self.default_namespace),
                pdb.source,
                advisories=findings,
                warnings=[v.text() for v in findings],
            )
            self.totals.add(result)
            out.append(result)
        self._pdbs = {}
        return out

    def summary(self, errors: Sequence[InputError] = (), notes: Sequence[str] = ()) -> dict[str, Any]:
        t = self.totals
        return {
            "resources": t.resources,
            "allowed": t.allowed,
            "denied": t.denied,
            "warned": t.warned,
            "atRisk": t.at_risk,
            "info": t.info,
            "violations": t.violations,
            "warnings": t.warnings,
            "patched": t.patched,
            "patchOperations": t.patch_ops,
            "byRule": dict(sorted(t.by_rule.items())),
            "skipped": {**dict(sorted(self.skipped.items())), "other kinds": dict(sorted(self.other_kinds.items()))},
            "errors": len(errors),
            "notes": list(notes),
        }


def exit_code(summary: dict[str, Any], fail_on: str) -> int:
    """2 when some input could not be read or listed, else 1 when ``fail_on`` findings exist, else 0."""
    if summary["errors"]:
        return 2
    if fail_on == "violations" and summary["violations"]:
        return 1
    if fail_on == "warnings" and (summary["violations"] or summary["warnings"]):
        return 1
    return 0


# ------------------------------------------------------------------------------ formats


class Writer:
    """A report format: ``add`` each result as it comes, ``error`` each input problem, then ``close``."""

    def __init__(self, out: TextIO, *, fail_on: str = "violations", color: bool = False, verbose: bool = False):
        self.out = out
        self.fail_on = fail_on
        self.color = color
        self.verbose = verbose
        self.errors: list[InputError] = []

    def add(self, r: Result) -> None:
        raise NotImplementedError

    def error(self, e: InputError) -> None:
        self.errors.append(e)

    def close(self, summary: dict[str, Any]) -> None:
        raise NotImplementedError


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


_COLORS = {"deny": "31", "warn": "33", "risk": "33", "pass": "32", "+": "32", "-": "31", "@": "36"}


class TableWriter(Writer):
    """One line per resource (``-v``: each finding and group below it), totals at the end."""

    HEADER = f"{'RESULT':<6} {'RESOURCE':<48} {'PATCH':>5}  FINDINGS / BLAST RADIUS (group one node failure hurts most)"

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self._header = False

    def _paint(self, text: str, key: str) -> str:
        code = _COLORS.get(key)
        return f"\033[{code}m{text}\033[0m" if self.color and code else text

    def _head(self) -> None:
        if not self._header:
            self.out.write(self.HEADER + "\n")
            self._header = True

    def add(self, r: Result) -> None:
        self._head()
        rules = sorted({v.rule for v in [*r.violations, *r.advisories]})
        details = []
        if rules:
            details.append(", ".join(rules))
        w = worst(r.blast)
        if w is not None:
            details.append(w.node_text())
        if r.info:
            details.append(_n(len(r.info), "note") + " (-v)" if not self.verbose else _n(len(r.info), "note"))
        if not r.policies and not rules and r.resource.kind != "PodDisruptionBudget":
            details.append("no policy matched")
        source = "" if r.source == "cluster" else f"  ({r.source})"
        status = self._paint(f"{r.status:<6}", r.status)
        self.out.write(f"{status} {str(r.resource):<48} {len(r.patch):>5}  {' | '.join(details)}{source}\n")
        if self.verbose:
            for v in r.violations:
                self.out.write(f"         deny   {v.text()}\n")
            for line in r.warnings:
                self.out.write(f"         warn   {line}\n")
            for line in r.info:
                self.out.write(f"         note   {line}\n")
            for line in r.notes:
                self.out.write(f"         add    {line}\n")
            for b in r.blast:
                self.out.write(f"         blast  {b.text()} [{b.node_reason}; {b.zone_reason}]\n")
        if r.diff:
            for line in r.diff.splitlines():
                self.out.write(self._paint(line, line[:1] if line[:3] not in ("---", "+++") else "") + "\n")

    def close(self, summary: dict[str, Any]) -> None:
        self._head()
        s = summary
        self.out.write(
            f"\n{_n(s['resources'], 'resource')}: {s['allowed'] - s['warned'] - s['atRisk']} pass, "
            f"{s['atRisk']} risk, {s['warned']} warn, {s['denied']} deny; {_n(s['violations'], 'violation')}, "
            f"{_n(s['warnings'], 'warning')}, {_n(s['info'], 'note')}; "
            f"{_n(s['patchOperations'], 'patch operation')} on {_n(s['patched'], 'resource')}\n"
        )
        if s["byRule"]:
            self.out.write("by rule: " + ", ".join(f"{k} {v}" for k, v in s["byRule"].items()) + "\n")
        skipped = {k: v for k, v in s["skipped"].items() if k != "other kinds"}
        others = s["skipped"]["other kinds"]
        if skipped or others:
            parts = [f"{v} {k}" for k, v in skipped.items()]
            if others:
                parts.append(
                    f"{sum(others.values())} of kinds spreadguard does not act on "
                    f"({', '.join(f'{k} {v}' for k, v in others.items())})"
                )
            self.out.write("not audited: " + "; ".join(parts) + "\n")
        for note in s["notes"]:
            self.out.write(f"note: {note}\n")
        if s["errors"]:
            self.out.write(f"{_n(s['errors'], 'input error')} (listed on stderr); the rest was audited\n")


class JsonWriter(Writer):
    """``{"results": [...], "summary": {...}, "errors": [...]}``, results streamed as they come."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self._n = 0

    def add(self, r: Result) -> None:
        self.out.write(('{"results": [\n' if self._n == 0 else ",\n") + json.dumps(r.to_json()))
        self._n += 1

    def close(self, summary: dict[str, Any]) -> None:
        self.out.write('{"results": [' if self._n == 0 else "\n")
        errors = [{"source": e.source, "message": e.message} for e in self.errors]
        self.out.write(f'], "summary": {json.dumps(summary)}, "errors": {json.dumps(errors)}}}\n')


def _now() -> dict[str, int]:
    return {"seconds": int(time.time()), "nanos": 0}


class PolicyReportWriter(Writer):
    """wgpolicyk8s.io/v1alpha2: a ``PolicyReport`` per namespace, a ``ClusterPolicyReport`` for
    cluster-scoped resources and for the audit's own errors and notes. YAML documents, ready for
    ``kubectl apply -f -`` (objects without a namespace: a PolicyReport without one)."""

    API_VERSION = "wgpolicyk8s.io/v1alpha2"

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self._by_ns: dict[str | None, list[dict[str, Any]]] = {}
        self._ts = _now()

    def _result(
        self, r: Result, policy: str, rule: str | None, outcome: str, message: str, **props: str
    ) -> dict[str, Any]:
        ref: dict[str, str] = {"apiVersion": r.resource.api_version, "kind": r.resource.kind, "name": r.resource.name}
        if r.resource.namespace:
            ref["namespace"] = r.resource.namespace
        if r.resource.uid:
            ref["uid"] = r.resource.uid
        properties = {"source": r.source, **props}
        if r.blast:
            properties["blastRadius"] = "; ".join(b.text() for b in r.blast)
        if r.patch:
            properties["patchOperations"] = str(len(r.patch))
        out: dict[str, Any] = {"policy": policy}
        if rule:
            out["rule"] = rule
        out.update(
            {
                "result": outcome,
                "scored": True,
                "severity": {"fail": "high", "warn": "medium"}.get(outcome, "low"),
                "category": "High availability",
                "source": "spreadguard",
                "message": message,
                "resources": [ref],
                "properties": properties,
                "timestamp": self._ts,
            }
        )
        return out

    def add(self, r: Result) -> None:
        items = [self._result(r, v.policy, v.rule, "fail", f"{v.path}: {v.message}", path=v.path) for v in r.violations]
        items += [
            self._result(r, v.policy, v.rule, "warn", f"{v.path}: {v.message}", path=v.path) for v in r.advisories
        ]
        if not items:
            for policy in r.policies or ([AUDIT_POLICY] if r.resource.kind == "PodDisruptionBudget" else []):
                items.append(self._result(r, policy.split(" ")[0], None, "pass", "no violations"))
        if items:
            # every supported kind is namespaced; "" (a manifest without one) gets a report without one
            self._by_ns.setdefault(r.resource.namespace, []).extend(items)

    def _report(self, kind: str, namespace: str | None, results: list[dict[str, Any]]) -> dict[str, Any]:
        summary = Counter(x["result"] for x in results)
        meta: dict[str, Any] = {"name": "spreadguard-audit", "labels": {"app.kubernetes.io/managed-by": "spreadguard"}}
        if namespace:
            meta["namespace"] = namespace
        return {
            "apiVersion": self.API_VERSION,
            "kind": kind,
            "metadata": meta,
            "summary": {k: summary.get(k, 0) for k in ("pass", "fail", "warn", "error", "skip")},
            "results": results,
        }

    def close(self, summary: dict[str, Any]) -> None:
        by_ns = sorted(self._by_ns.items(), key=lambda x: x[0] or "")
        reports = [self._report("PolicyReport", ns, res) for ns, res in by_ns]
        cluster = [
            {
                "policy": AUDIT_POLICY,
                "rule": "input",
                "result": "error",
                "source": "spreadguard",
                "message": e.text(),
                "timestamp": self._ts,
                "properties": {"source": e.source},
            }
            for e in self.errors
        ]
        cluster += [
            {
                "policy": AUDIT_POLICY,
                "rule": "coverage",
                "result": "skip",
                "source": "spreadguard",
                "message": note,
                "timestamp": self._ts,
            }
            for note in summary["notes"]
        ]
        if cluster:
            reports.append(self._report("ClusterPolicyReport", None, cluster))
        self.out.write(yamlio.dump_all(reports) if reports else "")


class JunitWriter(Writer):
    """JUnit XML: one testcase per resource, a ``<failure>`` per violation (and per warning with
    ``--fail-on warnings``), an ``<error>`` testcase per input error."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self._cases: list[ET.Element] = []
        self._failures = 0

    def add(self, r: Result) -> None:
        case = ET.Element(
            "testcase",
            classname=f"{r.resource.namespace or '-'}.{r.resource.kind}",
            name=str(r.resource),
            file=r.source,
        )
        failing = [(v.rule, v.text()) for v in r.violations]
        if self.fail_on == "warnings":
            failing += [(f"warning:{v.rule}", v.text()) for v in r.advisories]
        for rule, text in failing:
            ET.SubElement(case, "failure", type=rule, message=text[:200]).text = text
        self._failures += bool(failing)
        out = [f"warning: {w}" for w in r.warnings] + [f"note: {i}" for i in r.info] + [f"adds: {n}" for n in r.notes]
        out += [f"blast radius: {b.text()}" for b in r.blast]
        if out:
            ET.SubElement(case, "system-out").text = "\n".join(out)
        self._cases.append(case)

    def close(self, summary: dict[str, Any]) -> None:
        for e in self.errors:
            case = ET.Element("testcase", classname="input", name=e.source)
            ET.SubElement(case, "error", type="input", message=e.message).text = e.text()
            self._cases.append(case)
        counts = {"tests": str(len(self._cases)), "failures": str(self._failures), "errors": str(len(self.errors))}
        root = ET.Element("testsuites", {"name": "spreadguard audit", **counts})
        suite = ET.SubElement(
            root,
            "testsuite",
            {"name": "spreadguard audit", "skipped": "0", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), **counts},
        )
        suite.extend(self._cases)
        ET.indent(root)
        self.out.write('<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")


WRITERS: dict[str, type[Writer]] = {
    "table": TableWriter,
    "json": JsonWriter,
    "policyreport": PolicyReportWriter,
    "junit": JunitWriter,
}
