"""Actual placement: what a node (or zone) failure costs each group, from where its pods run now.

The blast radius in ``blast`` describes a workload *after* the patch spreadguard would add; this module
measures the cluster *as it is*. In cluster mode the scan feeds it every Node and every Pod, page by page:

- a Pod is attached to its group with the same table and labels the webhook uses: its controller chain
  (ownerReferences, resolved through the workloads the scan listed first) picks the workload, and
  ``workloads.pod_group`` (controller labels) picks the group inside it; the workload's group gives the
  placement class (replicas | elastic | gang | singleton) and the would-be blast radius;
- per group only counters are kept (pods per node, pending pods, up to ``MESSAGES`` scheduler messages,
  pods on tainted nodes), never a Pod: memory grows with the (group, node) pairs in use, not with pods;
- ``report()`` turns them into figures: pods per node and zone, the share one node (zone) failure takes,
  for gangs the nodes and zones they depend on and the restarts to expect, the damage each node's (zone's)
  failure would do, and drift (spread the pods carry but do not have; pods on health- or foreign-team-
  tainted nodes).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.audit.blast import ZONE_KEYS, Blast
from webhook.audit.results import Ref
from webhook.engine import podspec, workloads
from webhook.engine.policy import Policy

DEFAULT_FAILURE_RATE = 19.0  # node remediations per 1000 nodes per day (design.md)
DAYS = 30
MESSAGES = 3  # distinct scheduler messages kept per group
MESSAGE_CHARS = 300
NO_ZONE = "(no zone)"
UNKNOWN_NODE = "(node not listed)"
STOPS = (workloads.GANG, workloads.SINGLETON)  # classes one lost pod stops entirely


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def _s(value: Any) -> str:
    return sys.intern(str(value))


@dataclass(frozen=True, slots=True)
class NodeFacts:
    zone: str
    health: tuple[str, ...]  # health taint keys it carries
    team: str | None  # the value of its team taint


@dataclass(frozen=True)
class Planned:
    """A group of an audited workload: what the auditor knows of it (class, size, blast after enforcement)."""

    ref: Ref
    group: str
    replicas: int | None
    placement: str
    would_be: Blast | None


@dataclass(frozen=True, slots=True)
class Spread:
    """The self-selecting spread a group's pods carry (read from its first pod; one shared copy of each)."""

    host_required: bool = False
    host_preferred: bool = False
    host_skew: int | None = None  # topology spread on the hostname (any whenUnsatisfiable)
    zone_skew: int | None = None


@dataclass(slots=True)
class GroupPods:
    """Counters of one group's pods (the rarely used ones are created when first needed)."""

    namespace: str
    workload: str  # "PyTorchJob ml/bert", or the pod's own owner when its controller is not known
    workload_key: str  # the gang a gang group belongs to
    group: str
    placement: str
    known: bool  # the controller is a workload spreadguard audited
    planned: Planned | None
    ref: Ref
    per_node: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    messages: dict[str, int] | None = None  # scheduler message -> pending pods
    health: dict[str, int] | None = None  # node -> pods on it that carry a health taint
    foreign: dict[str, int] | None = None  # node -> pods on another team's node
    spread: Spread | None = None

    @property
    def running(self) -> int:
        return sum(self.per_node.values())


def spread_of(pod: dict[str, Any]) -> Spread:
    """The spread constraints of ``pod`` that select its own group."""
    spec = podspec.spec_of(pod)
    labels = (pod.get("metadata") or {}).get("labels") or {}
    host = {
        required: any(
            t.get("topologyKey") == podspec.HOSTNAME and podspec.term_selects(t, labels)
            for t in podspec.pod_affinity_terms(spec, "podAntiAffinity", required)
        )
        for required in (True, False)
    }
    skews: dict[str, int] = {}
    for c in spec.get("topologySpreadConstraints") or []:
        if not isinstance(c, dict) or not podspec.term_selects(c, labels):
            continue
        raw = c.get("maxSkew")
        skew = raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1 else 1
        key = (
            "host" if c.get("topologyKey") == podspec.HOSTNAME else "zone" if c.get("topologyKey") in ZONE_KEYS else ""
        )
        if key:
            skews[key] = min(skews.get(key, skew), skew)
    return Spread(host[True], host[False], skews.get("host"), skews.get("zone"))


def _scheduler_message(pod: dict[str, Any]) -> str:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            text = " ".join(str(cond.get("message") or cond.get("reason") or "").split())
            return text[:MESSAGE_CHARS]
    return ""


