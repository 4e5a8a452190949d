#!/usr/bin/env python3
"""Placement benchmark: what a node failure costs each group, from where its pods run.

    python bench/placement_simulation.py PODS.json [--rate 19] [--days 30] [--json]
    python bench/placement_simulation.py --simulate [FILE_OR_DIR ...] [--nodes 12] [--gpus 8] [--zones 3] [--json]

PODS.json: ``{"pods": [Pod...], "nodes": [Node...]}`` as ``kubectl get pods,nodes -o json`` gives them (pods
with ``spec.nodeName``; nodes with their ``topology.kubernetes.io/zone`` label). Each pod is put in its group
the way the Pod backstop does (webhook.engine.workloads.pod_group: the operators' labels, or the controller's
labels for Deployment/StatefulSet pods), with the group's placement class. Per group it reports: class, pods,
nodes, zones, the share of the group one node failure takes, and the expected restarts per ``--days`` at
``--rate`` node failures per 1000 nodes per day (default 19, the published fleet figure in design.md):

- a gang (or a singleton) restarts whole on any of its nodes failing: restarts = nodes x rate/1000 x days;
  a gang is counted once over all its groups (Master + Workers are one gang);
- a replica or elastic group loses the share on the failed node and keeps running; it restarts whole only
  when all its pods are on one node. The report also gives its partial losses per ``--days``.

--simulate places workloads with a simple bin-packing scheduler (below) on ``--nodes`` nodes of ``--gpus``
GPUs in ``--zones`` zones, three ways: without spreadguard, with spreadguard's default policies (the engine's
patch, with a cluster view of those nodes), and with ``placement.spreadGangs: true`` (gangs spread over hosts,
the behaviour before placement classes). Inputs: the YAML files or directories given (default: examples/, each
workload alone on an empty cluster, then bench/placement_scenario.yaml, all its workloads together).

The scheduler is a model, not kube-scheduler: filters are GPU fit, nodeName, nodeSelector, required node
affinity, required pod affinity/anti-affinity of the incoming pod (the first pod of a group may satisfy its own
affinity term, as in kube-scheduler) and DoNotSchedule spread; the score is most-allocated GPUs (bin-packing;
``--scoring least``: least-allocated, kube-scheduler's default) plus preferred (anti-)affinity weights and a
ScheduleAnyway spread penalty; ties go to the first node. No
taints (team isolation is not what this measures), no symmetric anti-affinity of already placed pods.
Controllers are modelled by the labels they put on pods (the label contract in webhook/engine/workloads.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from webhook.engine import labels as labelsel  # noqa: E402
from webhook.engine import model, podspec, workloads  # noqa: E402
from webhook.engine.classes import NODE_FAILURES_PER_1000_PER_DAY  # noqa: E402
from webhook.engine.decide import evaluate  # noqa: E402
from webhook.engine.placement import ClusterView, classify, node_from_api  # noqa: E402
from webhook.engine.policy import Placement, Policy, load_policies  # noqa: E402
from webhook.engine.target import Context  # noqa: E402

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"
GPU = "nvidia.com/gpu"
MAX_PODS = 10_000  # bound on what one input may make the simulation place

# ------------------------------------------------------------------------------------------ analysis


@dataclass
class GroupReport:
    namespace: str
    group: str
    placement: str
    pods: int = 0
    nodes: set[str] = field(default_factory=set)
    zones: set[str] = field(default_factory=set)
    per_node: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    gang: str = ""  # the gang this group belongs to (gang class), to count restarts once per gang

    @property
    def share_lost(self) -> float:
        """Share of the group one node failure takes (the worst node); a gang loses all of it."""
        if self.placement in ("gang", "singleton") or not self.pods:
            return 1.0
        return max(self.per_node.values()) / self.pods


def _zone_of(nodes: dict[str, dict[str, str]], name: str) -> str:
    return nodes.get(name, {}).get(ZONE, "?")


def analyse(pods: list[dict[str, Any]], nodes: dict[str, dict[str, str]]) -> list[GroupReport]:
    """Groups of the bound pods (``spec.nodeName`` set), in first-seen order."""
    groups: dict[tuple[str, str], GroupReport] = {}
    for pod in pods[:MAX_PODS]:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            continue
        meta = pod.get("metadata") or {}
        ns = str(meta.get("namespace") or "")
        found = workloads.pod_group(pod)
        if found is None:
            key, name, cls, gang = f"pod/{meta.get('name')}", str(meta.get("name")), "singleton", ""
        else:
            key = json.dumps(found.selector, sort_keys=True)
            values = [str(v) for v in (found.selector.get("matchLabels") or {}).values()]
            name, cls = "/".join(dict.fromkeys(values)) or found.name, found.placement
            gang = json.dumps(found.gang_selector, sort_keys=True) if found.gang_selector else ""
            labels = meta.get("labels") or {}
            if labels.get(workloads.PLACEMENT_LABEL) in workloads.PLACEMENT_CLASSES:
                cls = labels[workloads.PLACEMENT_LABEL]
            if found.gang_keys and cls == "gang":  # one gang per value (LWS group-index): its own row
                suffix = "|".join(str(labels.get(k, "")) for k in found.gang_keys)
                gang, key, name = f"{gang}|{suffix}", f"{key}|{suffix}", f"{name}#{suffix}"
        report = groups.setdefault((ns, key), GroupReport(ns, name, cls, gang=gang if cls == "gang" else ""))
        report.pods += 1
        report.nodes.add(node)
        report.zones.add(_zone_of(nodes, node))
        report.per_node[node] += 1
    return list(groups.values())


def restarts(nodes: int, rate: float, days: float) -> float:
    return nodes * rate / 1000.0 * days


def summarize(reports: list[GroupReport], rate: float, days: float) -> list[dict[str, Any]]:
    """One row per group, with the gang's nodes (all its groups) for gang members."""
    gang_nodes: dict[str, set[str]] = defaultdict(set)
    gang_zones: dict[str, set[str]] = defaultdict(set)
    for r in reports:
        if r.gang:
            gang_nodes[r.gang] |= r.nodes
            gang_zones[r.gang] |= r.zones
    rows = []
    for r in reports:
        nodes = len(gang_nodes[r.gang]) if r.gang else len(r.nodes)
        whole = r.placement in ("gang", "singleton") or len(r.nodes) == 1
        rows.append(
            {
                "namespace": r.namespace,
                "group": r.group,
                "class": r.placement,
                "pods": r.pods,
                "nodes": len(r.nodes),
                "zones": len(r.zones),
                "gangNodes": nodes if r.gang else None,
                "gangZones": len(gang_zones[r.gang]) if r.gang else None,
                "shareLostPerNodeFailure": round(r.share_lost, 3),
                "restarts": round(restarts(nodes, rate, days), 2) if whole else 0.0,
                "partialLosses": 0.0 if whole else round(restarts(len(r.nodes), rate, days), 2),
            }
        )
    return rows


