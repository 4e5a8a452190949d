"""Blast radius: how much of one group a single node (and a single zone) can hold, as the template stands."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from webhook.engine import podspec, workloads

ZONE_KEYS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")


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
    host = podspec.pinned_value(spec, podspec.HOSTNAME)
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
        zone = podspec.pinned_value(spec, key)
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