class Placement:
    """Collects nodes, the audited workloads' groups, the controller chain and pods; ``report()`` at the end."""

    def __init__(
        self,
        policies: Sequence[Policy] = (),
        *,
        failure_rate: float = DEFAULT_FAILURE_RATE,
        namespace_labels: dict[str, dict[str, str]] | None = None,
    ):
        self.failure_rate = failure_rate
        self.nodes: dict[str, NodeFacts] = {}
        self.owners: dict[str, tuple[str, str, str, str]] = {}  # uid -> (kind, name, controller uid or "", namespace)
        self.planned: dict[str, dict[str, Planned]] = {}  # workload uid -> lower-case group name -> group
        self.groups: dict[tuple[str, ...], GroupPods] = {}
        self.skipped: Counter = Counter()
        self.namespace_labels = namespace_labels if namespace_labels is not None else {}
        self.health_keys = {k for p in policies if p.spec.mutate.health for k in p.spec.mutate.health.avoidTaints}
        teams = [p.spec.mutate.teamTolerations for p in policies if p.spec.mutate.teamTolerations]
        self.team_keys = {t.taintKey for t in teams if t.enabled} or {workloads.TEAM_LABEL}
        self.namespace_teams: dict[str, str] = {}
        for t in teams:
            for ns, team in t.namespaceTeams.items():
                self.namespace_teams.setdefault(ns, team)
        self._facts: dict[NodeFacts, NodeFacts] = {}
        self._spreads: dict[Spread, Spread] = {}

    # ------------------------------------------------------------------------------------------- feeding

    def node(self, obj: dict[str, Any]) -> None:
        """One Node: its zone, health taints and team taint (shared records: nodes of a pool share one)."""
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        labels = meta.get("labels") or {}
        zone = next((str(labels[k]) for k in ZONE_KEYS if labels.get(k)), NO_ZONE)
        taints = [t for t in (obj.get("spec") or {}).get("taints") or [] if isinstance(t, dict)]
        health = tuple(sorted({str(t.get("key")) for t in taints if t.get("key") in self.health_keys}))
        team = next((str(t.get("value") or "") for t in taints if t.get("key") in self.team_keys), None)
        facts = NodeFacts(_s(zone), health, _s(team) if team is not None else None)
        self.nodes[_s(name)] = self._facts.setdefault(facts, facts)

    def owner(self, obj: dict[str, Any]) -> None:
        """Any listed object: remember its controller (to resolve a pod's chain up to its workload)."""
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if not uid or obj.get("kind") == "Pod":
            return
        ctrl = next((o for o in meta.get("ownerReferences") or [] if isinstance(o, dict) and o.get("controller")), None)
        self.owners[str(uid)] = (
            str(obj.get("kind") or ""),
            str(meta.get("name") or ""),
            str((ctrl or {}).get("uid") or ""),
            str(meta.get("namespace") or ""),
        )

    def workload(self, uid: str, ref: Ref, groups: Iterable[workloads.Group], blasts: Sequence[Blast]) -> None:
        """An audited workload's groups (from the object after enforcement): class, size, would-be blast."""
        if not uid:
            return
        by_name = {b.group: b for b in blasts}
        self.planned[uid] = {
            g.name.lower(): Planned(ref, g.name, g.replicas, g.placement, by_name.get(g.name)) for g in groups
        }

    def pod(self, pod: dict[str, Any]) -> None:
        """One Pod: counted on its node (or as pending) in its group."""
        meta = pod.get("metadata") or {}
        owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict)]
        if any(o.get("kind") in workloads.POD_SKIP_OWNER_KINDS for o in owners):
            self.skipped["per-node pod (DaemonSet or static)"] += 1
            return
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            self.skipped["finished pod"] += 1
            return
        namespace = str(meta.get("namespace") or "")
        group = self._group_of(pod, namespace, owners)
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            group.pending += 1
            message = _scheduler_message(pod)
            if message:
                messages = group.messages = group.messages or {}
                if message in messages or len(messages) < MESSAGES:
                    messages[message] = messages.get(message, 0) + 1
            return
        node = _s(node)
        group.per_node[node] = group.per_node.get(node, 0) + 1
        if group.spread is None:
            spread = spread_of(pod)
            group.spread = self._spreads.setdefault(spread, spread)
        facts = self.nodes.get(node)
        if facts is not None:
            if facts.health:
                health = group.health = group.health or {}
                health[node] = health.get(node, 0) + 1
            if facts.team is not None and facts.team != self._team(namespace):
                foreign = group.foreign = group.foreign or {}
                foreign[node] = foreign.get(node, 0) + 1

    def _team(self, namespace: str) -> str | None:
        return self.namespace_teams.get(namespace) or self.namespace_labels.get(namespace, {}).get(workloads.TEAM_LABEL)

    def _chain(self, uid: str, namespace: str) -> list[str]:
        """The controllers above a pod, nearest first. An owner must be in the pod's namespace (the API's
        garbage collector ignores cross-namespace owners, so a pod claiming one is not part of that group);
        a cycle or a chain longer than 8 stops the walk."""
        chain: list[str] = []
        while uid and uid in self.owners and uid not in chain and len(chain) < 8:
            if self.owners[uid][3] != namespace:
                break
            chain.append(uid)
            uid = self.owners[uid][2]
        return chain

    def _group_of(self, pod: dict[str, Any], namespace: str, owners: list[dict[str, Any]]) -> GroupPods:
        meta = pod.get("metadata") or {}
        ctrl = next((o for o in owners if o.get("controller")), None)
        found = workloads.pod_group(pod)
        name = found.name if found else "pods"
        chain = self._chain(str((ctrl or {}).get("uid") or ""), namespace)
        planned: Planned | None = None
        for uid in reversed(chain):  # the outermost workload that spreadguard audited and that has this group
            groups = self.planned.get(uid) or {}
            if name.lower() in groups:
                planned = groups[name.lower()]
            elif len(groups) == 1:  # one group (Deployment, Job, ...): its pods are named after the controller
                planned = next(iter(groups.values()))
            if planned is not None:
                break
        if planned is not None:
            ref = planned.ref
            key: tuple[str, ...] = ("w", ref.namespace, ref.kind, ref.name, planned.group)
            workload, group, placement = str(ref), planned.group, planned.placement
        elif ctrl is not None:  # a controller spreadguard does not know (or did not list)
            top = self.owners.get(chain[-1]) if chain else None
            kind, owner = (top[0], top[1]) if top else (str(ctrl.get("kind") or ""), str(ctrl.get("name") or ""))
            ref = Ref(str(ctrl.get("apiVersion") or ""), kind, namespace, owner)
            key = ("c", namespace, kind, owner, name)
            workload, group = f"{ref} (controller not known to spreadguard)", name
            placement = found.placement if found else workloads.REPLICAS
        else:  # a Pod of its own
            pod_name = str(meta.get("name") or meta.get("generateName") or "")
            ref = Ref("v1", "Pod", namespace, pod_name, str(meta.get("uid") or ""))
            own = self.planned.pop(ref.uid, None) if ref.uid else None  # audited as itself: its would-be view
            if found is not None:  # labelled as part of a group (e.g. spreadguard.io/group)
                key, group, placement = ("l", namespace, name), name, found.placement
                workload = f"pods of group {name} in {namespace}"
            else:
                key, group, placement = ("p", namespace, pod_name), "pod", workloads.SINGLETON
                workload = str(ref)
                planned = next(iter(own.values()), None) if own else None
        got = self.groups.get(key)
        if got is None:
            workload_key = "/".join(key[:4])
            known = planned is not None and ctrl is not None
            got = GroupPods(namespace, workload, workload_key, group, placement, known, planned, ref)
            self.groups[key] = got
        return got

    # ------------------------------------------------------------------------------------------- figures

    def zone(self, node: str) -> str:
        facts = self.nodes.get(node)
        return facts.zone if facts else UNKNOWN_NODE

    def restarts(self, nodes: int) -> float:
        """Expected failures among ``nodes`` nodes in ``DAYS`` days: each one restarts a gang."""
        return round(nodes * self.failure_rate * DAYS / 1000, 2)

    def report(self) -> PlacementReport:
        """The figures, computed as they are read (``PlacementReport``): no copy of every group's figures."""
        return PlacementReport(self)

    def _figures(self, g: GroupPods, gangs: dict[str, set[str]], zones_all: list[str]) -> dict[str, Any]:
        running = g.running
        per_zone: Counter = Counter()
        for node, count in g.per_node.items():
            per_zone[self.zone(node)] += count
        top_node, top_node_pods = max(g.per_node.items(), key=lambda kv: (kv[1], kv[0]), default=("", 0))
        top_zone, top_zone_pods = max(per_zone.items(), key=lambda kv: (kv[1], kv[0]), default=("", 0))
        stops = g.placement in STOPS
        out: dict[str, Any] = {
            "namespace": g.namespace,
            "workload": g.workload,
            "resource": g.ref.to_json(),
            "group": g.group,
            "placement": g.placement,
            "controllerKnown": g.known,
            "running": running,
            "pending": g.pending,
            "pendingMessages": [
                {"message": m, "pods": n} for m, n in sorted((g.messages or {}).items(), key=lambda kv: -kv[1])
            ],
            "podsPerNode": dict(sorted(g.per_node.items(), key=lambda kv: (-kv[1], kv[0]))),
            "podsPerZone": dict(sorted(per_zone.items(), key=lambda kv: (-kv[1], kv[0]))),
            "nodes": len(g.per_node),
            "zones": len(per_zone),
            "worstNode": top_node or None,
            "worstNodePods": top_node_pods,
            "nodeFailureLossPercent": 100.0 if stops and running else _pct(top_node_pods, running),
            "worstZone": top_zone or None,
            "worstZonePods": top_zone_pods,
            "zoneFailureLossPercent": 100.0 if stops and running else _pct(top_zone_pods, running),
        }
        if g.placement == workloads.GANG:
            gang_nodes = gangs.get(g.workload_key, set())
            gang_zones = sorted({self.zone(n) for n in gang_nodes})
            out["gang"] = {
                "workload": g.workload,
                "nodes": sorted(gang_nodes),
                "zones": gang_zones,
                "expectedRestartsPer30Days": self.restarts(len(gang_nodes)),
            }
        out["drift"] = self._drift(g, per_zone, zones_all)
        out["wouldBe"] = g.planned.would_be.to_json() if g.planned and g.planned.would_be else None
        out["text"] = actual_text(out, self.failure_rate)
        return out

    def _drift(self, g: GroupPods, per_zone: Counter, zones_all: list[str]) -> list[str]:
        out: list[str] = []
        s = g.spread
        top = max(g.per_node.values(), default=0)
        crowded = sorted((n for n, c in g.per_node.items() if c == top), key=str)[:3]
        where = f"{crowded[0]} holds {top} pods" if len(crowded) == 1 else f"{', '.join(crowded)} hold {top} pods each"
        if s is not None and top > 1:
            if s.host_required:
                out.append(f"required anti-affinity on kubernetes.io/hostname not held: {where}")
            elif s.host_skew is not None and top > s.host_skew:
                out.append(f"topology spread on kubernetes.io/hostname (maxSkew {s.host_skew}) not achieved: {where}")
            elif s.host_preferred:
                out.append(f"preferred anti-affinity on kubernetes.io/hostname not achieved: {where}")
        if s is not None and s.zone_skew is not None and per_zone and len(zones_all) > 1:
            counts = [per_zone.get(z, 0) for z in zones_all]
            if max(counts) - min(counts) > s.zone_skew:
                out.append(
                    f"zone spread (maxSkew {s.zone_skew}) not achieved: "
                    + ", ".join(f"{z} {per_zone.get(z, 0)}" for z in zones_all)
                )
        if g.health:
            nodes = ", ".join(f"{n} ({', '.join(self.nodes[n].health)})" for n in sorted(g.health)[:5])
            out.append(f"{sum(g.health.values())} pod(s) on nodes with a health taint: {nodes}")
        if g.foreign:
            team = self._team(g.namespace) or "none"
            nodes = ", ".join(f"{n} (team {self.nodes[n].team})" for n in sorted(g.foreign)[:5])
            out.append(f"{sum(g.foreign.values())} pod(s) on another team's nodes (namespace team: {team}): {nodes}")
        return out