# ----------------------------------------------------------------------------------------- simulation


@dataclass
class SimNode:
    name: str
    labels: dict[str, str]
    gpus: int
    used: int = 0


def make_nodes(count: int, gpus: int, zones: int) -> list[SimNode]:
    per_zone = max(1, -(-count // zones))
    return [
        SimNode(
            f"node-{i + 1:02d}",
            {
                HOST: f"node-{i + 1:02d}",
                ZONE: f"zone-{chr(ord('a') + i // per_zone)}",
                "nvidia.com/gpu.present": "true",
            },
            gpus,
        )
        for i in range(count)
    ]


def view_of(nodes: list[SimNode]) -> ClusterView:
    api = [
        {"metadata": {"name": n.name, "labels": n.labels}, "status": {"allocatable": {GPU: str(n.gpus)}}} for n in nodes
    ]
    return ClusterView(synced=True, classes=classify(node_from_api(n) for n in api))


def _selects(term: dict[str, Any], pod_labels: dict[str, str], other: dict[str, str]) -> bool:
    """Whether a pod (anti-)affinity or spread term of a pod with ``pod_labels`` selects a pod with ``other``."""
    if not labelsel.matches(term.get("labelSelector"), other):
        return False
    return all(other.get(k) == pod_labels.get(k) for k in term.get("matchLabelKeys") or [] if k in pod_labels)


def _node_ok(spec: dict[str, Any], node: SimNode) -> bool:
    if spec.get("nodeName") and spec["nodeName"] != node.name:
        return False
    if any(node.labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    terms = podspec.required_node_terms(spec)
    if not terms:
        return True
    for term in terms:
        ok = True
        for e in term.get("matchExpressions") or []:
            value, op, values = node.labels.get(e.get("key")), e.get("operator"), e.get("values") or []
            if (
                (op == "In" and value not in values)
                or (op == "NotIn" and value in values)
                or (op == "Exists" and value is None)
                or (op == "DoesNotExist" and value is not None)
            ):
                ok = False
        if ok:
            return True
    return False


class Scheduler:
    def __init__(self, nodes: list[SimNode], scoring: str = "most") -> None:
        self.nodes = nodes
        self.scoring = scoring  # "most": GPU bin-packing (MostAllocated); "least": the default LeastAllocated
        self.placed: list[tuple[dict[str, str], str, SimNode]] = []  # (labels, namespace, node)

    def _in_domain(self, term: dict[str, Any], labels: dict[str, str], ns: str, node: SimNode) -> int:
        key = term.get("topologyKey", HOST)
        if key not in node.labels:
            return 0
        return sum(
            1
            for other, other_ns, where in self.placed
            if other_ns == ns and where.labels.get(key) == node.labels[key] and _selects(term, labels, other)
        )

    def _any(self, term: dict[str, Any], labels: dict[str, str], ns: str) -> bool:
        return any(other_ns == ns and _selects(term, labels, other) for other, other_ns, _w in self.placed)

    def place(self, pod: dict[str, Any]) -> SimNode | None:
        spec = pod["spec"]
        labels = pod["metadata"].get("labels") or {}
        ns = pod["metadata"].get("namespace", "")
        need = podspec.gpu_count(spec, [GPU])
        anti_req = podspec.pod_affinity_terms(spec, "podAntiAffinity", True)
        aff_req = podspec.pod_affinity_terms(spec, "podAffinity", True)
        pref = [
            (w.get("weight", 1), w["podAffinityTerm"], sign)
            for kind, sign in (("podAffinity", 1), ("podAntiAffinity", -1))
            for w in ((spec.get("affinity") or {}).get(kind) or {}).get(
                "preferredDuringSchedulingIgnoredDuringExecution"
            )
            or []
            if isinstance(w, dict) and isinstance(w.get("podAffinityTerm"), dict)
        ]
        spread = [c for c in spec.get("topologySpreadConstraints") or [] if isinstance(c, dict)]
        best, best_score = None, float("-inf")
        for node in self.nodes:
            if node.gpus - node.used < need or not _node_ok(spec, node):
                continue
            if any(self._in_domain(t, labels, ns, node) for t in anti_req):
                continue
            # required affinity: the domain must hold a matching pod, unless none exists and the pod matches itself
            if any(
                not self._in_domain(t, labels, ns, node)
                and (
                    self._any(t, labels, ns)
                    or not _selects(t, labels, labels)
                    or t.get("topologyKey") not in node.labels
                )
                for t in aff_req
            ):
                continue
            used = 100.0 * (node.used + need) / node.gpus if node.gpus else 0.0
            score = used if self.scoring == "most" else 100.0 - used
            for weight, term, sign in pref:
                score += sign * weight * min(self._in_domain(term, labels, ns, node), 1 if sign > 0 else 8)
            for c in spread:
                key = c.get("topologyKey")
                counts = {
                    n.labels.get(key): self._in_domain({**c, "topologyKey": key}, labels, ns, n)
                    for n in self.nodes
                    if key in n.labels
                }
                here = counts.get(node.labels.get(key), 0)
                if (
                    c.get("whenUnsatisfiable") == "DoNotSchedule"
                    and counts
                    and here + 1 - min(counts.values()) > c.get("maxSkew", 1)
                ):
                    break
                score -= 10 * here
            else:
                if score > best_score:
                    best, best_score = node, score
        if best is not None:
            best.used += need
            self.placed.append((labels, ns, best))
        return best


def pods_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods the workload's controller would create, with the labels the operators put on them."""
    workload = model.read(obj)
    if workload is None:
        return []
    ns = workload.namespace or "default"
    if workload.kind.kind == "Pod":
        return [{**obj, "metadata": {**obj["metadata"], "namespace": ns}}]
    out: list[dict[str, Any]] = []
    lws_size = workloads._int(workloads.get(obj, ("spec", "leaderWorkerTemplate", "size")), 1)
    for m in workload.groups:
        g = m.group
        for i in range(min(g.replicas or 0, MAX_PODS)):
            labels = dict((m.template.get("metadata") or {}).get("labels") or {})
            if not g.add_labels:  # the controller's labels (spreadguard adds add_labels to the template itself)
                labels.update(g.selector.get("matchLabels") or {})
            labels.update(g.gang_selector.get("matchLabels") or {})
            extra, owners = _controller_labels(workload, g, i, lws_size)
            labels.update(extra)
            meta = {"name": f"{workload.name}-{g.name}-{i}", "namespace": ns, "labels": labels}
            if owners:
                meta["ownerReferences"] = owners
            out.append({"metadata": meta, "spec": dict(m.template.get("spec") or {})})
            if len(out) >= MAX_PODS:
                return out
    return out


def _controller_labels(
    workload: model.Workload, g: workloads.Group, i: int, lws_size: int
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    kind = workload.kind.kind
    owner = [{"kind": kind, "name": workload.name, "controller": True}]
    if kind == "Deployment":
        return {"pod-template-hash": "h1"}, [{"kind": "ReplicaSet", "name": f"{workload.name}-h1", "controller": True}]
    if kind in ("StatefulSet", "ReplicaSet"):
        return {}, owner
    if kind == "CronJob":
        return {"batch.kubernetes.io/job-name": f"{workload.name}-29000000"}, []
    if kind == "RayJob":
        return {"ray.io/cluster": f"{workload.name}-raycluster-x1", "ray.io/group": g.name}, []
    if kind == "LeaderWorkerSet":
        per_group = max(lws_size - 1, 1)
        if g.role == "leader":
            return {workloads.LWS_NAME: workload.name, workloads.LWS_INDEX: "0", workloads.LWS_GROUP_INDEX: str(i)}, []
        return {
            workloads.LWS_NAME: workload.name,
            workloads.LWS_INDEX: str(i % per_group + 1),
            workloads.LWS_GROUP_INDEX: str(i // per_group),
        }, []
    return {}, []


def spread_gangs(policies: list[Policy]) -> list[Policy]:
    out = []
    for p in policies:
        spec = p.spec.model_copy(update={"placement": Placement(spreadGangs=True)})
        out.append(p.model_copy(update={"spec": spec}))
    return out


def simulate(objects: list[dict[str, Any]], args: argparse.Namespace, policies: list[Policy] | None) -> dict[str, Any]:
    """Place ``objects`` together on a fresh cluster; ``policies`` None means without spreadguard."""
    nodes = make_nodes(args.nodes, args.gpus, args.zones)
    sched = Scheduler(nodes, args.scoring)
    view = view_of(nodes)
    placed: list[dict[str, Any]] = []
    unplaced = 0
    for obj in objects:
        if policies is not None:
            obj = evaluate(obj, Context(namespace=obj["metadata"].get("namespace", ""), cluster=view), policies).mutated
        for pod in pods_of(obj):
            node = sched.place(pod)
            if node is None:
                unplaced += 1
                continue
            pod["spec"] = {**pod["spec"], "nodeName": node.name}
            placed.append(pod)
    node_labels = {n.name: n.labels for n in nodes}
    rows = summarize(analyse(placed, node_labels), args.rate, args.days)
    return {
        "groups": rows,
        "unplaced": unplaced,
        "freeWholeNodes": sum(1 for n in nodes if n.used == 0),
        "gangRestarts": round(sum(_restarts_once(rows)), 2),
    }


def _restarts_once(rows: list[dict[str, Any]]) -> list[float]:
    """Expected whole-group restarts, a gang counted once (its rows repeat the gang's figure)."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for r in rows:
        key = (r["namespace"], r["group"].split("/")[0], r["gangNodes"]) if r["gangNodes"] is not None else id(r)
        if key not in seen:
            seen.add(key)
            out.append(r["restarts"])
    return out


def load_objects(paths: list[Path]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, objects) per file; a directory gives one entry per file (each placed alone)."""
    out = []
    for path in paths:
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for f in files:
            docs = [d for d in yaml.safe_load_all(f.read_text()) if isinstance(d, dict)]
            out.append((str(f.relative_to(REPO) if f.is_relative_to(REPO) else f), docs))
    return out


# --------------------------------------------------------------------------------------------- output


def table(rows: list[dict[str, Any]]) -> str:
    head = f"  {'group':<34} {'class':<9} {'pods':>4} {'nodes':>5} {'zones':>5} {'lost/node':>9} {'restarts':>8}"
    lines = [head]
    for r in rows:
        gang = f" (gang: {r['gangNodes']} nodes, {r['gangZones']} zones)" if r["gangNodes"] is not None else ""
        lines.append(
            f"  {r['namespace'] + '/' + r['group']:<34.34} {r['class']:<9} {r['pods']:>4} {r['nodes']:>5} "
            f"{r['zones']:>5} {100 * r['shareLostPerNodeFailure']:>8.0f}% {r['restarts']:>8.2f}{gang}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("pods", nargs="?", help="JSON with pods (spec.nodeName) and nodes (zone labels)")
    ap.add_argument("--simulate", nargs="*", metavar="FILE_OR_DIR", help="place workloads with a bin-packing model")
    ap.add_argument("--rate", type=float, default=NODE_FAILURES_PER_1000_PER_DAY, help="node failures/1000 nodes/day")
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--nodes", type=int, default=12)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--zones", type=int, default=3)
    ap.add_argument(
        "--scoring", choices=("most", "least"), default="most", help="most: GPU bin-packing; least: kube default"
    )
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    if not 1 <= args.nodes <= 1000 or not 1 <= args.zones <= args.nodes or not 0 < args.gpus <= 64:
        ap.error("--nodes 1-1000, --zones 1..nodes, --gpus 1-64")

    if args.simulate is None:
        if not args.pods:
            ap.error("give PODS.json or --simulate")
        try:
            data = json.loads(Path(args.pods).read_text())
        except (OSError, ValueError) as exc:
            print(f"placement_simulation: {args.pods}: {exc}", file=sys.stderr)
            return 2
        pods = data.get("pods", data.get("items", [])) if isinstance(data, dict) else []
        nodes = {
            (n.get("metadata") or {}).get("name", ""): (n.get("metadata") or {}).get("labels") or {}
            for n in (data.get("nodes") or [] if isinstance(data, dict) else [])
            if isinstance(n, dict)
        }
        rows = summarize(analyse([p for p in pods if isinstance(p, dict)], nodes), args.rate, args.days)
        print(json.dumps(rows, indent=2) if args.json else table(rows))
        return 0

    paths = [Path(p) for p in args.simulate] or [REPO / "examples", REPO / "bench" / "placement_scenario.yaml"]
    policies = load_policies(REPO / "policies")
    configs = {"without": None, "spreadguard": policies, "spreadGangs": spread_gangs(policies)}
    results = {}
    for label, objects in load_objects(paths):
        results[label] = {name: simulate(objects, args, pol) for name, pol in configs.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"{args.nodes} nodes x {args.gpus} GPUs in {args.zones} zones, {args.scoring}-allocated scoring; "
        f"{args.rate:g} node failures per 1000 nodes "
        f"per day; restarts per {args.days:g} days (gang: its nodes x rate; replicas: only if all on one node)"
    )
    for label, by_config in results.items():
        print(f"\n== {label}")
        for name, result in by_config.items():
            print(
                f" -- {name}: unplaced pods {result['unplaced']}, whole free nodes {result['freeWholeNodes']}, "
                f"whole-group restarts per {args.days:g} days {result['gangRestarts']}"
            )
            print(table(result["groups"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
