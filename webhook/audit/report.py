"""The report formats: table, JSON, PolicyReport (wgpolicyk8s.io/v1alpha2) and JUnit, streamed per result."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any, TextIO
from xml.etree import ElementTree as ET

from webhook.audit.blast import worst
from webhook.audit.pdb import AUDIT_POLICY
from webhook.audit.placement import PlacementReport
from webhook.audit.results import InputError, Result
from webhook.engine import yamlio

DEFAULT_TOP = 10  # failure domains listed in the table (all of them in JSON)


class Writer:
    """A report format: ``add`` each result as it comes, ``error`` each input problem, then ``close``."""

    def __init__(self, out: TextIO, *, fail_on: str = "violations", color: bool = False, verbose: bool = False):
        self.out = out
        self.fail_on = fail_on
        self.color = color
        self.verbose = verbose
        self.errors: list[InputError] = []
        self.actual: PlacementReport | None = None  # cluster mode: where pods run now
        self.top = DEFAULT_TOP

    def add(self, r: Result) -> None:
        raise NotImplementedError

    def placement(self, report: PlacementReport, top: int = DEFAULT_TOP) -> None:
        """The actual placement (cluster mode), written by ``close`` beside the results, never mixed in them."""
        self.actual, self.top = report, top

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
        if self.actual is not None:
            self._placement(self.actual)
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

    def _placement(self, p: PlacementReport) -> None:
        w = self.out.write
        w(
            f"\nACTUAL PLACEMENT: {_n(p.group_count, 'group')} from where their pods run now "
            '("after enforcement": what the audited workload would give once spreadguard\'s patch applies)\n'
        )
        for g in p.groups():
            w(f"  {g['text']}\n")
            if g["wouldBe"]:
                w(f"      after enforcement: {g['wouldBe']['text']}\n")
            for m in g["pendingMessages"]:
                w(f"      pending ({m['pods']}): {m['message']}\n")
            for d in g["drift"]:
                w(f"      drift: {d}\n")
        for what in ("node", "zone"):
            total = p.domain_count(what)
            if not total:
                continue
            shown = min(total, self.top)
            w(f"\nIF A {what.upper()} FAILS ({shown} of {total}, most harmful first; all in -o json)\n")
            for d in p.domains(what, self.top):
                hurt = ", ".join(
                    f"{h['workload']} {h['group']} "
                    + ("stops" if h["placement"] in ("gang", "singleton") else f"-{h['pods']}/{h['of']}")
                    + f" ({h['lossPercent']:g}%)"
                    for h in d["groups"][:5]
                )
                more = f", +{len(d['groups']) - 5} more" if len(d["groups"]) > 5 else ""
                w(f"  {d[what]:<24} {d['groupsStopped']} stopped, {d['groupsHurt']} hurt: {hurt}{more}\n")


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
        self.out.write(f'], "summary": {json.dumps(summary)}, "errors": {json.dumps(errors)}')
        if self.actual is not None:  # streamed, one group / node / zone at a time
            p = self.actual
            self.out.write(f', "placement": {json.dumps(p.header())[:-1]}, "groups": [')
            for i, g in enumerate(p.groups()):
                self.out.write((",\n" if i else "\n") + json.dumps(g))
            for key, what in (("ifNodeFails", "node"), ("ifZoneFails", "zone")):
                self.out.write(f'], "{key}": [')
                for i, d in enumerate(p.domains(what)):
                    self.out.write((",\n" if i else "\n") + json.dumps(d))
            self.out.write("]}")
        self.out.write("}\n")


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

    def _placement_result(self, g: dict[str, Any]) -> dict[str, Any]:
        """One group's actual placement: ``warn`` with drift, else ``pass``; the figures as properties."""
        ref = {k: v for k, v in g["resource"].items() if v}
        props = {
            "group": g["group"],
            "placement": g["placement"],
            "running": str(g["running"]),
            "pending": str(g["pending"]),
            "nodes": str(g["nodes"]),
            "zones": str(g["zones"]),
            "podsPerNode": json.dumps(g["podsPerNode"]),
            "podsPerZone": json.dumps(g["podsPerZone"]),
            "nodeFailureLossPercent": f"{g['nodeFailureLossPercent']:g}",
            "zoneFailureLossPercent": f"{g['zoneFailureLossPercent']:g}",
        }
        if g.get("gang"):
            props["gangNodes"] = str(len(g["gang"]["nodes"]))
            props["gangZones"] = str(len(g["gang"]["zones"]))
            props["expectedRestartsPer30Days"] = f"{g['gang']['expectedRestartsPer30Days']:g}"
        if g["wouldBe"]:
            props["afterEnforcement"] = g["wouldBe"]["text"]
        if g["drift"]:
            props["drift"] = "; ".join(g["drift"])
        outcome = "warn" if g["drift"] else "pass"
        return {
            "policy": AUDIT_POLICY,
            "rule": "actual-placement",
            "result": outcome,
            "scored": True,
            "severity": "medium" if g["drift"] else "low",
            "category": "High availability",
            "source": "spreadguard",
            "message": g["text"],
            "resources": [ref],
            "properties": props,
            "timestamp": self._ts,
        }

    def close(self, summary: dict[str, Any]) -> None:
        for g in self.actual.groups() if self.actual is not None else []:
            self._by_ns.setdefault(g["namespace"], []).append(self._placement_result(g))
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
        if self.actual is not None:  # a suite of its own: the results' counts stay what they were
            cases = []
            for g in self.actual.groups():
                case = ET.Element(
                    "testcase", classname=f"placement.{g['namespace'] or '-'}", name=g["workload"] + " " + g["group"]
                )
                lines = [g["text"]]
                if g["wouldBe"]:
                    lines.append(f"after enforcement: {g['wouldBe']['text']}")
                lines += [f"drift: {d}" for d in g["drift"]]
                ET.SubElement(case, "system-out").text = "\n".join(lines)
                cases.append(case)
            placed = ET.SubElement(
                root,
                "testsuite",
                {
                    "name": "spreadguard actual placement",
                    "tests": str(len(cases)),
                    "failures": "0",
                    "errors": "0",
                    "skipped": "0",
                },
            )
            placed.extend(cases)
        ET.indent(root)
        self.out.write('<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")


WRITERS: dict[str, type[Writer]] = {
    "table": TableWriter,
    "json": JsonWriter,
    "policyreport": PolicyReportWriter,
    "junit": JunitWriter,
}
