"""``spreadguard audit``: what enforce would change or reject, over manifests or a live cluster.

The engine (``webhook.engine.evaluate``) decides, with every policy's mode forced to ``enforce``; the
``Auditor`` adds the audit-only parts (blast radius per group, PodDisruptionBudgets that block every
eviction). Objects stream through ``Auditor.audit`` one at a time; nothing keeps them after their result
is written. Reading manifests is in ``manifests``, the report formats in ``report``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.audit.blast import blast_radius
from webhook.audit.pdb import GroupPods, pdb_findings, selects
from webhook.audit.placement import Placement
from webhook.audit.results import InputError, Result, Totals, ref_of, unified_diff
from webhook.engine import podspec, workloads
from webhook.engine.decide import evaluate
from webhook.engine.policy import Policy
from webhook.engine.target import Context

MODE_LABEL = "spreadguard.io/mode"
FAIL_ON = ("violations", "warnings", "never")


@dataclass
class _Pdb:
    obj: dict[str, Any]
    source: str
    selected: list[GroupPods] = field(default_factory=list)


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
        placement: Placement | None = None,
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
        self._index: dict[str, list[GroupPods]] | None = None if pdbs_first else {}  # namespace -> groups
        self._pdbs: dict[str, list[_Pdb]] = {}  # namespace -> PDBs
        self.placement = placement  # cluster mode: where pods actually run
        if placement is not None:
            placement.namespace_labels = self.namespace_labels

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
        if self.placement is not None:
            self.placement.owner(obj)
        if (group, kind) == ("", "Namespace"):
            self.namespace(obj)
            self.skipped["namespace (read for its labels)"] += 1
            return None
        if (group, kind) == ("policy", "PodDisruptionBudget"):
            pdb = _Pdb(obj, source)
            ns = ref_of(obj, self.default_namespace).namespace
            if self._index is not None:
                pdb.selected = [p for p in self._index.get(ns, []) if selects(obj, p.labels)]
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
        owners = (obj.get("metadata") or {}).get("ownerReferences") or []
        owned = any(isinstance(o, dict) and o.get("controller") for o in owners)
        if self.placement is not None and not (kind == "Pod" and owned):  # a lone Pod too: its own group
            self.placement.workload(uid, ref, groups, result.blast)
        for g in groups:
            if g.replicas:
                template = workloads.pod_template(mutated, g)
                labels = dict(podspec.pod_labels(template, g.selector)) if isinstance(template, dict) else {}
                pods = GroupPods(labels, g.replicas, ref, g.name)
                for pdb in self._pdbs.get(ref.namespace, ()):
                    if selects(pdb.obj, labels):
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