def _hurt(g: GroupPods, pods: int) -> dict[str, Any]:
    running = g.running
    stops = g.placement in STOPS
    return {
        "workload": g.workload,
        "group": g.group,
        "placement": g.placement,
        "pods": pods,
        "of": running,
        "lossPercent": 100.0 if stops else _pct(pods, running),
        "stops": stops or pods == running,
    }


def actual_text(f: dict[str, Any], rate: float) -> str:
    """One line of a group's actual figures."""
    head = f"{f['workload']} {f['group']} [{f['placement']}]: {f['running']} running"
    if f["pending"]:
        head += f", {f['pending']} pending"
    if not f["running"]:
        return head
    if f["placement"] == workloads.GANG and "gang" in f:
        gang = f["gang"]
        return (
            f"{head} on {f['nodes']} node(s); the gang depends on {len(gang['nodes'])} node(s) in "
            f"{len(gang['zones'])} zone(s): any one failing restarts it, "
            f"~{gang['expectedRestartsPer30Days']:g} restarts per 30 days at {rate:g} failures/1000 nodes/day"
        )
    if f["placement"] == workloads.SINGLETON:
        return f"{head} on {f['worstNode']}: its failure stops the job"
    return (
        f"{head} on {f['nodes']} node(s): losing {f['worstNode']} takes {f['worstNodePods']} of {f['running']} "
        f"({f['nodeFailureLossPercent']:g}%); losing zone {f['worstZone']} takes {f['worstZonePods']} "
        f"({f['zoneFailureLossPercent']:g}%)"
    )


class PlacementReport:
    """The figures of a ``Placement``, produced one group / node / zone at a time as a writer reads them.

    Held: the order of the groups, and per failure domain its harm and the (group, pods) pairs it holds
    (small tuples over the groups' own records): no dict per figure until it is read.
    """

    def __init__(self, placement: Placement):
        self._p = placement
        self.failure_rate = placement.failure_rate
        self.node_count = len(placement.nodes)
        self.skipped = dict(placement.skipped)
        self._groups = list(placement.groups.values())
        self._zones_all = sorted({f.zone for f in placement.nodes.values()})
        self._gangs: dict[str, set[str]] = {}
        by: dict[str, dict[str, list[tuple[int, int]]]] = {"node": {}, "zone": {}}
        loss: list[float] = []
        for i, g in enumerate(self._groups):
            if g.placement == workloads.GANG:
                self._gangs.setdefault(g.workload_key, set()).update(g.per_node)
            per_zone: dict[str, int] = {}
            for node, count in g.per_node.items():
                by["node"].setdefault(node, []).append((i, count))
                zone = placement.zone(node)
                per_zone[zone] = per_zone.get(zone, 0) + count
            for zone, count in per_zone.items():
                by["zone"].setdefault(zone, []).append((i, count))
            running = g.running
            top = max(g.per_node.values(), default=0)
            loss.append(100.0 if g.placement in STOPS and running else _pct(top, running))
        self._order = sorted(
            range(len(self._groups)), key=lambda i: (-loss[i], self._groups[i].workload, self._groups[i].group)
        )
        self._domains = {what: self._rank(pairs) for what, pairs in by.items()}

    def _rank(self, pairs: dict[str, list[tuple[int, int]]]) -> list[tuple[str, list[tuple[int, int]]]]:
        """Failure domains by the harm their failure does: groups stopped, then the shares lost, then pods."""

        def harm(item: tuple[str, list[tuple[int, int]]]) -> tuple[int, float, int, str]:
            hurt = [_hurt(self._groups[i], pods) for i, pods in item[1]]
            return (
                -sum(1 for h in hurt if h["stops"]),
                -round(sum(h["lossPercent"] for h in hurt), 1),
                -sum(h["pods"] for h in hurt),
                item[0],
            )

        return sorted(pairs.items(), key=harm)

    @property
    def group_count(self) -> int:
        return len(self._groups)

    def domain_count(self, what: str) -> int:
        return len(self._domains[what])

    def groups(self) -> Iterator[dict[str, Any]]:
        """Every group's figures, the biggest loss to one node failure first."""
        for i in self._order:
            yield self._p._figures(self._groups[i], self._gangs, self._zones_all)

    def domains(self, what: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """``what`` = ``node`` or ``zone``: what its failure would do, most harmful first."""
        for name, pairs in self._domains[what][:limit]:
            hurt = [_hurt(self._groups[i], pods) for i, pods in pairs]
            hurt.sort(key=lambda h: (-h["lossPercent"], h["workload"], h["group"]))
            yield {
                what: name,
                "groupsStopped": sum(1 for h in hurt if h["stops"]),
                "groupsHurt": len(hurt),
                "lossPercentSum": round(sum(h["lossPercent"] for h in hurt), 1),
                "pods": sum(h["pods"] for h in hurt),
                "groups": hurt,
            }

    def header(self) -> dict[str, Any]:
        return {
            "nodeFailureRatePer1000NodesPerDay": self.failure_rate,
            "nodesListed": self.node_count,
            "skipped": self.skipped,
        }

    def to_json(self) -> dict[str, Any]:
        """Everything at once (the JSON writer streams the same pieces instead)."""
        return {
            **self.header(),
            "groups": list(self.groups()),
            "ifNodeFails": list(self.domains("node")),
            "ifZoneFails": list(self.domains("zone")),
        }
